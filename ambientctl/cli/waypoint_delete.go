package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func newWaypointDelete(env *Env, f *waypointFlags) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "delete [NAME...]",
		Short: "Delete waypoints by name (or --all of the namespace)",
		Long: `delete removes the waypoints' Gateways (istiod-lite's Deployment, Service and
ServiceAccount go with them). If the namespace sends its traffic through a deleted waypoint
(istio.io/use-waypoint=<name>), that label is removed too.`,
		Example: `  ambientctl waypoint delete -n bookinfo waypoint
  ambientctl waypoint delete -n bookinfo --all`,
		RunE: func(cmd *cobra.Command, names []string) error {
			switch {
			case all && len(names) > 0:
				return usage(cmd, errors.New("give waypoint names or --all, not both"))
			case !all && len(names) == 0:
				return usage(cmd, errors.New("give the names of the waypoints to delete, or --all"))
			}
			ctx := cmd.Context()
			c, err := env.clients(ctx)
			if err != nil {
				return err
			}
			ns := f.namespaceOr(c)
			if all {
				infos, _, err := listWaypoints(ctx, c, ns)
				if err != nil {
					return err
				}
				if len(infos) == 0 {
					fmt.Fprintf(env.Stdout, "No waypoints found in namespace %s.\n", ns)
					return nil
				}
				for _, w := range infos {
					names = append(names, w.Name)
				}
			}
			nsObj, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("namespace %s: %w", ns, err)
			}
			var missing []string
			for _, name := range names {
				err := c.Gateway.GatewayV1().Gateways(ns).Delete(ctx, name, metav1.DeleteOptions{})
				switch {
				case apierrors.IsNotFound(err):
					fmt.Fprintf(env.Stdout, "✖ waypoint %s/%s not found\n", ns, name)
					missing = append(missing, name)
					continue
				case err != nil:
					return fmt.Errorf("delete waypoint %s/%s: %w", ns, name, err)
				}
				fmt.Fprintf(env.Stdout, "✔ waypoint %s/%s deleted\n", ns, name)
				if nsObj.Labels[labelUseWaypoint] == name {
					if err := setNamespaceLabel(ctx, c, ns, labelUseWaypoint, nil); err != nil {
						return fmt.Errorf("unlabel namespace %s: %w", ns, err)
					}
					fmt.Fprintf(env.Stdout, "✔ namespace %s no longer uses it (label %s removed)\n", ns, labelUseWaypoint)
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("%d waypoint(s) not found in namespace %s (ambientctl waypoint list -n %s)", len(missing), ns, ns)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&all, "all", false, "delete every waypoint of the namespace")
	return c
}
