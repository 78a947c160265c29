package route

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"

	"github.com/ambientlite/mesh/istiod-lite/model"
)

// reasonConflicted is GEP-1294's Accepted reason for a route that lost to a
// route of another kind on the same Service port (not yet a constant in
// the Go API).
const reasonConflicted gatewayv1.RouteConditionReason = "Conflicted"

// parent is one Service parentRef of a route.
type parent struct {
	ref       gatewayv1.ParentReference
	namespace string // the Service's namespace (parentRef namespace or the route's)
	name      string
	svc       *corev1.Service // nil: not found
	// refused, if set, is why the route did not attach to this parent at
	// all (Accepted=False).
	refused *condErr
	atts    []*attachment
}

// attachment is a route attached to one port of a parent Service.
type attachment struct {
	route  *route
	parent *parent
	port   corev1.ServicePort
	proto  routeapi.Protocol
	// group is the client namespace of a consumer route, "" for a producer
	// route.
	group string
	// duplicate: an earlier parentRef of the same route already attached it
	// to this port; it adds nothing.
	duplicate bool
	// conflicted: a GRPCRoute applies to the same port and clients, so this
	// HTTPRoute does not (GEP-1294).
	conflicted bool
}

// isServiceParent reports whether ref names a Service, i.e. is a mesh
// parentRef: group "" (or "core") and kind Service. Other parents (Gateways
// by default) are not ours.
func isServiceParent(ref gatewayv1.ParentReference) bool {
	return ref.Kind != nil && *ref.Kind == "Service" && ref.Group != nil && isCoreGroup(string(*ref.Group))
}

// attach attaches r to the Service ref names: to the port it selects (by
// port and/or sectionName = port name), or to every port, keeping only the
// ports that can carry HTTP.
func (c *compiler) attach(r *route, ref gatewayv1.ParentReference) *parent {
	p := &parent{ref: ref, namespace: r.namespace, name: string(ref.Name)}
	if ref.Namespace != nil && *ref.Namespace != "" {
		p.namespace = string(*ref.Namespace)
	}
	label := p.namespace + "/" + p.name
	refuse := func(reason gatewayv1.RouteConditionReason, format string, args ...any) *parent {
		p.refused = errorf(reason, format, args...)
		c.routeProblem(r, fmt.Sprintf("parentRef Service %s: not attached: %s", label, p.refused.msg))
		return p
	}
	p.svc = c.services[nsName{p.namespace, p.name}]
	switch {
	case p.svc == nil:
		return refuse(gatewayv1.RouteReasonNoMatchingParent, "Service %s not found", label)
	case p.svc.Spec.Type == corev1.ServiceTypeExternalName:
		return refuse(gatewayv1.RouteReasonNoMatchingParent, "Service %s is of type ExternalName; mesh routes attach to Services with a cluster IP", label)
	case len(model.ServiceVIPs(p.svc)) == 0:
		return refuse(gatewayv1.RouteReasonNoMatchingParent, "Service %s is headless; mesh routes attach to Services with a cluster IP", label)
	}

	// An empty sectionName or a zero port means "unspecified".
	port, section := ptrOr(ref.Port, 0), string(ptrOr(ref.SectionName, ""))
	var selected []corev1.ServicePort
	for _, sp := range p.svc.Spec.Ports {
		if (port == 0 || sp.Port == port) && (section == "" || sp.Name == section) {
			selected = append(selected, sp)
		}
	}
	if len(selected) == 0 {
		var what []string
		if port != 0 {
			what = append(what, fmt.Sprintf("port %d", port))
		}
		if section != "" {
			what = append(what, fmt.Sprintf("named %q", section))
		}
		return refuse(gatewayv1.RouteReasonNoMatchingParent, "Service %s has no port %s", label, strings.TrimPrefix(strings.Join(what, " "), "port "))
	}
	type usable struct {
		sp    corev1.ServicePort
		proto routeapi.Protocol
	}
	var ports []usable
	var opaque []string
	for _, sp := range selected {
		proto, ok := portProtocol(sp)
		switch {
		case !ok:
			opaque = append(opaque, fmt.Sprintf("%d (%s)", sp.Port, sp.Protocol))
		case proto == routeapi.Protocol_PROTOCOL_TCP:
			opaque = append(opaque, fmt.Sprintf("%d (opaque TCP by its name or appProtocol)", sp.Port))
		default:
			ports = append(ports, usable{sp, proto})
		}
	}
	if len(ports) == 0 {
		return refuse(gatewayv1.RouteReasonNotAllowedByListeners,
			"%ss cannot apply to port %s of Service %s; name the port http-… or set appProtocol to http, http2 or grpc",
			r.kind, strings.Join(opaque, ", "), label)
	}
	if !r.validRules() {
		first := r.rules[0].drop
		return refuse(first.reason, "every rule is invalid: %s", droppedRules(r))
	}
	group := ""
	if p.namespace != r.namespace {
		group = r.namespace
	}
	for _, u := range ports {
		a := &attachment{route: r, parent: p, port: u.sp, proto: u.proto, group: group}
		for _, q := range r.parents {
			if q.namespace == p.namespace && q.name == p.name {
				for _, b := range q.atts {
					a.duplicate = a.duplicate || b.port.Port == u.sp.Port
				}
			}
		}
		p.atts = append(p.atts, a)
	}
	return p
}

// droppedRules describes the dropped rules of r: "Dropped Rule 1: …; Dropped
// Rule 3 (name): …", the form the PartiallyInvalid condition requires.
func droppedRules(r *route) string {
	var parts []string
	for _, t := range r.rules {
		if t.drop != nil {
			parts = append(parts, "Dropped R"+strings.TrimPrefix(t.label, "r")+": "+t.drop.msg)
		}
	}
	return strings.Join(parts, "; ")
}
