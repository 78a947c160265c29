// Command l7bench-waypoint is the waypoint process l7bench starts: the
// waypoint's own main with the bench's readiness line and profiling
// commands around it (package waypointrole). It is a binary of its own so
// that its memory is the waypoint's, not the benchmark's.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/bench/l7bench/waypointrole"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := waypointrole.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, waypointrole.ErrUsage):
		fmt.Fprintln(os.Stderr, "l7bench-waypoint:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "l7bench-waypoint:", err)
		os.Exit(1)
	}
}
