// Package hbone implements HBONE, the tunnel protocol of Istio's ambient
// mode: HTTP/2 CONNECT over mutual TLS 1.3 (ALPN h2), normally on port 15008,
// with SPIFFE identities in the certificates.
//
// A Dialer opens tunnels for ztunnel and waypoint clients: DialContext sends
// CONNECT with :authority set to the destination ip:port (plus forwarded,
// baggage and traceparent) on a pooled connection to the next hop, checks that
// the next hop's certificate carries the expected identity, and returns the
// tunnel as a *Stream (a net.Conn with CloseWrite) once the server answered
// 200. A Server terminates tunnels: it verifies the client certificate against
// the mesh roots and trust domain, checks the authority, asks Authorize, dials
// the destination and only then answers — 200, or 400, 401, 503 — and relays
// bytes both ways with half-close.
//
// The HTTP/2 layer is this package's own, on golang.org/x/net/http2's Framer
// and hpack: the net/http server cannot end a response while it still reads
// the request body, which a TCP half-close through the tunnel needs, and its
// client owns a connection pool this package needs to own (per-identity keys,
// stream caps, single-flight dials). See README.md for the protocol details,
// the defaults and the benchmark numbers.
//
// The package imports nothing of Ambient Lite and nothing of Kubernetes.
package hbone
