// Command waypoint is Ambient Lite's per-namespace waypoint proxy. See
// waypoint/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/waypoint/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := proxy.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, proxy.ErrUsage):
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(1)
	}
}
