package route

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// wellKnownTCPPorts are treated as opaque TCP when a port declares nothing
// (Istio: SMTP, DNS, MySQL, MongoDB).
var wellKnownTCPPorts = map[int32]bool{25: true, 53: true, 3306: true, 27017: true}

// portProtocol is how a waypoint treats a service port, by Istio's protocol
// selection: appProtocol if set (with Kubernetes' standard
// "kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss"), else the
// port name up to its first "-". ok is false for ports that are not TCP
// (UDP, SCTP), which waypoints never see.
func portProtocol(p corev1.ServicePort) (proto routeapi.Protocol, ok bool) {
	if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
		return routeapi.Protocol_PROTOCOL_UNSPECIFIED, false
	}
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
		switch name {
		case "kubernetes.io/h2c":
			return routeapi.Protocol_PROTOCOL_HTTP2, true
		case "kubernetes.io/ws":
			return routeapi.Protocol_PROTOCOL_HTTP, true
		case "kubernetes.io/wss":
			return routeapi.Protocol_PROTOCOL_TCP, true
		}
	}
	name = strings.ToLower(name)
	if strings.HasPrefix(name, "grpc-web") {
		return routeapi.Protocol_PROTOCOL_HTTP, true
	}
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	switch name {
	case "http", "http_proxy":
		return routeapi.Protocol_PROTOCOL_HTTP, true
	case "http2":
		return routeapi.Protocol_PROTOCOL_HTTP2, true
	case "grpc":
		return routeapi.Protocol_PROTOCOL_GRPC, true
	case "tcp", "tls", "https", "mongo", "redis", "mysql", "udp":
		return routeapi.Protocol_PROTOCOL_TCP, true
	}
	if wellKnownTCPPorts[p.Port] {
		return routeapi.Protocol_PROTOCOL_TCP, true
	}
	return routeapi.Protocol_PROTOCOL_UNSPECIFIED, true
}
