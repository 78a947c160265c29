// Command l4bench is the ztunnel data-plane benchmark that make bench runs:
// ztunnel against direct TCP, HAProxy and stunnel, in network namespaces on
// this machine. See bench/README.md and package
// github.com/ambientlite/mesh/bench/l4bench.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/bench/l4bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := l4bench.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, l4bench.ErrUsage):
		fmt.Fprintln(os.Stderr, "l4bench:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "l4bench:", err)
		os.Exit(1)
	}
}
