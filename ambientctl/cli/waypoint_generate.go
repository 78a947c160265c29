package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

func newWaypointGenerate(env *Env, f *waypointFlags) *cobra.Command {
	var trafficType string
	c := &cobra.Command{
		Use:   "generate",
		Short: "Print the Gateway of a waypoint as YAML (nothing is applied; no cluster needed)",
		Example: `  ambientctl waypoint generate -n bookinfo
  ambientctl waypoint generate --name reviews-waypoint --for workload | kubectl apply -f -`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.validateName(cmd); err != nil {
				return err
			}
			if err := validateTrafficType(cmd, trafficType); err != nil {
				return err
			}
			// Without -n the Gateway names no namespace: kubectl apply puts
			// it in the current one.
			gw := waypointGateway(f.name, f.namespace, trafficType)
			if f.namespace == "" {
				gw.Namespace = nil
			}
			b, err := json.Marshal(gw)
			if err != nil {
				return err
			}
			y, err := yaml.JSONToYAML(b)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(env.Stdout, string(y))
			return err
		},
	}
	c.Flags().StringVar(&trafficType, "for", defaultWaypointFor, "traffic the waypoint handles: service, workload, all or none (label istio.io/waypoint-for)")
	return c
}
