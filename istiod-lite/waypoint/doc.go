// Package waypoint is istiod-lite's waypoint controller. It turns every
// Gateway of class istio-waypoint into the workload that serves it — a
// ServiceAccount, a Deployment of the waypoint proxy and a ClusterIP Service,
// all named after the Gateway, in its namespace, owned by it — and reports on
// the Gateway whether that worked (Accepted, Programmed, addresses, listener
// status). It also makes sure the GatewayClass istio-waypoint exists and is
// Accepted.
//
// It behaves like the waypoint part of Istio's Gateway deployment controller
// (same names, labels, ports and status semantics) but is built on plain
// client-go: informers passed in by the caller, a rate-limited work queue,
// server-side apply with field manager "istiod-lite", and no template engine.
// The pure parts — what to create for a Gateway (render.go), whether its
// listeners are acceptable (check.go) and what its status says (status.go) —
// are separate from the loop that reads and writes the API (controller.go,
// reconcile.go).
package waypoint
