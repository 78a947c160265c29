// Command meshecho is the echo server and load client used by the e2e tests
// and the demo; see e2e/apps/meshecho for what it serves and prints.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/e2e/apps/meshecho"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := meshecho.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, meshecho.ErrUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "meshecho:", err)
		os.Exit(1)
	}
}
