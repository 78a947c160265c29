package state

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
)

// view is one immutable state of the store. Readers load the current view
// with one atomic load and never lock; the writer builds the next view
// from the current one (cloning the maps it changes, never mutating what a
// reader may hold) and publishes it.
type view struct {
	// workloads by uid (= their Address resource name).
	workloads map[string]*Workload
	// byAddr: workloads by (network, IP), in insertion order; host-network
	// workloads are not indexed (as in ztunnel).
	byAddr map[NetworkAddress][]*Workload
	// byNode: workloads by node, sorted by uid.
	byNode map[string][]*Workload

	// services by "<ns>/<hostname>" (= their resource name).
	services map[string]*Service
	// byVIP: services by (network, VIP), in insertion order, one per
	// namespace.
	byVIP    map[NetworkAddress][]*Service
	cidrVIPs []cidrVIP
	// endpoints by service key, sorted by workload uid. They are kept for
	// keys whose service has not arrived (yet): workloads and services come
	// in any order (ztunnel's staged services).
	endpoints map[string]*endpointSet

	// policies by resource name.
	policies map[string]*Policy
	// nsPolicies: NAMESPACE-scoped policies by namespace, global: GLOBAL
	// ones; each sorted by key.
	nsPolicies map[string][]*Policy
	global     []*Policy
}

type cidrVIP struct {
	NetworkPrefix
	svc *Service
}

// endpointSet is a service's endpoints, precomputed for selection.
type endpointSet struct {
	all     []Endpoint // sorted by workload uid
	healthy []Endpoint // those with status HEALTHY, same order
}

func emptyView() *view {
	return &view{
		workloads:  map[string]*Workload{},
		byAddr:     map[NetworkAddress][]*Workload{},
		byNode:     map[string][]*Workload{},
		services:   map[string]*Service{},
		byVIP:      map[NetworkAddress][]*Service{},
		endpoints:  map[string]*endpointSet{},
		policies:   map[string]*Policy{},
		nsPolicies: map[string][]*Policy{},
	}
}

// workloadAt returns the workload at (network, ip): of several, ztunnel's
// choice (pods before other kinds, then HBONE; the last inserted of equal
// rank).
func (v *view) workloadAt(a NetworkAddress) *Workload {
	ws := v.byAddr[a]
	var best *Workload
	for _, w := range ws {
		if best == nil || w.rank() >= best.rank() {
			best = w
		}
	}
	return best
}

// serviceAt returns the service with VIP a for a client in namespace ns
// ("" when unknown), as ztunnel's get_best_by_vip: among the visible ones,
// the client's namespace first, then a canonical one, then the first; then
// CIDR VIPs (namespace, longest prefix, canonical).
func (v *view) serviceAt(a NetworkAddress, ns string) *Service {
	var canonical, first *Service
	for _, s := range v.byVIP[a] {
		if !s.visibleTo(ns) {
			continue
		}
		if ns != "" && s.Namespace == ns {
			return s
		}
		if s.Canonical {
			canonical = s
		} else if first == nil {
			first = s
		}
	}
	if canonical != nil {
		return canonical
	}
	if first != nil {
		return first
	}
	if len(v.cidrVIPs) == 0 {
		return nil
	}
	var best *Service
	var bestRank [3]int
	for _, c := range v.cidrVIPs {
		if c.Network != a.Network || !c.Prefix.Contains(a.Address) || !c.svc.visibleTo(ns) {
			continue
		}
		r := [3]int{b2i(ns != "" && c.svc.Namespace == ns), c.Prefix.Bits(), b2i(c.svc.Canonical)}
		if best == nil || slices.Compare(r[:], bestRank[:]) > 0 {
			best, bestRank = c.svc, r
		}
	}
	return best
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// policiesFor calls fn with each policy, enforced or dry-run, that applies
// to w, in ztunnel's order: the namespace's, the global ones, then those w
// names (a name not held is skipped, as ztunnel does).
func (v *view) policiesFor(w *Workload, fn func(*Policy)) {
	for _, p := range v.nsPolicies[w.Namespace] {
		fn(p)
	}
	for _, p := range v.global {
		fn(p)
	}
	for _, name := range w.AuthorizationPolicies {
		if p := v.policies[name]; p != nil {
			fn(p)
		}
	}
}

// editor applies one response to a copy of a view. The copy shares every
// index with the current view until the editor first writes to it; then
// that index (only) is cloned, so a response that changes one workload does
// not copy the service indexes, and the reverse.
type editor struct {
	v     *view
	owned map[string]bool // indexes cloned already, by name
	// Touched endpoint sets (service key → uid → endpoint) and node lists
	// (node → uid → workload), rebuilt once each at the end of the
	// response, so a response of N workloads costs O(N), not O(N²).
	eps   map[string]map[string]Endpoint
	nodes map[string]map[string]*Workload
}

func newEditor(cur *view) *editor {
	n := *cur
	return &editor{v: &n, owned: map[string]bool{}, eps: map[string]map[string]Endpoint{}, nodes: map[string]map[string]*Workload{}}
}

// own clones the index name of the edited view the first time.
func own[M ~map[K]V, K comparable, V any](e *editor, name string, m *M) M {
	if !e.owned[name] {
		*m = maps.Clone(*m)
		e.owned[name] = true
	}
	return *m
}

func (e *editor) removeWorkload(uid string) bool {
	old := e.v.workloads[uid]
	if old == nil {
		return false
	}
	delete(own(e, "workloads", &e.v.workloads), uid)
	if !old.HostNetwork {
		byAddr := own(e, "byAddr", &e.v.byAddr)
		for _, ip := range old.Addresses {
			a := NetworkAddress{old.Network, ip}
			rest := slices.DeleteFunc(slices.Clone(byAddr[a]), func(w *Workload) bool { return w.UID == uid })
			if len(rest) == 0 {
				delete(byAddr, a)
			} else {
				byAddr[a] = rest
			}
		}
	}
	delete(e.nodeOf(old.Node), uid)
	for key := range old.Services {
		delete(e.endpointsOf(key), uid)
	}
	return true
}

func (e *editor) insertWorkload(w *Workload) {
	e.removeWorkload(w.UID)
	e.removeService(w.UID) // a name is one kind of resource at a time
	own(e, "workloads", &e.v.workloads)[w.UID] = w
	if !w.HostNetwork {
		byAddr := own(e, "byAddr", &e.v.byAddr)
		for _, ip := range w.Addresses {
			a := NetworkAddress{w.Network, ip}
			byAddr[a] = append(slices.Clip(byAddr[a]), w)
		}
	}
	e.nodeOf(w.Node)[w.UID] = w
	for key, ports := range w.Services {
		e.endpointsOf(key)[w.UID] = Endpoint{Workload: w, Ports: ports}
	}
}

// endpointsOf returns the editable endpoints of a service key.
func (e *editor) endpointsOf(key string) map[string]Endpoint {
	if m, ok := e.eps[key]; ok {
		return m
	}
	m := map[string]Endpoint{}
	if cur := e.v.endpoints[key]; cur != nil {
		for _, ep := range cur.all {
			m[ep.Workload.UID] = ep
		}
	}
	e.eps[key] = m
	return m
}

// nodeOf returns the editable workloads of a node.
func (e *editor) nodeOf(node string) map[string]*Workload {
	if m, ok := e.nodes[node]; ok {
		return m
	}
	m := map[string]*Workload{}
	for _, w := range e.v.byNode[node] {
		m[w.UID] = w
	}
	e.nodes[node] = m
	return m
}

func (e *editor) removeService(key string) bool {
	old := e.v.services[key]
	if old == nil {
		return false
	}
	delete(own(e, "services", &e.v.services), key)
	byVIP := own(e, "byVIP", &e.v.byVIP)
	for _, a := range old.VIPs {
		rest := slices.DeleteFunc(slices.Clone(byVIP[a]), func(s *Service) bool { return s.Key() == key })
		if len(rest) == 0 {
			delete(byVIP, a)
		} else {
			byVIP[a] = rest
		}
	}
	if len(old.CIDRVIPs) > 0 {
		e.v.cidrVIPs = slices.DeleteFunc(slices.Clone(e.v.cidrVIPs), func(c cidrVIP) bool { return c.svc.Key() == key })
	}
	return true
}

func (e *editor) insertService(s *Service) {
	key := s.Key()
	e.removeService(key)
	e.removeWorkload(key)
	own(e, "services", &e.v.services)[key] = s
	byVIP := own(e, "byVIP", &e.v.byVIP)
	for _, a := range s.VIPs {
		list := slices.Clone(byVIP[a])
		// One service per namespace per VIP: a newer one of the same
		// namespace takes the old one's place (ztunnel's ServiceStore).
		if i := slices.IndexFunc(list, func(x *Service) bool { return x.Namespace == s.Namespace }); i >= 0 {
			list[i] = s
		} else {
			list = append(list, s)
		}
		byVIP[a] = list
	}
	for _, c := range s.CIDRVIPs {
		e.v.cidrVIPs = append(slices.Clip(e.v.cidrVIPs), cidrVIP{c, s})
	}
}

// finish freezes the touched endpoint sets and node lists into the view
// and returns it.
func (e *editor) finish() *view {
	if len(e.nodes) > 0 {
		byNode := own(e, "byNode", &e.v.byNode)
		for node, m := range e.nodes {
			if len(m) == 0 {
				delete(byNode, node)
				continue
			}
			byNode[node] = slices.SortedFunc(maps.Values(m), func(a, b *Workload) int { return cmp.Compare(a.UID, b.UID) })
		}
	}
	if len(e.eps) == 0 {
		return e.v
	}
	endpoints := own(e, "endpoints", &e.v.endpoints)
	for key, m := range e.eps {
		if len(m) == 0 {
			delete(endpoints, key)
			continue
		}
		set := &endpointSet{all: make([]Endpoint, 0, len(m))}
		for _, ep := range m {
			set.all = append(set.all, ep)
		}
		slices.SortFunc(set.all, func(a, b Endpoint) int { return cmp.Compare(a.Workload.UID, b.Workload.UID) })
		for _, ep := range set.all {
			if ep.Workload.Status == Healthy {
				set.healthy = append(set.healthy, ep)
			}
		}
		endpoints[key] = set
	}
	return e.v
}

// withPolicies returns a view sharing the address indexes of v, with the
// policies p and their scope indexes.
func (v *view) withPolicies(p map[string]*Policy) *view {
	n := *v
	n.policies = p
	n.nsPolicies = map[string][]*Policy{}
	n.global = nil
	for _, pol := range p {
		switch pol.Scope {
		case ScopeGlobal:
			n.global = append(n.global, pol)
		case ScopeNamespace:
			n.nsPolicies[pol.Namespace] = append(n.nsPolicies[pol.Namespace], pol)
		}
	}
	byKey := func(a, b *Policy) int { return cmp.Compare(a.Key(), b.Key()) }
	slices.SortFunc(n.global, byKey)
	for _, list := range n.nsPolicies {
		slices.SortFunc(list, byKey)
	}
	return &n
}

// addrKey is the index key of ip on network: IPv4-mapped IPv6 addresses
// are looked up as IPv4, as the kernel reports them.
func addrKey(network string, ip netip.Addr) NetworkAddress {
	return NetworkAddress{Network: network, Address: ip.Unmap()}
}
