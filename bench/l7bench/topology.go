package l7bench

import (
	"net/netip"

	"github.com/ambientlite/mesh/internal/hbone"
)

// The pods, one network namespace each, on one bridge (10.254.0.0/24 exists
// only inside the benchmark's namespaces). mesh.yaml describes the same
// pods, Services and route to istiod-lite's translation; TestMesh checks
// that the two agree.
var (
	clientIP   = netip.MustParseAddr("10.254.0.1") // client-0 (namespace client), the load generator
	v1IP       = netip.MustParseAddr("10.254.0.2") // reviews-v1-0 (namespace bench), fortio echo "v1"
	waypointIP = netip.MustParseAddr("10.254.0.3") // waypoint-0 (namespace bench): the waypoint, or the peer's L7 proxy
	v2IP       = netip.MustParseAddr("10.254.0.4") // reviews-v2-0 (namespace bench), fortio echo "v2"

	// reviewsVIP is the Service reviews, port 80, split 90/10 between
	// reviews-v1 and reviews-v2 by the HTTPRoute; it has the waypoint.
	// Service VIPs (10.254.1.0/24) are only routed in the client pod,
	// where capture hands them to ztunnel as kube-proxy never sees them.
	reviewsVIP = netip.MustParseAddr("10.254.1.10")
	vipPrefix  = netip.MustParsePrefix("10.254.1.0/24")

	clientID   = hbone.Identity{TrustDomain: "cluster.local", Namespace: "client", ServiceAccount: "client"}
	reviewsID  = hbone.Identity{TrustDomain: "cluster.local", Namespace: "bench", ServiceAccount: "reviews"}
	waypointID = hbone.Identity{TrustDomain: "cluster.local", Namespace: "bench", ServiceAccount: "waypoint"}
	ztunnelID  = hbone.Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "ztunnel"}
)

const (
	// portApp is the apps' mesh port (captured in their pods): the
	// target port of the Services, reached through ztunnel, or on
	// 127.0.0.1 from the mTLS peer's server-side proxies.
	portApp uint16 = 8080
	// portDirect is the apps' port left out of capture: the direct path
	// and the plain HAProxy's upstream.
	portDirect uint16 = 9080
	// portService is the Services' port.
	portService uint16 = 80
	// portHAProxy is the plain HAProxy's HTTP listener in the waypoint pod.
	portHAProxy uint16 = 10080
	// The HAProxy mutual-TLS chain: the client pod's sidecar on
	// 127.0.0.1, the L7 proxy's TLS listener in the waypoint pod, the
	// server pods' sidecars.
	portSidecar     uint16 = 11080
	portHAProxyTLS  uint16 = 11443
	portBackendTLS  uint16 = 11444
	portHBONE       uint16 = 15008
	portControl     uint16 = 15012 // istiod-lite's CA and xDS, on the waypoint pod's loopback
	portWaypointMet uint16 = 15020
	portWaypointRdy uint16 = 15021
)

// caServerName is the name on the control plane's serving certificate, as
// istiod's.
const caServerName = "istiod.istio-system.svc"

// clientExcluded are the client pod's destination ports left out of capture
// (the direct path and the peers' hops); serverExcluded the server pods'
// inbound ones.
var (
	clientExcluded = []uint16{portDirect, portHAProxy, portHAProxyTLS}
	serverExcluded = []uint16{portDirect, portBackendTLS}
)
