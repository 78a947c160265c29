// Package routeapi defines ServiceRoutes, the waypoint route configuration
// that istiod-lite serves to waypoints over delta ADS: one resource per
// Service, named "<namespace>/<hostname>", holding the Service's VIPs and,
// per service port, the Gateway API routes (HTTPRoute, GRPCRoute) that apply
// to it, compiled, resolved and sorted by precedence so that a waypoint can
// apply them without any Kubernetes knowledge.
//
// It also defines WaypointPolicy (policy.proto): an AuthorizationPolicy with
// targetRefs, compiled for the waypoints it attaches to, one resource per
// policy, named "<namespace>/<name>".
//
// routeapi.proto and policy.proto document every field (defaults, units)
// and what a waypoint does with it; the .pb.go files are generated from
// them by generate.sh (`make generate`). The package imports nothing but
// the protobuf runtime.
package routeapi

//go:generate bash generate.sh

import "google.golang.org/protobuf/reflect/protoreflect"

// TypeURL is the xDS type URL of ServiceRoutes resources.
const TypeURL = "type.googleapis.com/ambientlite.route.v1.ServiceRoutes"

// ResourceName is the xDS resource name of the ServiceRoutes of a Service:
// "<namespace>/<hostname>", the name of the Service's istio.workload.Address
// resource too.
func ResourceName(namespace, hostname string) string {
	return namespace + "/" + hostname
}

// ResourceName is ResourceName(r.Namespace, r.Hostname).
func (r *ServiceRoutes) ResourceName() string {
	return ResourceName(r.GetNamespace(), r.GetHostname())
}

// FullName is the protobuf full name of ServiceRoutes (TypeURL without its prefix).
const FullName protoreflect.FullName = "ambientlite.route.v1.ServiceRoutes"

// PolicyTypeURL is the xDS type URL of WaypointPolicy resources
// (policy.proto).
const PolicyTypeURL = "type.googleapis.com/ambientlite.route.v1.WaypointPolicy"

// ResourceName is the xDS resource name of a WaypointPolicy:
// "<namespace>/<name>" of its AuthorizationPolicy.
func (p *WaypointPolicy) ResourceName() string {
	return p.GetNamespace() + "/" + p.GetName()
}
