package state

import "net/netip"

// WaypointDestination resolves ip:port as a waypoint forwards traffic it
// received for that address: like DestinationFor, except that the waypoints
// of the service or workload addressed are never used, because the caller is
// that waypoint (or was chosen by a route in its place). A service VIP
// (visible to a client of clientNS, "" when unknown) goes to one of its
// endpoints, a workload IP to that workload, anything else is Passthrough.
func (s *Store) WaypointDestination(network string, ip netip.Addr, port uint16, clientNS string) (Destination, error) {
	v := s.cur.Load()
	dialed := netip.AddrPortFrom(ip.Unmap(), port)
	r := resolver{s: s, v: v, network: network, ns: clientNS, dialed: dialed}
	key := addrKey(network, ip)
	if svc := v.serviceAt(key, clientNS); svc != nil {
		if svc.passthrough() {
			return Destination{Kind: Passthrough, Address: dialed, Service: svc}, nil
		}
		return r.fromService(svc, port)
	}
	if w := v.workloadAt(key); w != nil {
		return r.direct(w, nil, port)
	}
	return Destination{Kind: Passthrough, Address: dialed}, nil
}

// ServiceDestination resolves port of the service key ("<ns>/<hostname>")
// to one of its endpoints, as WaypointDestination does for the service's
// VIP: the route backends of a waypoint name services, not addresses. A
// service the store does not hold fails with ErrNoHealthyEndpoint.
func (s *Store) ServiceDestination(network, key string, port uint16) (Destination, error) {
	v := s.cur.Load()
	svc := v.services[key]
	r := resolver{s: s, v: v, network: network}
	if svc == nil {
		return Destination{}, r.fail(ErrNoHealthyEndpoint, "service %s not found", key)
	}
	r.ns = svc.Namespace
	for _, vip := range svc.VIPs {
		if vip.Network == network {
			r.dialed = netip.AddrPortFrom(vip.Address, port)
			break
		}
	}
	if svc.passthrough() {
		if !r.dialed.IsValid() {
			return Destination{}, r.fail(ErrNoAddress, "passthrough service %s has no VIP on network %q", key, network)
		}
		return Destination{Kind: Passthrough, Address: r.dialed, Service: svc}, nil
	}
	return r.fromService(svc, port)
}
