// Package route compiles the Gateway API routes of the mesh — HTTPRoutes and
// GRPCRoutes whose parentRefs name a Service — into the routeapi.ServiceRoutes
// resources that istiod-lite serves to waypoints, and computes the status
// (RouteParentStatus with Accepted, ResolvedRefs, PartiallyInvalid and
// ResolvedWaypoints conditions) that istiod-lite writes back on the routes.
//
// The compilation is pure: Compile takes a Config and a Snapshot of typed
// Kubernetes objects and returns a Result, with no clients, clocks or
// logging. Everything a waypoint would otherwise need Kubernetes for is
// resolved here: defaults, Service ports and protocols, backend hostnames,
// ReferenceGrants, redirect ports, and the Gateway API precedence of matches
// across routes. What cannot be compiled as written is reported as a Problem
// and in the status; the rest still compiles.
//
// README.md lists the rules with the Gateway API and Istio sources they were
// checked against.
package route
