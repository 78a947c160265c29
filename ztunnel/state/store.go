package state

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ambientlite/mesh/internal/xdsclient"
)

// The type URLs the handlers are registered for (wildcard watches).
const (
	AddressTypeURL       = "type.googleapis.com/istio.workload.Address"
	AuthorizationTypeURL = "type.googleapis.com/istio.security.Authorization"
)

// Config configures a Store. The zero value works.
type Config struct {
	// Network is the network of this ztunnel (Istio's NETWORK): where
	// SourceWorkload and Check look addresses up. Default "" (the default
	// network).
	Network string
	// Node is the Kubernetes node this ztunnel runs on. SourceWorkload
	// prefers a workload of this node when several share an address.
	// Default "": no preference.
	Node string
	// HBONEPort is the port HBONE tunnels to workloads are opened on.
	// Default DefaultHBONEPort (15008).
	HBONEPort uint16
}

// Store is ztunnel's state of the mesh. Its methods are safe for
// concurrent use; reads never block.
type Store struct {
	cfg  Config
	cur  atomic.Pointer[view]
	mu   sync.Mutex // serializes writers
	chMu sync.Mutex
	ch   chan struct{}
}

// New returns an empty Store.
func New(cfg Config) *Store {
	if cfg.HBONEPort == 0 {
		cfg.HBONEPort = DefaultHBONEPort
	}
	s := &Store{cfg: cfg, ch: make(chan struct{})}
	s.cur.Store(emptyView())
	return s
}

// AddressHandler is the xdsclient handler of istio.workload.Address (a
// wildcard watch): it applies ApplyAddresses to each response.
func (s *Store) AddressHandler() xdsclient.Handler {
	return xdsclient.Typed(s.ApplyAddresses)
}

// AuthorizationHandler is the xdsclient handler of
// istio.security.Authorization (a wildcard watch): it applies
// ApplyAuthorizations to each response.
func (s *Store) AuthorizationHandler() xdsclient.Handler {
	return xdsclient.Typed(s.ApplyAuthorizations)
}

// ApplyAddresses applies one response of Address resources: removals
// first, then upserts, published at once. A resource that cannot be read
// is left out (its previous content, if any, stays) and named in the
// returned xdsclient.Rejections; a removal of a name not held is ignored.
func (s *Store) ApplyAddresses(upserts []xdsclient.TypedResource[*workloadapi.Address], removals []string) error {
	type item struct {
		w *Workload
		s *Service
	}
	// Convert first: a bad resource only rejects itself.
	var bad xdsclient.Rejections
	items := make([]item, 0, len(upserts))
	for _, r := range upserts {
		var it item
		var err error
		switch a := r.Message.GetType().(type) {
		case *workloadapi.Address_Workload:
			it.w, err = convertWorkload(r.Name, a.Workload)
		case *workloadapi.Address_Service:
			it.s, err = convertService(r.Name, a.Service)
		default:
			err = errors.New("address is neither a workload nor a service")
		}
		if err != nil {
			bad = append(bad, xdsclient.Rejection{Name: r.Name, Err: err})
			continue
		}
		items = append(items, it)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	e := newEditor(s.cur.Load())
	for _, name := range removals {
		if !e.removeWorkload(name) {
			e.removeService(name)
		}
	}
	for _, it := range items {
		if it.w != nil {
			e.insertWorkload(it.w)
		} else {
			e.insertService(it.s)
		}
	}
	s.publish(e.finish())
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// ApplyAuthorizations applies one response of Authorization resources,
// keyed by resource name as ztunnel keys them; a resource that cannot be
// read is rejected by name and keeps its previous content.
func (s *Store) ApplyAuthorizations(upserts []xdsclient.TypedResource[*security.Authorization], removals []string) error {
	var bad xdsclient.Rejections
	conv := make(map[string]*Policy, len(upserts))
	for _, r := range upserts {
		p, err := convertPolicy(r.Message)
		if err != nil {
			bad = append(bad, xdsclient.Rejection{Name: r.Name, Err: err})
			continue
		}
		conv[r.Name] = p
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	next := maps.Clone(cur.policies)
	for _, name := range removals {
		delete(next, name)
	}
	maps.Copy(next, conv)
	s.publish(cur.withPolicies(next))
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// publish makes v current and wakes Changed's waiters.
func (s *Store) publish(v *view) {
	s.cur.Store(v)
	s.chMu.Lock()
	close(s.ch)
	s.ch = make(chan struct{})
	s.chMu.Unlock()
}

// Changed returns a channel closed when the next response (of either type)
// has been applied. The proxy uses it to re-check open connections against
// new policies, as ztunnel does.
func (s *Store) Changed() <-chan struct{} {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	return s.ch
}

// Workload returns the workload with uid, or nil.
func (s *Store) Workload(uid string) *Workload { return s.cur.Load().workloads[uid] }

// WorkloadByAddress returns the workload with ip on network, or nil. When
// several share it, ztunnel's choice: pods first, then HBONE workloads, then
// the last received. Host-network workloads are never returned.
func (s *Store) WorkloadByAddress(network string, ip netip.Addr) *Workload {
	return s.cur.Load().workloadAt(addrKey(network, ip))
}

// SourceWorkload returns the workload with ip on Config.Network, preferring
// one on Config.Node: how ztunnel identifies a local pod by its address.
// Nil if there is none.
func (s *Store) SourceWorkload(ip netip.Addr) *Workload {
	v := s.cur.Load()
	a := addrKey(s.cfg.Network, ip)
	if s.cfg.Node != "" {
		var local *Workload
		for _, w := range v.byAddr[a] {
			if w.Node == s.cfg.Node && (local == nil || w.rank() >= local.rank()) {
				local = w
			}
		}
		if local != nil {
			return local
		}
	}
	return v.workloadAt(a)
}

// WorkloadsOnNode returns the workloads on node, sorted by uid.
func (s *Store) WorkloadsOnNode(node string) []*Workload {
	return slices.Clone(s.cur.Load().byNode[node])
}

// Service returns the service "<namespace>/<hostname>", or nil.
func (s *Store) Service(key string) *Service { return s.cur.Load().services[key] }

// ServiceByVIP returns the service with vip on network for a client in
// namespace clientNS ("" when unknown; it decides between services of
// several namespaces sharing a VIP, and hides namespace-visible services
// of other namespaces). Nil if none.
func (s *Store) ServiceByVIP(network string, vip netip.Addr, clientNS string) *Service {
	return s.cur.Load().serviceAt(addrKey(network, vip), clientNS)
}

// Endpoints returns the endpoints of the service "<namespace>/<hostname>",
// healthy or not, sorted by workload uid: the workloads whose services map
// names it. They are kept even before the service itself arrives.
func (s *Store) Endpoints(key string) []Endpoint {
	if set := s.cur.Load().endpoints[key]; set != nil {
		return slices.Clone(set.all)
	}
	return nil
}

// Policy returns the policy held under the resource name ("<ns>/<name>"),
// or nil.
func (s *Store) Policy(name string) *Policy { return s.cur.Load().policies[name] }

// NamespacePolicies returns the NAMESPACE-scoped policies of ns, sorted by
// key.
func (s *Store) NamespacePolicies(ns string) []*Policy {
	return slices.Clone(s.cur.Load().nsPolicies[ns])
}

// GlobalPolicies returns the GLOBAL policies, sorted by key.
func (s *Store) GlobalPolicies() []*Policy { return slices.Clone(s.cur.Load().global) }

// PoliciesFor returns the policies that apply to w, enforced and dry-run:
// the NAMESPACE ones of its namespace, the GLOBAL ones, and the ones it
// names in authorization_policies that the store holds.
func (s *Store) PoliciesFor(w *Workload) []*Policy {
	var out []*Policy
	s.cur.Load().policiesFor(w, func(p *Policy) { out = append(out, p) })
	return out
}
