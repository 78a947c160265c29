package l4bench

import (
	"net/netip"
	"strconv"

	"github.com/ambientlite/mesh/internal/hbone"
)

// The two pods: the client pod A and the server pod B. 10.254.0.0/24 exists
// only on the veth pair between the two namespaces; nothing of it reaches
// the host.
var (
	clientIP = netip.MustParseAddr("10.254.0.1")
	serverIP = netip.MustParseAddr("10.254.0.2")
	clientID = hbone.Identity{TrustDomain: "cluster.local", Namespace: "bench-client", ServiceAccount: "client"}
	serverID = hbone.Identity{TrustDomain: "cluster.local", Namespace: "bench-server", ServiceAccount: "server"}
)

// Ports of the application in the server pod: one fortio echo server and
// one throughput sink, each listening on two ports.
const (
	// portHTTP and portSink are captured: reached through ztunnel, or on
	// 127.0.0.1 from a peer's server-side proxy.
	portHTTP uint16 = 8080
	portSink uint16 = 8081
	// portDirectHTTP and portDirectSink are excluded from capture on both
	// pods: the direct path, plain TCP over the same veth and the same
	// nftables tables.
	portDirectHTTP uint16 = 9080
	portDirectSink uint16 = 9081
)

// peerPorts are the ports of a peer proxy pair.
type peerPorts struct {
	// ClientHTTP and ClientSink are the client-side proxy's plaintext
	// listeners on 127.0.0.1 in the client pod (the app connects to them,
	// as to a local sidecar).
	ClientHTTP, ClientSink uint16
	// ServerHTTP and ServerSink are the server-side proxy's TLS listeners
	// on the server pod's address, excluded from capture.
	ServerHTTP, ServerSink uint16
}

var (
	haproxyPorts = peerPorts{ClientHTTP: 10080, ClientSink: 10081, ServerHTTP: 10443, ServerSink: 10444}
	stunnelPorts = peerPorts{ClientHTTP: 11080, ClientSink: 11081, ServerHTTP: 11443, ServerSink: 11444}
)

// excludedPorts are the destination ports left out of capture, outbound in
// the client pod and inbound in the server pod: the direct path and the
// peers' TLS hops, which must not be carried by ztunnel.
func excludedPorts() []uint16 {
	return []uint16{
		portDirectHTTP, portDirectSink,
		haproxyPorts.ServerHTTP, haproxyPorts.ServerSink,
		stunnelPorts.ServerHTTP, stunnelPorts.ServerSink,
	}
}

func hostPort(ip netip.Addr, port uint16) string {
	return netip.AddrPortFrom(ip, port).String()
}

func loopback(port uint16) string {
	return "127.0.0.1:" + strconv.Itoa(int(port))
}
