// Command ztunnel is Ambient Lite's per-node data plane. See ztunnel/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/ztunnel/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := daemon.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, daemon.ErrUsage):
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}
