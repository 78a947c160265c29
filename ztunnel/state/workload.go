package state

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Defaults filled in for fields the control plane leaves empty, as ztunnel
// does (src/state/workload.rs): Istio sends an empty trust domain for
// cluster.local.
const (
	DefaultTrustDomain    = "cluster.local"
	DefaultServiceAccount = "default"
	DefaultClusterID      = "Kubernetes"
	// DefaultHBONEPort is the port HBONE tunnels to a workload go to.
	DefaultHBONEPort = 15008
)

// Protocol is how a workload accepts inbound traffic (the workload's
// tunnel_protocol): HBONE when it is captured by a ztunnel, TCP otherwise.
type Protocol uint8

const (
	TCP Protocol = iota
	HBONE
)

func (p Protocol) String() string {
	if p == HBONE {
		return "HBONE"
	}
	return "TCP"
}

// MarshalText writes "TCP" or "HBONE", as ztunnel's config dump.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// HealthStatus is a workload's status.
type HealthStatus uint8

const (
	Healthy HealthStatus = iota
	Unhealthy
)

func (h HealthStatus) String() string {
	if h == Unhealthy {
		return "Unhealthy"
	}
	return "Healthy"
}

// MarshalText writes "Healthy" or "Unhealthy", as ztunnel's config dump.
func (h HealthStatus) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// Ports maps a service port to the target port.
type Ports map[uint16]uint16

// NetworkAddress is an IP on a network ("" is the default network).
type NetworkAddress struct {
	Network string
	Address netip.Addr
}

func (a NetworkAddress) String() string { return a.Network + "/" + a.Address.String() }

// MarshalText writes "<network>/<ip>", as ztunnel's config dump.
func (a NetworkAddress) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// NetworkPrefix is a CIDR on a network (a service's cidr VIP).
type NetworkPrefix struct {
	Network string
	Prefix  netip.Prefix
}

func (p NetworkPrefix) String() string { return p.Network + "/" + p.Prefix.String() }

// MarshalText writes "<network>/<cidr>", as ztunnel's config dump.
func (p NetworkPrefix) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// GatewayAddress is where a waypoint (or network gateway) is reached: a
// service or workload by hostname, or an address; HBONEPort is its HBONE
// port. Exactly one of Hostname and Address is set.
type GatewayAddress struct {
	// Namespace and Hostname name a service ("<ns>/<hostname>").
	Namespace, Hostname string
	// Address is an IP on a network: a service VIP or a workload IP.
	Address   NetworkAddress
	HBONEPort uint16
}

// IsHostname reports whether g names a hostname rather than an address.
func (g *GatewayAddress) IsHostname() bool { return g.Hostname != "" }

func (g *GatewayAddress) String() string {
	if g.IsHostname() {
		return g.Namespace + "/" + g.Hostname
	}
	return g.Address.String()
}

// MarshalJSON writes {"destination": "<ns>/<host>" or "<network>/<ip>",
// "hboneMtlsPort": N}, as ztunnel's config dump.
func (g *GatewayAddress) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Destination string `json:"destination"`
		Port        uint16 `json:"hboneMtlsPort"`
	}{g.String(), g.HBONEPort})
}

// ApplicationTunnel is a workload's application_tunnel.
type ApplicationTunnel struct {
	// Protocol is "NONE" or "PROXY".
	Protocol string `json:"protocol"`
	// Port is where the tunnel is accepted; 0 if not set.
	Port uint16 `json:"port,omitempty"`
}

// Locality of a workload.
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
}

// Workload is an istio.workload.Workload as ztunnel reads it: addresses
// parsed, defaults filled in. A *Workload handed out by the Store is shared:
// treat it as read-only.
type Workload struct {
	UID       string       `json:"uid"`
	Addresses []netip.Addr `json:"workloadIps"`
	// Waypoint is the workload waypoint (istio.io/use-waypoint for
	// workloads); nil if none.
	Waypoint       *GatewayAddress `json:"waypoint,omitempty"`
	NetworkGateway *GatewayAddress `json:"networkGateway,omitempty"`
	// Protocol is HBONE for workloads in the mesh, TCP otherwise.
	Protocol Protocol `json:"protocol"`
	// HostNetwork workloads share their node's IP: they are never found by
	// address.
	HostNetwork       bool   `json:"hostNetwork,omitempty"`
	Name              string `json:"name"`
	Namespace         string `json:"namespace"`
	TrustDomain       string `json:"trustDomain"`
	ServiceAccount    string `json:"serviceAccount"`
	Network           string `json:"network,omitempty"`
	WorkloadName      string `json:"workloadName,omitempty"`
	WorkloadType      string `json:"workloadType,omitempty"`
	CanonicalName     string `json:"canonicalName,omitempty"`
	CanonicalRevision string `json:"canonicalRevision,omitempty"`
	Hostname          string `json:"hostname,omitempty"`
	Node              string `json:"node,omitempty"`
	NativeTunnel      bool   `json:"nativeTunnel,omitempty"`

	ApplicationTunnel *ApplicationTunnel `json:"applicationTunnel,omitempty"`
	// AuthorizationPolicies are the names ("<ns>/<name>") of the
	// WORKLOAD_SELECTOR policies (and converted PeerAuthentications) that
	// apply to this workload.
	AuthorizationPolicies []string     `json:"authorizationPolicies,omitempty"`
	Status                HealthStatus `json:"status"`
	ClusterID             string       `json:"clusterId"`
	Locality              Locality     `json:"locality,omitzero"`
	// Services maps "<ns>/<hostname>" of each service this workload is an
	// endpoint of to its port mapping for this workload.
	Services map[string]Ports `json:"services,omitempty"`
	// Capacity is the load-balancing weight; 1 when not sent.
	Capacity uint32 `json:"capacity"`
}

// Identity is the workload's SPIFFE identity
// (spiffe://<trust domain>/ns/<namespace>/sa/<service account>).
func (w *Workload) Identity() hbone.Identity {
	return hbone.Identity{TrustDomain: w.TrustDomain, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

// HasAddress reports whether ip is one of the workload's addresses.
func (w *Workload) HasAddress(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, a := range w.Addresses {
		if a == ip {
			return true
		}
	}
	return false
}

func (w *Workload) String() string {
	return fmt.Sprintf("%s (%s/%s)", w.UID, w.Namespace, w.Name)
}

// rank orders workloads that share an address, as ztunnel does
// (WorkloadByAddr::get): pods before other kinds, then HBONE before TCP.
func (w *Workload) rank() int {
	r := 0
	if strings.Contains(w.UID, "//Pod/") {
		r += 2
	}
	if w.Protocol == HBONE {
		r++
	}
	return r
}

// Endpoint is a workload serving a service, with its port mapping for that
// service.
type Endpoint struct {
	Workload *Workload
	Ports    Ports
}

// Service is an istio.workload.Service as ztunnel reads it. A *Service
// handed out by the Store is shared: treat it as read-only.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Hostname  string `json:"hostname"`
	// VIPs are the single-address VIPs; CIDRVIPs those sent with a prefix
	// length shorter than the address.
	VIPs     []NetworkAddress `json:"vips"`
	CIDRVIPs []NetworkPrefix  `json:"cidrVips,omitempty"`
	// Ports maps service port → target port; a target port of 0 means
	// each endpoint's own mapping decides (a named target port).
	Ports           Ports    `json:"ports"`
	SubjectAltNames []string `json:"subjectAltNames,omitempty"`
	// Waypoint is the service waypoint; nil if none.
	Waypoint          *GatewayAddress    `json:"waypoint,omitempty"`
	WeightedWaypoints []WeightedWaypoint `json:"weightedWaypoints,omitempty"`
	LoadBalancer      *LoadBalancer      `json:"loadBalancer,omitempty"`
	// IPFamilies is "", "IPv4", "IPv6" or "Dual".
	IPFamilies string `json:"ipFamilies,omitempty"`
	Canonical  bool   `json:"canonical"`
	// Visibility is "Public" or "Namespace" (only clients of the service's
	// namespace see it).
	Visibility string `json:"visibility"`

	key string // Key, computed once
}

// Key is the service's "<namespace>/<hostname>": its resource name, and the
// key workloads use in their services map.
func (s *Service) Key() string {
	if s.key != "" {
		return s.key
	}
	return s.Namespace + "/" + s.Hostname
}

// visibleTo reports whether a client in namespace ns ("" when unknown) may
// use the service (ztunnel's Service::visible_to, applied only when the
// client's namespace is known).
func (s *Service) visibleTo(ns string) bool {
	return ns == "" || s.Visibility != "Namespace" || s.Namespace == ns
}

// allowsUnhealthy reports whether the service's health policy is ALLOW_ALL.
func (s *Service) allowsUnhealthy() bool {
	return s.LoadBalancer != nil && s.LoadBalancer.HealthPolicy == "AllowAll"
}

// passthrough reports whether the service's load balancing mode is
// PASSTHROUGH: traffic goes to the original destination.
func (s *Service) passthrough() bool {
	return s.LoadBalancer != nil && s.LoadBalancer.Mode == "Passthrough"
}

// WeightedWaypoint is one candidate of a service's weighted waypoints.
type WeightedWaypoint struct {
	Destination *GatewayAddress `json:"destination"`
	Weight      uint32          `json:"weight"`
}

// LoadBalancer is a service's load_balancing. Only Mode "Passthrough" and
// HealthPolicy "AllowAll" change endpoint selection here; routing
// preferences are kept for the dump (see README.md).
type LoadBalancer struct {
	// Mode is "Standard", "Strict", "Failover" or "Passthrough".
	Mode               string   `json:"mode"`
	RoutingPreferences []string `json:"routingPreferences"`
	// HealthPolicy is "OnlyHealthy" or "AllowAll".
	HealthPolicy string `json:"healthPolicy"`
}
