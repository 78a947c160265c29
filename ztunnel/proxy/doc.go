// Package proxy is ztunnel's per-pod data path in in-pod mode: for every
// enrolled pod it opens, inside the pod's network namespace, the outbound
// listener (15001), the inbound plaintext listener (15006) and the inbound
// HBONE listener (15008), and carries the pod's TCP traffic.
//
// Outbound, a captured connection's original destination is resolved through
// a Resolver to either passthrough (plain TCP to the original destination) or
// an HBONE tunnel to a next hop, opened with the source pod's certificate from
// sockets that live in the pod's namespace and carry ztunnel's mark, so they
// leave from the pod's IP and are not captured again. Inbound, HBONE tunnels
// are terminated with the destination pod's certificate, checked against the
// pod's addresses and authorized through the Resolver before the application
// is dialled (with the original client's address as source); plaintext
// connections are let in only when the Resolver allows plaintext (PERMISSIVE).
//
// Every connection produces one access-log line and Istio's TCP metrics
// (istio_tcp_connections_opened_total and friends), and is listed by
// Proxy.Connections while open. The package does not import the workload
// store: it asks small interfaces (Resolver, Certificates) that an adapter
// over the store satisfies. See README.md.
package proxy
