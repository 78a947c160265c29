// Package xds is istiod-lite's config server: the incremental (delta)
// variant of Envoy's aggregated discovery service,
// envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources,
// as ztunnel speaks it to fetch Istio's ambient resources
// (istio.workload.Address, istio.security.Authorization) and as our
// waypoint will fetch its routes.
//
// The server knows nothing of Kubernetes or of the resource types. A Store
// holds named resources per type URL, packed as Any with a content-hash
// version; whoever translates the cluster calls Store.Set or Store.Update.
// Every change wakes the streams, which wait for a quiet period (debounce)
// and then send each client only what differs from what it has: upserts
// and removed_resources, one response per type in flight until the client
// ACKs or NACKs it. A client reconnecting with initial_resource_versions
// gets only what changed while it was away.
//
// Streams are authenticated when they open by an injected Authenticator.
// Server.Streams reports per stream and type what the client has acked and
// its last NACK, for proxy-status. See README.md for the protocol facts
// taken from Istio and ztunnel, defaults and metrics.
package xds
