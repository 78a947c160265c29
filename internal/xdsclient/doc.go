// Package xdsclient is the delta ADS client of the data plane: ztunnel
// fetches Istio's ambient resources (istio.workload.Address,
// istio.security.Authorization) with it, and the waypoint its routes. It
// speaks envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources
// over TLS to istiod-lite or Istio's istiod, authenticated by the proxy's
// service-account token, and behaves as ztunnel's client does
// (src/xds/client.rs).
//
// The user registers a Handler per type URL, for a wildcard subscription
// (Watch) or for named, on-demand ones (WatchNamed, then Subscribe and
// Unsubscribe at runtime), and calls Run. Each response goes to its
// handler; a nil error ACKs it, an error NACKs it and leaves the previous
// state, and Rejections rejects single resources as ztunnel does. The
// client records the version of every resource held, sends them in
// initial_resource_versions when it reconnects so that only what changed
// comes back, and never clears anything on a disconnect: the proxy keeps
// serving its last configuration while the control plane is away.
//
// Synced tells when every wildcard type has had a response ACKed, for
// readiness; Status reports the connection and each type for an admin
// endpoint. See README.md for the wire facts, defaults and metrics.
//
// The package imports nothing of Ambient Lite's parts.
package xdsclient
