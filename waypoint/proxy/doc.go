// Package proxy is the waypoint process: it gets the waypoint's own
// certificate from the mesh CA (internal/meshcert), terminates HBONE on
// :15008 for mesh clients (internal/hbone), and relays each tunnel as plain
// TCP to the destination its :authority names — L4 pass-through. It serves
// readiness on :15021 and Prometheus metrics on :15020, logs JSON with one
// line per tunnel, and drains on SIGTERM.
//
// L7 (HTTPRoutes, retries, L7 policy, request metrics) comes with the route
// configuration stream from istiod-lite; XDS_ADDRESS is accepted for it but
// not used yet. See waypoint/README.md.
package proxy
