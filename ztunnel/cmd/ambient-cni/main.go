// Command ambient-cni is Ambient Lite's chained CNI plugin: the container
// runtime runs it after the node's network plugin, and it has the node agent
// capture enrolled pods before their containers start. See package
// github.com/ambientlite/mesh/ztunnel/cniplugin.
package main

import (
	"context"
	"os"

	"github.com/ambientlite/mesh/ztunnel/cniplugin"
)

func main() {
	if err := cniplugin.Run(context.Background(), os.Environ(), os.Stdin, os.Stdout, os.Stderr); err != nil {
		os.Exit(1)
	}
}
