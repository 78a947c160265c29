package model

import (
	"fmt"
	"net/netip"

	"istio.io/istio/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
)

// service translates a Kubernetes Service (never ExternalName; newBuilder
// drops those). Headless services are kept with no addresses, as Istio does:
// their pods still list them in Workload.services.
func (b *builder) service(s *corev1.Service) *workloadapi.Service {
	var addrs []*workloadapi.NetworkAddress
	for _, ip := range ServiceVIPs(s) {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			b.problem("Service", s.Namespace, s.Name, fmt.Sprintf("cluster IP %q is not an IP address; service skipped", ip))
			return nil
		}
		addrs = append(addrs, b.networkAddress(a))
	}
	ports := make([]*workloadapi.Port, 0, len(s.Spec.Ports))
	for _, p := range s.Spec.Ports {
		// A named target port is 0 here; each workload resolves it.
		ports = append(ports, &workloadapi.Port{ServicePort: uint32(p.Port), TargetPort: uint32(p.TargetPort.IntVal)})
	}
	ws := &workloadapi.Service{
		Name:       s.Name,
		Namespace:  s.Namespace,
		Hostname:   ServiceHostname(s.Name, s.Namespace, b.cfg.DomainSuffix),
		Addresses:  addrs,
		Ports:      ports,
		IpFamilies: ipFamilies(s.Spec.IPFamilies),
		// A Kubernetes Service is always canonical for its hostname (Istio's constructService).
		Canonical: true,
	}
	if !b.isWaypointService(s.ObjectMeta) {
		ws.Waypoint = b.waypointFor("Service", s.ObjectMeta, serviceTraffic)
	}
	return ws
}

// ServiceVIPs returns the cluster IPs of s, primary first, without "None"
// (headless).
func ServiceVIPs(s *corev1.Service) []string {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	return out
}

func ipFamilies(f []corev1.IPFamily) workloadapi.IPFamilies {
	switch {
	case len(f) == 2:
		return workloadapi.IPFamilies_DUAL
	case len(f) == 1 && f[0] == corev1.IPv4Protocol:
		return workloadapi.IPFamilies_IPV4_ONLY
	case len(f) == 1:
		return workloadapi.IPFamilies_IPV6_ONLY
	default:
		return workloadapi.IPFamilies_AUTOMATIC
	}
}
