// Command istiod-lite is Ambient Lite's control plane. See istiod-lite/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambientlite/mesh/istiod-lite/controlplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := controlplane.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, controlplane.ErrUsage):
		fmt.Fprintln(os.Stderr, "istiod-lite:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "istiod-lite:", err)
		os.Exit(1)
	}
}
