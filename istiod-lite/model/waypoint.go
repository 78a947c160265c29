package model

import (
	"fmt"
	"net/netip"

	"istio.io/istio/pkg/workloadapi"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// trafficKind is what a waypoint is asked to carry: traffic addressed to a
// service, or to a workload directly.
type trafficKind string

const (
	serviceTraffic  trafficKind = waypointForService
	workloadTraffic trafficKind = waypointForWorkload
)

// useWaypoint reads istio.io/use-waypoint (and -namespace) from labels.
// none reports the reserved value "none", an explicit opt-out.
func useWaypoint(lbls map[string]string, defaultNamespace string) (ref *nsName, none bool) {
	v, ok := lbls[LabelUseWaypoint]
	if !ok {
		return nil, false
	}
	if v == waypointForNone {
		return nil, true
	}
	ns := defaultNamespace
	if o, ok := lbls[LabelUseWaypointNamespace]; ok {
		ns = o
	}
	return &nsName{ns, v}, false
}

// waypointFor resolves the waypoint of an object (a Service or a Pod) the way
// Istio's fetchWaypointForTarget does: the object's own label wins (and
// "none" opts out); otherwise its namespace's label applies. A label naming
// a waypoint that cannot be used is a Problem on kind/meta and no waypoint.
func (b *builder) waypointFor(kind string, meta metav1.ObjectMeta, traffic trafficKind) *workloadapi.GatewayAddress {
	ref, none := useWaypoint(meta.Labels, meta.Namespace)
	if none {
		return nil
	}
	own := ref != nil
	if !own {
		ns := b.namespaces[meta.Namespace]
		if ns == nil {
			return nil
		}
		// A namespace labelled "none" means no waypoint, like no label.
		ref, _ = useWaypoint(ns.Labels, meta.Namespace)
		if ref == nil {
			return nil
		}
	}
	gw, reason := b.waypointGateway(*ref, meta.Namespace)
	if gw == nil {
		b.problem(kind, meta.Namespace, meta.Name, reason)
		return nil
	}
	tt := gatewayTrafficType(gw)
	if tt != waypointForAll && tt != string(traffic) {
		// A namespace-wide waypoint that carries only service traffic is not
		// an error for a pod: it simply has no workload waypoint (Istio's
		// fetchWaypointForWorkload). Any other mismatch is reported.
		if traffic == workloadTraffic && !own {
			return nil
		}
		b.problem(kind, meta.Namespace, meta.Name, fmt.Sprintf(
			"waypoint %s/%s is for %q traffic (label %s), not %s traffic", gw.Namespace, gw.Name, tt, LabelWaypointFor, traffic))
		return nil
	}
	addr := b.waypointAddress(gw)
	if addr == nil {
		b.problem(kind, meta.Namespace, meta.Name, fmt.Sprintf(
			"waypoint %s/%s has no address yet: no status address and no Service %s/%s with a cluster IP",
			gw.Namespace, gw.Name, gw.Namespace, gw.Name))
	}
	return addr
}

// waypointGateway finds the Gateway ref names and checks it may serve an
// object in fromNamespace. On failure it returns the reason.
func (b *builder) waypointGateway(ref nsName, fromNamespace string) (*gatewayv1.Gateway, string) {
	gw := b.gateways[ref]
	if gw == nil {
		return nil, fmt.Sprintf("%s names waypoint %s/%s, but no such Gateway exists", LabelUseWaypoint, ref.namespace, ref.name)
	}
	if gw.Spec.GatewayClassName != WaypointGatewayClass {
		return nil, fmt.Sprintf("%s names Gateway %s/%s of class %q; a waypoint must be of class %q",
			LabelUseWaypoint, ref.namespace, ref.name, gw.Spec.GatewayClassName, WaypointGatewayClass)
	}
	if !b.allowsAttachment(gw, fromNamespace) {
		return nil, fmt.Sprintf("waypoint %s/%s does not allow attachment from namespace %q (listener allowedRoutes)",
			ref.namespace, ref.name, fromNamespace)
	}
	return gw, ""
}

// gatewayTrafficType is the Gateway's istio.io/waypoint-for, default
// "service". Istio also consults the GatewayClass label; GatewayClasses are
// not in the Snapshot, and ours carries no such label.
func gatewayTrafficType(gw *gatewayv1.Gateway) string {
	if tt, ok := gw.Labels[LabelWaypointFor]; ok {
		return tt
	}
	return waypointForService
}

// allowsAttachment applies the allowedRoutes.namespaces of the Gateway's HBONE
// listener on port 15008 (Istio's makeAllowedRoutes); without one, only the
// Gateway's own namespace may use it.
func (b *builder) allowsAttachment(gw *gatewayv1.Gateway, namespace string) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	for _, l := range gw.Spec.Listeners {
		if l.Protocol == "HBONE" && l.Port == gatewayv1.PortNumber(hboneMTLSPort) {
			if l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil {
				if l.AllowedRoutes.Namespaces.From != nil {
					from = *l.AllowedRoutes.Namespaces.From
				}
				sel = l.AllowedRoutes.Namespaces.Selector
			}
			break
		}
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		var nsLabels map[string]string
		if ns := b.namespaces[namespace]; ns != nil {
			nsLabels = ns.Labels
		}
		return s.Matches(labels.Set(nsLabels))
	default:
		return gw.Namespace == namespace
	}
}

// waypointAddress is where ztunnel sends HBONE for a waypoint. Like Istio's
// getGatewayAddress it prefers the Gateway's status addresses (a hostname,
// then an IP); before the waypoint controller has written status it falls
// back to the cluster IP of the waypoint's own Service (named after the
// Gateway). The HBONE port is always 15008.
func (b *builder) waypointAddress(gw *gatewayv1.Gateway) *workloadapi.GatewayAddress {
	for _, a := range gw.Status.Addresses {
		if a.Type != nil && *a.Type == gatewayv1.HostnameAddressType {
			return &workloadapi.GatewayAddress{
				Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{
					Namespace: gw.Namespace, Hostname: a.Value,
				}},
				HboneMtlsPort: hboneMTLSPort,
			}
		}
	}
	var ips []string
	for _, a := range gw.Status.Addresses {
		if a.Type != nil && *a.Type == gatewayv1.IPAddressType {
			ips = append(ips, a.Value)
		}
	}
	if len(ips) == 0 {
		if svc := b.svcByName[nsName{gw.Namespace, gw.Name}]; svc != nil {
			ips = ServiceVIPs(svc)
		}
	}
	for _, ip := range ips {
		if addr, err := netip.ParseAddr(ip); err == nil {
			return &workloadapi.GatewayAddress{
				Destination:   &workloadapi.GatewayAddress_Address{Address: b.networkAddress(addr)},
				HboneMtlsPort: hboneMTLSPort,
			}
		}
	}
	return nil
}

func (b *builder) networkAddress(ip netip.Addr) *workloadapi.NetworkAddress {
	return &workloadapi.NetworkAddress{Network: b.cfg.Network, Address: ip.AsSlice()}
}

// isWaypointService reports whether svc is a waypoint's own Service, which
// never has a waypoint itself (Istio's fetchWaypointForService).
func (b *builder) isWaypointService(meta metav1.ObjectMeta) bool {
	if meta.Labels[LabelGatewayManaged] == ManagedByMeshController {
		return true
	}
	gw := b.gateways[nsName{meta.Namespace, meta.Name}]
	return gw != nil && gw.Spec.GatewayClassName == WaypointGatewayClass
}

// isWaypointPod reports whether a pod is an instance of a waypoint Gateway in
// its namespace; such pods get no waypoint (Istio's fetchWaypointForInstance).
func (b *builder) isWaypointPod(meta metav1.ObjectMeta) bool {
	name := meta.Labels[LabelGatewayName]
	if name == "" {
		return false
	}
	gw := b.gateways[nsName{meta.Namespace, name}]
	return gw != nil && gw.Spec.GatewayClassName == WaypointGatewayClass
}
