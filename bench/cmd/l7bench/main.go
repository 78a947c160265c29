// Command l7bench is the waypoint (L7) benchmark that make bench runs after
// l4bench: the waypoint between two ztunnels against the L4 path, direct
// and HAProxy doing the same weighted split, in network namespaces on this
// machine. See bench/README.md and package
// github.com/ambientlite/mesh/bench/l7bench.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/bench/l7bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := l7bench.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, l7bench.ErrUsage):
		fmt.Fprintln(os.Stderr, "l7bench:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "l7bench:", err)
		os.Exit(1)
	}
}
