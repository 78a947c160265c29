// Package l7bench is the waypoint (L7) benchmark that `make bench` runs
// after l4bench: four "pod" network namespaces on one bridge — a client, a
// waypoint and two backends ("v1" and "v2", fortio echo servers) — with
// ztunnel's real capture rules in the client and backend pods, two ztunnel
// processes (the client's node, the backends' node) and the waypoint as a
// process of its own in its pod, with the identity of a waypoint service
// account.
//
// The configuration is real: mesh.yaml (Namespaces, Pods, Services, the
// waypoint's Gateway, an HTTPRoute splitting reviews 90/10 between
// reviews-v1 and reviews-v2) goes through istiod-lite's translation and
// route compiler into an istiod-lite xDS Store, served in this process by
// istiod-lite's delta ADS server and CA over gRPC with TLS; the ztunnels
// take workloads and Services from it, the waypoint its certificate, the
// Addresses and the compiled routes.
//
// Over the same pods, in one run, it measures the direct path (no capture),
// the L4 path (ztunnel to ztunnel), the L7 path (ztunnel → waypoint →
// ztunnel, through the reviews VIP) and HAProxy doing the same 90/10 split,
// in plain HTTP and with mutual TLS on both hops: requests per second at
// saturation, latency at a fixed rate (fortio), the CPU and memory of every
// proxy process from /proc, and the split each backend saw. It prints
// markdown tables with ratios and issue #5's targets; numbers never fail
// the run, setup errors and traffic that missed its proxy do.
//
// The machinery (processes, namespaces, the app, load and ztunnel roles,
// /proc sampling, formatting) is package l4bench's; this binary runs those
// roles through l4bench.RunRole and adds its own "waypoint" role. See
// bench/README.md.
package l7bench
