// Package proxy is the waypoint process: it gets the waypoint's own
// certificate from the mesh CA (internal/meshcert), follows istiod-lite's
// configuration stream (internal/xdsclient: workloads and services into a
// ztunnel/state.Store, compiled routes into a waypoint/router.Table),
// terminates HBONE on :15008 (internal/hbone) and serves what each tunnel
// carries:
//
//   - HTTP/1.1, HTTP/2 with prior knowledge and gRPC: each request is routed
//     (waypoint/router decides; this package serves, forwards, retries,
//     mirrors, times out) and forwarded over pooled HBONE tunnels, with the
//     waypoint's identity, to an endpoint picked per request;
//   - anything else, and ports declared TCP: relayed to an endpoint of the
//     destination, over HBONE when it is in the mesh.
//
// It serves readiness on :15021 and Prometheus metrics on :15020 (Istio's
// request and TCP metrics, reporter="waypoint"), logs JSON with one line per
// request and per tunnel, and drains on SIGTERM.
//
// Files by concern: run.go and options.go (the process), config.go (xDS →
// store and route table), waypoint.go (the data plane and its limits),
// tunnel.go (per tunnel: protocol detection), passthrough.go (TCP),
// handler.go (the routing decision's outcome), forward.go (attempts,
// retries, timeouts), upstream.go (endpoints and connection pools),
// body.go (request bodies kept for retries and mirrors), mirror.go,
// headers.go, telemetry.go and metrics.go. See waypoint/README.md.
package proxy
