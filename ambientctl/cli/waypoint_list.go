package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newWaypointList(env *Env, f *waypointFlags) *cobra.Command {
	var all bool
	var format string
	c := &cobra.Command{
		Use:   "list",
		Short: "List the waypoints of a namespace (-A: of all namespaces)",
		Example: `  ambientctl waypoint list -n bookinfo
  ambientctl waypoint list -A -o yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := env.clients(cmd.Context())
			if err != nil {
				return err
			}
			ns := ""
			if !all {
				ns = f.namespaceOr(c)
			}
			infos, _, err := listWaypoints(cmd.Context(), c, ns)
			if err != nil {
				return err
			}
			if format != formatTable {
				if infos == nil {
					infos = []waypointInfo{}
				}
				return printStructured(env.Stdout, format, infos)
			}
			if len(infos) == 0 {
				if all {
					fmt.Fprintln(env.Stdout, "No waypoints found.")
				} else {
					fmt.Fprintf(env.Stdout, "No waypoints found in namespace %s.\n", ns)
				}
				return nil
			}
			headers := []string{"NAME", "TRAFFIC TYPE", "PROGRAMMED", "ADDRESS", "NAMESPACE ENROLLED"}
			if all {
				headers = append([]string{"NAMESPACE"}, headers...)
			}
			t := newTable(env.Stdout, headers...)
			for _, w := range infos {
				cells := []string{w.Name, w.TrafficType, w.Programmed, w.Address, yesNo(w.NamespaceEnrolled)}
				if all {
					cells = append([]string{w.Namespace}, cells...)
				}
				t.row(cells...)
			}
			return t.flush()
		},
	}
	c.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the waypoints of every namespace")
	addOutputFlag(c, &format)
	return c
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
