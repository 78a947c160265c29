package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type waypointApplyOptions struct {
	trafficType string
	enroll      bool
	overwrite   bool
	wait        bool
	timeout     time.Duration
}

func newWaypointApply(env *Env, f *waypointFlags) *cobra.Command {
	var o waypointApplyOptions
	c := &cobra.Command{
		Use:   "apply",
		Short: "Create or update a waypoint (server-side apply of its Gateway)",
		Long: `apply creates the waypoint's Gateway (class istio-waypoint, listener mesh/15008/HBONE,
istio.io/waypoint-for from --for); istiod-lite runs a Deployment for it. --enroll-namespace
then labels the namespace istio.io/use-waypoint=<name> so its traffic goes through it.
A namespace that is not in the mesh gets a warning: its pods' traffic never reaches a waypoint.`,
		Example: `  ambientctl waypoint apply -n bookinfo
  ambientctl waypoint apply -n bookinfo --enroll-namespace --wait
  ambientctl waypoint apply -n bookinfo --name reviews-wp --for service`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.validateName(cmd); err != nil {
				return err
			}
			if err := validateTrafficType(cmd, o.trafficType); err != nil {
				return err
			}
			return runWaypointApply(cmd.Context(), env, f, o)
		},
	}
	c.Flags().StringVar(&o.trafficType, "for", defaultWaypointFor, "traffic the waypoint handles: service, workload, all or none (label istio.io/waypoint-for)")
	c.Flags().BoolVar(&o.enroll, "enroll-namespace", false, "label the namespace istio.io/use-waypoint=<name> once the waypoint is applied")
	c.Flags().BoolVar(&o.overwrite, "overwrite", false, "with --enroll-namespace: replace another waypoint the namespace uses")
	c.Flags().BoolVarP(&o.wait, "wait", "w", false, "wait until the waypoint is programmed (its Deployment ready)")
	c.Flags().DurationVar(&o.timeout, "waypoint-timeout", 90*time.Second, "how long --wait waits")
	return c
}

func runWaypointApply(ctx context.Context, env *Env, f *waypointFlags, o waypointApplyOptions) error {
	c, err := env.clients(ctx)
	if err != nil {
		return err
	}
	ns := f.namespaceOr(c)
	nsObj, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %s not found", ns)
	}
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	if cur := nsObj.Labels[labelUseWaypoint]; o.enroll && cur != "" && cur != f.name && !o.overwrite {
		return fmt.Errorf("namespace %s already uses waypoint %q (%s=%s): pass --overwrite to switch it to %q",
			ns, cur, labelUseWaypoint, cur, f.name)
	}
	if nsObj.Labels[labelDataplaneMode] != dataplaneModeAmbient {
		fmt.Fprintf(env.Stderr, "‼ warning: namespace %s is not in the mesh (no %s=%s): its pods' traffic does not reach a waypoint. Enrol it with:\n"+
			"    kubectl label namespace %s %s=%s\n", ns, labelDataplaneMode, dataplaneModeAmbient, ns, labelDataplaneMode, dataplaneModeAmbient)
	}
	if _, err := c.Gateway.GatewayV1().GatewayClasses().Get(ctx, waypointGatewayClass, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, lerr := c.Gateway.GatewayV1().Gateways(ns).List(ctx, metav1.ListOptions{Limit: 1}); apierrors.IsNotFound(lerr) {
			return errNoGatewayAPI
		}
		fmt.Fprintf(env.Stderr, "‼ warning: GatewayClass %s not found: nothing will run the waypoint until Ambient Lite is installed (ambientctl install)\n", waypointGatewayClass)
	}
	_, err = c.Gateway.GatewayV1().Gateways(ns).Apply(ctx, waypointGateway(f.name, ns, o.trafficType),
		metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if apierrors.IsNotFound(err) {
		return errNoGatewayAPI
	}
	if err != nil {
		return fmt.Errorf("apply waypoint %s/%s: %w", ns, f.name, err)
	}
	fmt.Fprintf(env.Stdout, "✔ waypoint %s/%s applied\n", ns, f.name)
	if o.wait {
		info, err := waitProgrammed(ctx, env, c, ns, f.name, o.timeout)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "✔ waypoint %s/%s is ready (address %s)\n", ns, f.name, info.Address)
	}
	if o.enroll && nsObj.Labels[labelUseWaypoint] != f.name {
		name := f.name
		if err := setNamespaceLabel(ctx, c, ns, labelUseWaypoint, &name); err != nil {
			return fmt.Errorf("label namespace %s: %w", ns, err)
		}
		fmt.Fprintf(env.Stdout, "✔ namespace %s labelled %s=%s\n", ns, labelUseWaypoint, f.name)
	}
	return nil
}

// waitProgrammed waits until Gateway ns/name has Programmed=True.
func waitProgrammed(ctx context.Context, env *Env, c *Clients, ns, name string, timeout time.Duration) (waypointInfo, error) {
	var info waypointInfo
	_, err := env.waitFor(ctx, timeout, "waypoint "+ns+"/"+name, func(ctx context.Context) (bool, string, error) {
		gw, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		info = newWaypointInfo(gw, false)
		status := "Programmed=" + info.Programmed
		if info.Reason != "" {
			status += " " + info.Reason
		}
		if info.Message != "" {
			status += ": " + info.Message
		}
		return info.Programmed == "True", status, nil
	})
	return info, err
}
