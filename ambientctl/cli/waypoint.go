package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapply "sigs.k8s.io/gateway-api/applyconfiguration/apis/v1"
)

// The waypoint Gateway, as DESIGN.md fixes it and Istio's istioctl makes it.
const (
	defaultWaypointName = "waypoint"
	waypointListener    = "mesh"
	waypointPort        = 15008
	waypointProtocol    = "HBONE"
	defaultWaypointFor  = "service"
)

// waypointTrafficTypes are the values of istio.io/waypoint-for.
var waypointTrafficTypes = []string{"service", "workload", "all", "none"}

// waypointFlags are shared by the waypoint subcommands.
type waypointFlags struct {
	namespace string
	name      string
}

func newWaypoint(env *Env) *cobra.Command {
	var f waypointFlags
	c := &cobra.Command{
		Use:   "waypoint",
		Short: "Manage waypoints: the per-namespace L7 proxies (Gateways of class istio-waypoint)",
		Long: `A waypoint is a Gateway of class istio-waypoint with one HBONE listener on 15008;
istiod-lite runs a Deployment for it. A namespace (or a Service) labelled
istio.io/use-waypoint=<name> sends its traffic through it.`,
		Example: `  ambientctl waypoint apply -n bookinfo --enroll-namespace --wait
  ambientctl waypoint list -A
  ambientctl waypoint status -n bookinfo
  ambientctl waypoint delete -n bookinfo waypoint`,
	}
	asGroup(c)
	c.PersistentFlags().StringVarP(&f.namespace, "namespace", "n", "", "the waypoint's namespace (default: the kubeconfig context's, else default)")
	c.PersistentFlags().StringVar(&f.name, "name", defaultWaypointName, "the waypoint's name")
	c.AddCommand(newWaypointGenerate(env, &f), newWaypointApply(env, &f), newWaypointList(env, &f),
		newWaypointDelete(env, &f), newWaypointStatus(env, &f))
	return c
}

// namespaceOr is the -n namespace, or the context's, or "default".
func (f *waypointFlags) namespaceOr(c *Clients) string {
	switch {
	case f.namespace != "":
		return f.namespace
	case c != nil && c.Namespace != "":
		return c.Namespace
	}
	return "default"
}

// validateName refuses Istio's reserved name "none" (istio.io/use-waypoint=none
// means no waypoint).
func (f *waypointFlags) validateName(cmd *cobra.Command) error {
	if f.name == "" {
		f.name = defaultWaypointName
	}
	if f.name == "none" {
		return usage(cmd, errors.New(`--name none: "none" is reserved (istio.io/use-waypoint=none means no waypoint)`))
	}
	return nil
}

func validateTrafficType(cmd *cobra.Command, t string) error {
	if !slices.Contains(waypointTrafficTypes, t) {
		return usage(cmd, fmt.Errorf("--for %q: want one of %s", t, strings.Join(waypointTrafficTypes, ", ")))
	}
	return nil
}

// waypointGateway is the Gateway of a waypoint: class istio-waypoint, one
// HBONE listener "mesh" on 15008, istio.io/waypoint-for set.
func waypointGateway(name, namespace, trafficType string) *gwapply.GatewayApplyConfiguration {
	return gwapply.Gateway(name, namespace).
		WithLabels(map[string]string{labelWaypointFor: trafficType}).
		WithSpec(gwapply.GatewaySpec().
			WithGatewayClassName(waypointGatewayClass).
			WithListeners(gwapply.Listener().
				WithName(waypointListener).WithPort(waypointPort).WithProtocol(waypointProtocol)))
}

// setNamespaceLabel sets (value != nil) or removes one label of a namespace.
func setNamespaceLabel(ctx context.Context, c *Clients, ns, label string, value *string) error {
	var v any
	if value != nil {
		v = *value
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{label: v}}})
	if err != nil {
		return err
	}
	_, err = c.Kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager})
	return err
}

// waypointInfo is a waypoint as list and status print it.
type waypointInfo struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	TrafficType string `json:"trafficType"`
	Programmed  string `json:"programmed"`
	Reason      string `json:"reason,omitempty"`
	Message     string `json:"message,omitempty"`
	Address     string `json:"address,omitempty"`
	// UsedBy says whether the waypoint's namespace sends its traffic
	// through it (istio.io/use-waypoint on the namespace).
	NamespaceEnrolled bool `json:"namespaceEnrolled"`
}

func newWaypointInfo(gw *gatewayv1.Gateway, enrolled bool) waypointInfo {
	w := waypointInfo{Namespace: gw.Namespace, Name: gw.Name, TrafficType: gw.Labels[labelWaypointFor], Programmed: "Unknown", NamespaceEnrolled: enrolled}
	if w.TrafficType == "" {
		w.TrafficType = defaultWaypointFor
	}
	for _, c := range gw.Status.Conditions {
		if c.Type == string(gatewayv1.GatewayConditionProgrammed) {
			w.Programmed, w.Reason, w.Message = string(c.Status), c.Reason, c.Message
		}
	}
	var addrs []string
	for _, a := range gw.Status.Addresses {
		addrs = append(addrs, a.Value)
	}
	w.Address = strings.Join(addrs, ",")
	return w
}

// listWaypoints lists the Gateways of class istio-waypoint in ns ("" =
// all), sorted, with whether their namespace uses them.
func listWaypoints(ctx context.Context, c *Clients, ns string) ([]waypointInfo, []gatewayv1.Gateway, error) {
	l, err := c.Gateway.GatewayV1().Gateways(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, errNoGatewayAPI
		}
		return nil, nil, fmt.Errorf("list Gateways: %w", err)
	}
	var gws []gatewayv1.Gateway
	for _, gw := range l.Items {
		if string(gw.Spec.GatewayClassName) == waypointGatewayClass {
			gws = append(gws, gw)
		}
	}
	slices.SortFunc(gws, func(a, b gatewayv1.Gateway) int {
		return cmpOr(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	uses := map[string]string{}
	var infos []waypointInfo
	for i := range gws {
		u, ok := uses[gws[i].Namespace]
		if !ok {
			if n, err := c.Kube.CoreV1().Namespaces().Get(ctx, gws[i].Namespace, metav1.GetOptions{}); err == nil {
				u = n.Labels[labelUseWaypoint]
			}
			uses[gws[i].Namespace] = u
		}
		infos = append(infos, newWaypointInfo(&gws[i], u == gws[i].Name))
	}
	return infos, gws, nil
}

// errNoGatewayAPI is a cluster without the Gateway API CRDs.
var errNoGatewayAPI = errors.New("the Gateway API CRDs are not installed: run ambientctl install (or ambientctl check)")
