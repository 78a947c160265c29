package state

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Kind is what a dialed address resolved to.
type Kind uint8

const (
	// Passthrough: not a mesh destination (an unknown IP, or a service with
	// load balancing mode PASSTHROUGH): plain TCP to the original
	// destination.
	Passthrough Kind = iota
	// Direct: a workload, addressed by its IP or picked among a service's
	// endpoints.
	Direct
	// ViaWaypoint: the destination's waypoint, over HBONE with the dialed
	// address as :authority.
	ViaWaypoint
)

var kindNames = [...]string{"passthrough", "direct", "waypoint"}

func (k Kind) String() string { return kindNames[k] }

// Destination is where an outbound connection goes.
type Destination struct {
	Kind Kind
	// Protocol is HBONE when Address is an HBONE endpoint (a workload in
	// the mesh, always for a waypoint), TCP otherwise.
	Protocol Protocol
	// Address is what to connect to: the workload's IP and Config.HBONEPort
	// for HBONE, the workload's IP and target port for TCP, the waypoint's
	// IP and HBONE port, or the original destination for Passthrough.
	Address netip.AddrPort
	// Authority is the HBONE :authority: the workload's ip:target port, or
	// for a waypoint the address dialed (the service VIP:port or the
	// workload's ip:port). Zero unless Protocol is HBONE.
	Authority netip.AddrPort
	// Workload is the workload connected to: the endpoint, the workload
	// addressed, or the waypoint instance. Nil for Passthrough.
	Workload *Workload
	// Service is the service addressed (by its VIP), if any, also when the
	// connection goes to its waypoint.
	Service *Service
	// Identity is the identity the peer's certificate must carry (the
	// Workload's); SubjectAltNames are further identities accepted, from
	// the service the workload was picked from (the addressed service, or
	// the waypoint's service): ztunnel's service SANs.
	Identity        hbone.Identity
	SubjectAltNames []string
}

// Sentinel errors of DestinationFor, for errors.Is; the error is a
// *DestinationError.
var (
	// ErrNoHealthyEndpoint: the service has no healthy endpoint for the
	// port (or does not have the port).
	ErrNoHealthyEndpoint = errors.New("no healthy endpoint")
	// ErrUnknownWaypoint: the waypoint the destination names is not known
	// or has no healthy endpoint.
	ErrUnknownWaypoint = errors.New("waypoint not found")
	// ErrNoAddress: the workload picked has no address usable from here.
	ErrNoAddress = errors.New("workload has no usable address")
)

// DestinationError is why DestinationFor failed.
type DestinationError struct {
	// Err is one of ErrNoHealthyEndpoint, ErrUnknownWaypoint, ErrNoAddress.
	Err error
	// Dialed is the address asked for.
	Dialed netip.AddrPort
	// Detail says what was missing.
	Detail string
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.Dialed, e.Err, e.Detail)
}

func (e *DestinationError) Unwrap() error { return e.Err }

// resolveMode is ztunnel's ServiceResolutionMode.
type resolveMode uint8

const (
	standard resolveMode = iota
	waypointMode
)

// DestinationFor resolves a connection from src (the source workload; nil
// if unknown) to ip:port, dialed on network (the source's network), as
// ztunnel's outbound does (build_request in src/proxy/outbound.rs):
//
//   - a service VIP (preferring the client's namespace): if the service has
//     a waypoint, that waypoint (HBONE, authority = VIP:port); else if its
//     load balancing mode is PASSTHROUGH, Passthrough; else a random
//     healthy endpoint, weighted by capacity, that has the port, with the
//     port mapped to the endpoint's (or service's) target port; none →
//     ErrNoHealthyEndpoint;
//   - a workload IP: that workload, or its workload waypoint unless src is
//     an instance of that waypoint;
//   - anything else: Passthrough.
//
// Workloads in the mesh are reached over HBONE at Config.HBONEPort, others
// over plain TCP. Endpoints on other networks are not used (no network
// gateways here).
func (s *Store) DestinationFor(network string, ip netip.Addr, port uint16, src *Workload) (Destination, error) {
	v := s.cur.Load()
	dialed := netip.AddrPortFrom(ip.Unmap(), port)
	r := resolver{s: s, v: v, network: network, src: src, dialed: dialed}
	if src != nil {
		r.ns = src.Namespace
	}
	key := addrKey(network, ip)
	if svc := v.serviceAt(key, r.ns); svc != nil {
		if gw := pickWaypoint(svc); gw != nil {
			d, err := r.waypoint(gw)
			if err != nil {
				return Destination{}, err
			}
			d.Service = svc
			return d, nil
		}
		if svc.passthrough() {
			return Destination{Kind: Passthrough, Address: dialed}, nil
		}
		return r.fromService(svc, port)
	}
	if w := v.workloadAt(key); w != nil {
		if w.Waypoint != nil && !r.fromWaypoint(w.Waypoint) {
			return r.waypoint(w.Waypoint)
		}
		return r.direct(w, nil, port)
	}
	return Destination{Kind: Passthrough, Address: dialed}, nil
}

// resolver carries one DestinationFor call.
type resolver struct {
	s       *Store
	v       *view
	network string
	ns      string
	src     *Workload
	dialed  netip.AddrPort
}

func (r *resolver) fail(err error, format string, args ...any) error {
	return &DestinationError{Err: err, Dialed: r.dialed, Detail: fmt.Sprintf(format, args...)}
}

// pickWaypoint is the service's waypoint: one of the weighted waypoints,
// by weight, if there are any with weight, else Waypoint
// (sample_weighted_waypoint in src/state.rs).
func pickWaypoint(svc *Service) *GatewayAddress {
	var total uint64
	for _, ww := range svc.WeightedWaypoints {
		total += uint64(ww.Weight)
	}
	if total > 0 {
		n := rand.Uint64N(total)
		for _, ww := range svc.WeightedWaypoints {
			if n < uint64(ww.Weight) {
				return ww.Destination
			}
			n -= uint64(ww.Weight)
		}
	}
	return svc.Waypoint
}

// pick chooses an endpoint of svc for svcPort and its target port
// (find_upstream_from_service and load_balance in src/state.rs): healthy
// endpoints (all with health policy ALLOW_ALL) on the caller's network
// with an address; in standard mode the service must have the port and,
// when its target port is 0 (named), the endpoint must map it; in
// waypoint mode the port may be missing for application-tunnel workloads.
// The choice is random, weighted by capacity.
func (r *resolver) pick(svc *Service, svcPort uint16, mode resolveMode) (Endpoint, uint16, error) {
	failure := ErrNoHealthyEndpoint
	if mode == waypointMode {
		failure = ErrUnknownWaypoint
	}
	target, hasPort := svc.Ports[svcPort]
	if mode == standard && !hasPort {
		return Endpoint{}, 0, r.fail(failure, "service %s has no port %d", svc.Key(), svcPort)
	}
	var eps []Endpoint
	if set := r.v.endpoints[svc.Key()]; set != nil {
		eps = set.healthy
		if svc.allowsUnhealthy() {
			eps = set.all
		}
	}
	usable := func(ep Endpoint) bool {
		w := ep.Workload
		if len(w.Addresses) == 0 || w.Network != r.network {
			return false
		}
		if mode == standard {
			_, mapped := ep.Ports[svcPort]
			return target != 0 || mapped
		}
		return hasPort || w.ApplicationTunnel != nil
	}
	// Weighted random choice by capacity, without allocating.
	var total uint64
	for _, ep := range eps {
		if usable(ep) {
			total += uint64(ep.Workload.Capacity)
		}
	}
	if total == 0 {
		return Endpoint{}, 0, r.fail(failure, "service %s has no healthy endpoint for port %d", svc.Key(), svcPort)
	}
	n := rand.Uint64N(total)
	var ep Endpoint
	for _, e := range eps {
		if !usable(e) {
			continue
		}
		c := uint64(e.Workload.Capacity)
		if n < c {
			ep = e
			break
		}
		n -= c
	}
	port, mapped := ep.Ports[svcPort]
	switch {
	case mapped:
	case target > 0:
		port = target
	case ep.Workload.ApplicationTunnel != nil && ep.Workload.ApplicationTunnel.Port != 0:
		port = svcPort
	default:
		return Endpoint{}, 0, r.fail(failure, "service %s: endpoint %s has no target port for %d", svc.Key(), ep.Workload.UID, svcPort)
	}
	return ep, port, nil
}

// fromService is a service-addressed connection without waypoint: an
// endpoint, reached directly.
func (r *resolver) fromService(svc *Service, svcPort uint16) (Destination, error) {
	ep, port, err := r.pick(svc, svcPort, standard)
	if err != nil {
		return Destination{}, err
	}
	return r.direct(ep.Workload, svc, port)
}

// direct returns the destination of workload w at port (its target port),
// reached over HBONE when it is in the mesh (build_request's last case).
func (r *resolver) direct(w *Workload, svc *Service, port uint16) (Destination, error) {
	ip, err := r.pickIP(w, svc, r.dialed.Addr())
	if err != nil {
		return Destination{}, err
	}
	d := Destination{Kind: Direct, Protocol: w.Protocol, Workload: w, Service: svc, Identity: w.Identity()}
	if svc != nil {
		d.SubjectAltNames = svc.SubjectAltNames
	}
	target := netip.AddrPortFrom(ip, port)
	if w.Protocol == HBONE {
		d.Address = netip.AddrPortFrom(ip, r.s.cfg.HBONEPort)
		d.Authority = target
	} else {
		d.Address = target
	}
	return d, nil
}

// pickIP is the address of w to use: hint if it is w's, else one of the
// service's IP family restriction, preferring the family of hint
// (pick_workload_destination_or_resolve in src/state.rs; workloads known
// only by hostname are not resolved here).
func (r *resolver) pickIP(w *Workload, svc *Service, hint netip.Addr) (netip.Addr, error) {
	if w.HasAddress(hint) {
		return hint.Unmap(), nil
	}
	family := ""
	if svc != nil {
		family = svc.IPFamilies
	}
	var first netip.Addr
	for _, a := range w.Addresses {
		if (family == "IPv4" && !a.Is4()) || (family == "IPv6" && !a.Is6()) {
			continue
		}
		if a.Is6() == hint.Is6() {
			return a, nil
		}
		if !first.IsValid() {
			first = a
		}
	}
	if !first.IsValid() {
		return netip.Addr{}, r.fail(ErrNoAddress, "workload %s has no address for %s", w.UID, hint)
	}
	return first, nil
}

// waypoint resolves a waypoint address to one of its instances
// (fetch_waypoint in src/state.rs): a hostname names a service, of which an
// endpoint for the HBONE port is picked; an address is a service VIP
// (likewise) or a workload IP (that workload, at the HBONE port). The
// tunnel always uses HBONE, with the dialed address as authority.
func (r *resolver) waypoint(gw *GatewayAddress) (Destination, error) {
	var (
		svc  *Service
		w    *Workload
		port = gw.HBONEPort
		hint = r.dialed.Addr()
	)
	if gw.IsHostname() {
		svc = r.v.services[gw.Namespace+"/"+gw.Hostname]
	} else {
		key := addrKey(gw.Address.Network, gw.Address.Address)
		hint = gw.Address.Address
		if svc = r.v.serviceAt(key, r.ns); svc == nil {
			w = r.v.workloadAt(key)
		}
	}
	switch {
	case svc != nil:
		ep, p, err := r.pick(svc, gw.HBONEPort, waypointMode)
		if err != nil {
			return Destination{}, err
		}
		w, port = ep.Workload, p
	case w == nil:
		return Destination{}, r.fail(ErrUnknownWaypoint, "waypoint %s not found", gw)
	}
	ip, err := r.pickIP(w, svc, hint)
	if err != nil {
		return Destination{}, err
	}
	d := Destination{
		Kind:      ViaWaypoint,
		Protocol:  HBONE,
		Address:   netip.AddrPortFrom(ip, port),
		Authority: r.dialed,
		Workload:  w,
		Identity:  w.Identity(),
	}
	if svc != nil {
		d.SubjectAltNames = svc.SubjectAltNames
	}
	return d, nil
}

// fromWaypoint reports whether src is an instance of the waypoint gw
// (check_from_waypoint in src/proxy.rs): same identity and address as a
// workload of the waypoint.
func (r *resolver) fromWaypoint(gw *GatewayAddress) bool {
	if r.src == nil {
		return false
	}
	isSrc := func(w *Workload) bool {
		if w.Identity() != r.src.Identity() {
			return false
		}
		for _, a := range r.src.Addresses {
			if w.HasAddress(a) {
				return true
			}
		}
		return false
	}
	var svc *Service
	if gw.IsHostname() {
		svc = r.v.services[gw.Namespace+"/"+gw.Hostname]
	} else {
		key := addrKey(gw.Address.Network, gw.Address.Address)
		if w := r.v.workloadAt(key); w != nil {
			return isSrc(w)
		}
		svc = r.v.serviceAt(key, "")
	}
	if svc == nil {
		return false
	}
	if set := r.v.endpoints[svc.Key()]; set != nil {
		for _, ep := range set.all {
			if isSrc(ep.Workload) {
				return true
			}
		}
	}
	return false
}
