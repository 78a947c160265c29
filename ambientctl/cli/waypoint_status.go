package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func newWaypointStatus(env *Env, f *waypointFlags) *cobra.Command {
	var all, wait bool
	var timeout time.Duration
	var format string
	c := &cobra.Command{
		Use:   "status",
		Short: "Show whether waypoints are programmed (their Deployment ready), and why not",
		Long: `status prints each waypoint's Programmed condition as istiod-lite set it. With --name
it shows that waypoint only; by default it waits (--wait) until they are programmed.`,
		Example: `  ambientctl waypoint status -n bookinfo
  ambientctl waypoint status -A --wait=false -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := env.clients(ctx)
			if err != nil {
				return err
			}
			ns := ""
			if !all {
				ns = f.namespaceOr(c)
			}
			infos, err := waypointStatuses(ctx, c, ns, f, cmd.Flags().Changed("name"))
			if err != nil {
				return err
			}
			if wait {
				for i, w := range infos {
					if w.Programmed == "True" {
						continue
					}
					got, err := waitProgrammed(ctx, env, c, w.Namespace, w.Name, timeout)
					if err != nil {
						return err
					}
					got.TrafficType, got.NamespaceEnrolled = w.TrafficType, w.NamespaceEnrolled
					infos[i] = got
				}
			}
			if format != formatTable {
				return printStructured(env.Stdout, format, infos)
			}
			headers := []string{"NAME", "PROGRAMMED", "REASON", "MESSAGE"}
			if all {
				headers = append([]string{"NAMESPACE"}, headers...)
			}
			t := newTable(env.Stdout, headers...)
			for _, w := range infos {
				cells := []string{w.Name, w.Programmed, w.Reason, w.Message}
				if all {
					cells = append([]string{w.Namespace}, cells...)
				}
				t.row(cells...)
			}
			return t.flush()
		},
	}
	c.Flags().BoolVarP(&all, "all-namespaces", "A", false, "the waypoints of every namespace")
	c.Flags().BoolVarP(&wait, "wait", "w", true, "wait until every waypoint shown is programmed")
	c.Flags().DurationVar(&timeout, "waypoint-timeout", 90*time.Second, "how long --wait waits for each waypoint")
	addOutputFlag(c, &format)
	return c
}

// waypointStatuses lists the waypoints status shows: the one --name names
// (when given), else all of ns.
func waypointStatuses(ctx context.Context, c *Clients, ns string, f *waypointFlags, named bool) ([]waypointInfo, error) {
	infos, _, err := listWaypoints(ctx, c, ns)
	if err != nil {
		return nil, err
	}
	if !named {
		if len(infos) == 0 {
			where := "in namespace " + ns
			if ns == "" {
				where = "in any namespace"
			}
			return nil, fmt.Errorf("no waypoints found %s (ambientctl waypoint apply)", where)
		}
		return infos, nil
	}
	for _, w := range infos {
		if w.Name == f.name && (ns == "" || w.Namespace == ns) {
			return []waypointInfo{w}, nil
		}
	}
	if _, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, f.name, metav1.GetOptions{}); err == nil {
		return nil, fmt.Errorf("gateway %s/%s is not a waypoint (its class is not %s)", ns, f.name, waypointGatewayClass)
	} else if !apierrors.IsNotFound(err) {
		return nil, err
	}
	return nil, fmt.Errorf("waypoint %s/%s not found", ns, f.name)
}
