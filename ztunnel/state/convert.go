package state

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/internal/hbone"
)

// WorkloadIdentity is the SPIFFE identity of a workload as sent, with
// ztunnel's defaults for an empty trust domain (cluster.local) and service
// account (default).
func WorkloadIdentity(w *workloadapi.Workload) hbone.Identity {
	return hbone.Identity{
		TrustDomain:    orDefault(w.GetTrustDomain(), DefaultTrustDomain),
		Namespace:      w.GetNamespace(),
		ServiceAccount: orDefault(w.GetServiceAccount(), DefaultServiceAccount),
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parseIP reads a 4- or 16-byte address (IPv4-mapped IPv6 stays IPv6, as in
// ztunnel's byte_to_ip).
func parseIP(b []byte) (netip.Addr, error) {
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, fmt.Errorf("address of %d bytes, want 4 or 16", len(b))
	}
	return ip, nil
}

// convertWorkload reads a Workload as ztunnel does (TryFrom<XdsWorkload> in
// src/state/workload.rs): any unreadable field rejects the whole resource.
func convertWorkload(name string, x *workloadapi.Workload) (*Workload, error) {
	if x.GetUid() == "" {
		return nil, errors.New("workload without uid")
	}
	if name != x.GetUid() {
		return nil, fmt.Errorf("resource name is not the workload uid %q", x.GetUid())
	}
	w := &Workload{
		UID:                   x.GetUid(),
		Name:                  x.GetName(),
		Namespace:             x.GetNamespace(),
		TrustDomain:           orDefault(x.GetTrustDomain(), DefaultTrustDomain),
		ServiceAccount:        orDefault(x.GetServiceAccount(), DefaultServiceAccount),
		Network:               x.GetNetwork(),
		WorkloadName:          x.GetWorkloadName(),
		CanonicalName:         x.GetCanonicalName(),
		CanonicalRevision:     x.GetCanonicalRevision(),
		Hostname:              x.GetHostname(),
		Node:                  x.GetNode(),
		NativeTunnel:          x.GetNativeTunnel(),
		ClusterID:             orDefault(x.GetClusterId(), DefaultClusterID),
		AuthorizationPolicies: x.GetAuthorizationPolicies(),
		Capacity:              1,
	}
	if c := x.GetCapacity(); c != nil {
		w.Capacity = c.GetValue()
	}
	for _, b := range x.GetAddresses() {
		ip, err := parseIP(b)
		if err != nil {
			return nil, err
		}
		w.Addresses = append(w.Addresses, ip)
	}
	switch x.GetTunnelProtocol() {
	case workloadapi.TunnelProtocol_NONE:
		w.Protocol = TCP
	case workloadapi.TunnelProtocol_HBONE:
		w.Protocol = HBONE
	default:
		return nil, fmt.Errorf("unsupported tunnel protocol %v", x.GetTunnelProtocol())
	}
	switch x.GetNetworkMode() {
	case workloadapi.NetworkMode_STANDARD:
	case workloadapi.NetworkMode_HOST_NETWORK:
		w.HostNetwork = true
	default:
		return nil, fmt.Errorf("unknown network mode %v", x.GetNetworkMode())
	}
	switch x.GetStatus() {
	case workloadapi.WorkloadStatus_HEALTHY:
		w.Status = Healthy
	case workloadapi.WorkloadStatus_UNHEALTHY:
		w.Status = Unhealthy
	default:
		return nil, fmt.Errorf("unknown workload status %v", x.GetStatus())
	}
	// ztunnel lower-cases the enum name and reads an unknown value as the
	// default (DEPLOYMENT).
	if n, ok := workloadapi.WorkloadType_name[int32(x.GetWorkloadType())]; ok {
		w.WorkloadType = strings.ToLower(n)
	} else {
		w.WorkloadType = "deployment"
	}
	var err error
	if w.Waypoint, err = convertGateway(x.GetWaypoint()); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	if w.NetworkGateway, err = convertGateway(x.GetNetworkGateway()); err != nil {
		return nil, fmt.Errorf("network gateway: %w", err)
	}
	if at := x.GetApplicationTunnel(); at != nil {
		p, ok := workloadapi.ApplicationTunnel_Protocol_name[int32(at.GetProtocol())]
		if !ok {
			return nil, fmt.Errorf("unknown application tunnel protocol %v", at.GetProtocol())
		}
		w.ApplicationTunnel = &ApplicationTunnel{Protocol: p, Port: uint16(at.GetPort())}
	}
	if l := x.GetLocality(); l != nil {
		w.Locality = Locality{Region: l.GetRegion(), Zone: l.GetZone(), Subzone: l.GetSubzone()}
	}
	if len(x.GetServices()) > 0 {
		w.Services = make(map[string]Ports, len(x.GetServices()))
		for key, pl := range x.GetServices() {
			if !strings.Contains(key, "/") {
				return nil, fmt.Errorf("service key %q is not <namespace>/<hostname>", key)
			}
			w.Services[key] = convertPorts(pl.GetPorts())
		}
	}
	return w, nil
}

// convertPorts maps service port → target port. Ports are 16 bits on the
// data plane; ztunnel truncates the proto's 32-bit values the same way.
func convertPorts(ps []*workloadapi.Port) Ports {
	m := make(Ports, len(ps))
	for _, p := range ps {
		m[uint16(p.GetServicePort())] = uint16(p.GetTargetPort())
	}
	return m
}

// convertGateway reads a GatewayAddress: nil stays nil; one without a
// destination is an error (ztunnel: MissingGatewayAddress).
func convertGateway(g *workloadapi.GatewayAddress) (*GatewayAddress, error) {
	if g == nil {
		return nil, nil
	}
	out := &GatewayAddress{HBONEPort: uint16(g.GetHboneMtlsPort())}
	switch d := g.GetDestination().(type) {
	case *workloadapi.GatewayAddress_Hostname:
		if d.Hostname.GetHostname() == "" {
			return nil, errors.New("gateway address with an empty hostname")
		}
		out.Namespace, out.Hostname = d.Hostname.GetNamespace(), d.Hostname.GetHostname()
	case *workloadapi.GatewayAddress_Address:
		ip, err := parseIP(d.Address.GetAddress())
		if err != nil {
			return nil, err
		}
		out.Address = NetworkAddress{Network: d.Address.GetNetwork(), Address: ip}
	default:
		return nil, errors.New("gateway address without a destination")
	}
	return out, nil
}

// convertService reads a Service as ztunnel does (TryFrom<&XdsService> in
// src/state/service.rs).
func convertService(name string, x *workloadapi.Service) (*Service, error) {
	if x.GetHostname() == "" {
		return nil, errors.New("service without hostname")
	}
	s := &Service{
		Name:            x.GetName(),
		Namespace:       x.GetNamespace(),
		Hostname:        x.GetHostname(),
		Ports:           convertPorts(x.GetPorts()),
		SubjectAltNames: x.GetSubjectAltNames(),
		Canonical:       x.GetCanonical(),
		Visibility:      "Public",
	}
	s.key = s.Namespace + "/" + s.Hostname
	if name != s.Key() {
		return nil, fmt.Errorf("resource name is not the service's <namespace>/<hostname> %q", s.Key())
	}
	for _, a := range x.GetAddresses() {
		ip, err := parseIP(a.GetAddress())
		if err != nil {
			return nil, err
		}
		if a.Length != nil && int(a.GetLength()) != ip.BitLen() {
			p, err := ip.Prefix(int(a.GetLength()))
			if err != nil {
				return nil, fmt.Errorf("vip %s/%d: %w", ip, a.GetLength(), err)
			}
			// Keep the address as sent, as ztunnel's IpNet does.
			s.CIDRVIPs = append(s.CIDRVIPs, NetworkPrefix{Network: a.GetNetwork(), Prefix: netip.PrefixFrom(ip, p.Bits())})
			continue
		}
		s.VIPs = append(s.VIPs, NetworkAddress{Network: a.GetNetwork(), Address: ip})
	}
	var err error
	if s.Waypoint, err = convertGateway(x.GetWaypoint()); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	for _, ww := range x.GetWeightedWaypoints() {
		if ww.GetDestination() == nil {
			return nil, errors.New("weighted waypoint without a destination")
		}
		d, err := convertGateway(ww.GetDestination())
		if err != nil {
			return nil, fmt.Errorf("weighted waypoint: %w", err)
		}
		s.WeightedWaypoints = append(s.WeightedWaypoints, WeightedWaypoint{Destination: d, Weight: ww.GetWeight()})
	}
	if lb := x.GetLoadBalancing(); lb != nil {
		out := &LoadBalancer{RoutingPreferences: []string{}}
		for _, r := range lb.GetRoutingPreference() {
			n, ok := lbScopes[r]
			if !ok {
				return nil, fmt.Errorf("invalid load balancing routing preference %v", r)
			}
			out.RoutingPreferences = append(out.RoutingPreferences, n)
		}
		if out.Mode, err = enumName(lbModes, lb.GetMode(), "load balancing mode"); err != nil {
			return nil, err
		}
		if out.HealthPolicy, err = enumName(lbHealth, lb.GetHealthPolicy(), "load balancing health policy"); err != nil {
			return nil, err
		}
		s.LoadBalancer = out
	}
	if s.IPFamilies, err = enumName(ipFamilies, x.GetIpFamilies(), "ip families"); err != nil {
		return nil, err
	}
	// ztunnel reads an unknown visibility as PUBLIC (fail open) rather than
	// dropping the service.
	if x.GetVisibility() == workloadapi.Service_NAMESPACE {
		s.Visibility = "Namespace"
	}
	return s, nil
}

func enumName[E comparable](names map[E]string, v E, what string) (string, error) {
	n, ok := names[v]
	if !ok {
		return "", fmt.Errorf("unknown %s %v", what, v)
	}
	return n, nil
}

// The names ztunnel's config dump uses for these enums.
var (
	lbScopes = map[workloadapi.LoadBalancing_Scope]string{
		workloadapi.LoadBalancing_REGION:  "Region",
		workloadapi.LoadBalancing_ZONE:    "Zone",
		workloadapi.LoadBalancing_SUBZONE: "Subzone",
		workloadapi.LoadBalancing_NODE:    "Node",
		workloadapi.LoadBalancing_CLUSTER: "Cluster",
		workloadapi.LoadBalancing_NETWORK: "Network",
	}
	lbModes = map[workloadapi.LoadBalancing_Mode]string{
		workloadapi.LoadBalancing_UNSPECIFIED_MODE: "Standard",
		workloadapi.LoadBalancing_STRICT:           "Strict",
		workloadapi.LoadBalancing_FAILOVER:         "Failover",
		workloadapi.LoadBalancing_PASSTHROUGH:      "Passthrough",
	}
	lbHealth = map[workloadapi.LoadBalancing_HealthPolicy]string{
		workloadapi.LoadBalancing_ONLY_HEALTHY: "OnlyHealthy",
		workloadapi.LoadBalancing_ALLOW_ALL:    "AllowAll",
	}
	ipFamilies = map[workloadapi.IPFamilies]string{
		workloadapi.IPFamilies_AUTOMATIC: "",
		workloadapi.IPFamilies_IPV4_ONLY: "IPv4",
		workloadapi.IPFamilies_IPV6_ONLY: "IPv6",
		workloadapi.IPFamilies_DUAL:      "Dual",
	}
)
