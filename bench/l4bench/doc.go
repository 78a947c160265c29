// Package l4bench is the ztunnel data-plane benchmark that `make bench` runs:
// two "pod" network namespaces joined by a veth pair, captured by ztunnel's
// real nftables rules, with one ztunnel process per pod (ztunnel/proxy
// serving that pod, static routes and policy, real mutual TLS 1.3 with SPIFFE
// identities) and, on the same namespaces and in the same run, a direct path
// and two peer proxy pairs doing mutual TLS the classic way: HAProxy and
// stunnel (Debian's packages).
//
// Over every path it measures single-stream throughput, request latency at a
// fixed rate with fortio (p50/p90/p99), new connections per second, and the
// CPU and memory of each proxy process from /proc, then prints markdown
// tables with the ratios against direct and between the proxies. Numbers
// never fail the run; setup errors do.
//
// Every role is a process: the bench itself (which holds the namespaces on
// parked threads and orchestrates), the application in the server pod, the
// load generator in the client pod, the ztunnels and the peers, so that CPU
// and RSS are per proxy process. The bench re-executes its own binary for its
// roles (Run's "app", "load" and "ztunnel" commands). See README.md.
package l4bench
