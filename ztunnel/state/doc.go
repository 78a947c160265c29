// Package state is ztunnel's view of the mesh: the workloads, services and
// L4 authorization policies the control plane sends as
// istio.workload.Address and istio.security.Authorization, indexed for the
// questions the proxy asks on every connection.
//
// A Store is fed by two internal/xdsclient handlers (AddressHandler and
// AuthorizationHandler). Each response is applied as one unit: the store
// builds a new immutable view from the previous one and publishes it with
// one atomic store, so readers never lock and never see half a response.
// A resource that cannot be read is rejected by name (xdsclient.Rejections)
// and keeps its previous content; the rest of the response applies.
//
// The proxy asks:
//   - DestinationFor: where a captured outbound connection goes, resolved as
//     ztunnel's outbound does (service VIP → waypoint or a healthy endpoint,
//     workload IP → the workload or its workload waypoint, else passthrough);
//   - Check / Authorize: ztunnel's L4 RBAC for an inbound connection;
//   - SourceWorkload: which local pod an address belongs to.
//
// Snapshot returns the content for the admin /config_dump, in ztunnel's JSON
// shape. The semantics and the ztunnel sources they follow are in README.md.
package state
