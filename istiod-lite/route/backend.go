package route

import (
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// resolve resolves a backendRef (or a mirror's) to a Service port. The
// checks run in this order so that a reference that is not permitted does
// not reveal whether its target exists.
func (c *compiler) resolve(ctx applyCtx, ref gatewayv1.BackendObjectReference) (*routeapi.Destination, *condErr) {
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	ns := ctx.routeNS
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	name := ns + "/" + string(ref.Name)
	if !isCoreGroup(group) || kind != "Service" {
		return nil, errorf(gatewayv1.RouteReasonInvalidKind, "backendRef %s: kind %s is not supported (only core Services)", name, groupKind(group, kind))
	}
	if !c.backendPermitted(ctx, ns, string(ref.Name)) {
		return nil, errorf(gatewayv1.RouteReasonRefNotPermitted,
			"backendRef %s: not permitted: no ReferenceGrant in namespace %s allows %ss from namespace %s", name, ns, ctx.routeKind, ctx.routeNS)
	}
	svc := c.services[nsName{ns, string(ref.Name)}]
	if svc == nil {
		return nil, errorf(gatewayv1.RouteReasonBackendNotFound, "backendRef %s: Service not found", name)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, errorf(gatewayv1.RouteReasonInvalidKind, "backendRef %s: Services of type ExternalName are not supported", name)
	}
	if ref.Port == nil {
		return nil, errorf(gatewayv1.RouteReasonBackendNotFound, "backendRef %s: a port is required for Services", name)
	}
	for _, sp := range svc.Spec.Ports {
		if sp.Port != *ref.Port {
			continue
		}
		proto, ok := portProtocol(sp)
		if !ok {
			return nil, errorf(gatewayv1.RouteReasonBackendNotFound, "backendRef %s: port %d of the Service is not TCP", name, sp.Port)
		}
		return &routeapi.Destination{
			Name:      svc.Name,
			Namespace: svc.Namespace,
			Hostname:  serviceHostname(svc.Name, svc.Namespace, c.cfg.DomainSuffix),
			Port:      uint32(sp.Port),
			Protocol:  proto,
		}, nil
	}
	return nil, errorf(gatewayv1.RouteReasonBackendNotFound, "backendRef %s: the Service has no port %d", name, *ref.Port)
}

// backendPermitted reports whether a route in ctx.routeNS may send to the
// Service ns/name: always within the route's namespace and the parent
// Service's namespace (whose waypoint does the forwarding), elsewhere when
// Config.AllowCrossNamespaceBackends is set or a ReferenceGrant in ns allows
// it.
func (c *compiler) backendPermitted(ctx applyCtx, ns, name string) bool {
	if ns == ctx.routeNS || ns == ctx.parentNS || c.cfg.AllowCrossNamespaceBackends {
		return true
	}
	for _, g := range c.grants[ns] {
		from := false
		for _, f := range g.Spec.From {
			if string(f.Group) == gatewayv1.GroupName && string(f.Kind) == ctx.routeKind && string(f.Namespace) == ctx.routeNS {
				from = true
				break
			}
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if isCoreGroup(string(t.Group)) && t.Kind == "Service" && (t.Name == nil || *t.Name == "" || string(*t.Name) == name) {
				return true
			}
		}
	}
	return false
}

// isCoreGroup reports whether a reference's group is Kubernetes' core group.
func isCoreGroup(g string) bool { return g == "" || g == "core" }

func groupKind(group, kind string) string {
	if group == "" {
		return kind
	}
	return group + "/" + kind
}

// serviceHostname is "<name>.<namespace>.svc.<domainSuffix>".
func serviceHostname(name, namespace, domainSuffix string) string {
	return name + "." + namespace + ".svc." + domainSuffix
}
