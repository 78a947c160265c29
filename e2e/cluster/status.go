package cluster

import (
	"context"
	"fmt"
	"io"
)

// Status prints which components run and whether the cluster serves; it
// returns an error when the cluster is not healthy.
func Status(ctx context.Context, cfg Config, out io.Writer) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	c = c.withRecordedTools()
	for _, name := range components {
		if p, ok := recorded(c, name); ok {
			fmt.Fprintf(out, "%-24s running (pid %d)\n", name, p.pid)
		} else {
			fmt.Fprintf(out, "%-24s not running\n", name)
		}
	}
	if err := healthy(ctx, c); err != nil {
		if left, lerr := Leftovers(ctx, c); lerr == nil && len(left) > 0 {
			fmt.Fprintln(out, "left on the host (`make cluster-down` removes it, `make cluster-up` starts afresh):")
			for _, l := range left {
				fmt.Fprintln(out, "  "+l)
			}
		}
		return fmt.Errorf("cluster is not healthy: %w", err)
	}
	fmt.Fprintf(out, "cluster is healthy\nkubeconfig: %s\n", c.KubeconfigPath())
	return nil
}
