// Package router is the waypoint's routing decision: the compiled route
// configuration from istiod-lite (internal/routeapi.ServiceRoutes) turned into
// an immutable Table that answers, for one HTTP request arriving in a tunnel
// to a service VIP:port from a client namespace, which Rule applies and what
// it does. It performs no I/O: the proxy (waypoint/proxy) serves the
// requests, forwards them, retries, mirrors and times out; this package only
// decides and rewrites.
//
// The order of use for one request:
//
//	port := table.Lookup(vipPort)          // nil: pass through
//	rs := port.RuleSet(clientNamespace)    // nil: pass through
//	router.NormalizePath(req)              // optional, Istio's default
//	rule := rs.Match(req)                  // nil: 404 (gRPC: UNIMPLEMENTED)
//	rule.CORS.Preflight(req, h)            // true: answer 204 with h
//	switch rule.Action { ... }             // Pick, RewriteRequest, RedirectTarget, ...
//
// Matching, rewriting and CORS follow the Gateway API (v1.6) as compiled by
// istiod-lite; README.md lists the choices the API leaves open.
package router

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Table is the routing of every Service the waypoint has routes for. It is
// immutable; a config change builds a new Table (Update) and the proxy swaps
// it atomically. A nil *Table has no routes.
type Table struct {
	resources map[string]*resource     // by resource name: the version in use
	byAddr    map[netip.Addr]*resource // VIP index
}

// resource is one compiled ServiceRoutes.
type resource struct {
	name  string
	src   *routeapi.ServiceRoutes
	addrs []netip.Addr
	ports []*Port // by Number
}

// Problem is a resource that could not be compiled (a regular expression Go
// rejects, a rule index out of range, ...). The resource's previous version
// is kept in the new Table (last good config); a resource never good is left
// out (its traffic passes through).
//
// A Problem whose Err wraps ErrAddressConflict is different: the resource
// is in the Table, but one of its addresses routes to another resource.
type Problem struct {
	// Resource is "<namespace>/<hostname>".
	Resource string
	Err      error
}

func (p Problem) String() string { return p.Resource + ": " + p.Err.Error() }

// ErrAddressConflict is wrapped by the Problem of a resource that lists an
// address another resource lists too. The resource whose name sorts first
// gets the address (a choice that does not depend on the order of updates);
// the others keep their other addresses. Reported on every Update that
// changes one of the resources involved, until the conflict is gone.
var ErrAddressConflict = errors.New("address is claimed by another resource")

// Update builds the Table that follows prev (nil: none) after the given
// changes: upserts by resource name ("<namespace>/<hostname>") and removals.
// Removals are applied first, so a name in both is upserted. The Table
// keeps the upserted messages: the caller must not modify them afterwards.
// Problems are sorted by resource name.
func Update(prev *Table, upserts map[string]*routeapi.ServiceRoutes, removed []string) (*Table, []Problem) {
	next := &Table{resources: make(map[string]*resource, prev.len()+len(upserts))}
	if prev != nil {
		maps.Copy(next.resources, prev.resources)
	}
	for _, name := range removed {
		delete(next.resources, name)
	}
	var problems []Problem
	for name, src := range upserts {
		res, err := compileResource(name, src)
		if err != nil {
			problems = append(problems, Problem{Resource: name, Err: err})
			continue // the previous version, if any, stays
		}
		next.resources[name] = res
	}
	problems = append(problems, next.index(upserts)...)
	slices.SortFunc(problems, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Resource, b.Resource), strings.Compare(a.Err.Error(), b.Err.Error()))
	})
	return next, problems
}

func (t *Table) len() int {
	if t == nil {
		return 0
	}
	return len(t.resources)
}

// index builds byAddr and reports the address conflicts that involve a
// resource in changed.
func (t *Table) index(changed map[string]*routeapi.ServiceRoutes) []Problem {
	t.byAddr = make(map[netip.Addr]*resource, len(t.resources))
	var contested []netip.Addr
	for _, res := range t.resources {
		for _, a := range res.addrs {
			cur, ok := t.byAddr[a]
			if ok {
				contested = append(contested, a)
			}
			if !ok || res.name < cur.name {
				t.byAddr[a] = res
			}
		}
	}
	if len(contested) == 0 {
		return nil
	}
	slices.SortFunc(contested, netip.Addr.Compare)
	contested = slices.Compact(contested)
	var problems []Problem
	for _, a := range contested {
		winner := t.byAddr[a]
		var claimants []string
		_, involved := changed[winner.name]
		for _, res := range t.resources {
			if res != winner && slices.Contains(res.addrs, a) {
				claimants = append(claimants, res.name)
				_, upserted := changed[res.name]
				involved = involved || upserted
			}
		}
		if !involved {
			continue
		}
		for _, name := range claimants {
			problems = append(problems, Problem{Resource: name,
				Err: fmt.Errorf("%w: %s is routed by %s", ErrAddressConflict, a, winner.name)})
		}
	}
	return problems
}

// Resource is the version in use of the named resource: the last one that
// compiled. Nil when there is none. It must not be modified.
func (t *Table) Resource(name string) *routeapi.ServiceRoutes {
	if t == nil || t.resources[name] == nil {
		return nil
	}
	return t.resources[name].src
}

// Names is the names of the resources in the Table, sorted.
func (t *Table) Names() []string {
	if t == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(t.resources))
}

// Port is the routing of one service port; nil from Lookup means no routes:
// pass the connection through.
type Port struct {
	Service   string // Service name
	Namespace string // Service namespace
	Hostname  string
	Number    uint32 // service port
	Name      string // service port name
	Protocol  routeapi.Protocol

	producer  *RuleSet
	consumers []*RuleSet // sorted by namespace
}

// Lookup finds the port for a tunnel's destination (the :authority VIP:port).
// An IPv4-mapped IPv6 address is looked up as IPv4; a zone is ignored. Every
// TCP port of a Service with routes is found, also those without rules (the
// proxy still learns their Protocol): RuleSet says whether rules apply.
func (t *Table) Lookup(dst netip.AddrPort) *Port {
	if t == nil {
		return nil
	}
	res := t.byAddr[dst.Addr().Unmap().WithZone("")]
	if res == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(res.ports, uint32(dst.Port()), func(p *Port, n uint32) int { return cmp.Compare(p.Number, n) })
	if !ok {
		return nil
	}
	return res.ports[i]
}

// RuleSet is the rules that apply to clients of one namespace on a port:
// the consumer set of that namespace, else the producer set. Nil: pass
// through (HTTP still proxied, to the Service itself). Always nil for a
// PROTOCOL_TCP port (rules never apply to opaque traffic) and for a nil Port.
func (p *Port) RuleSet(clientNamespace string) *RuleSet {
	if p == nil || p.Protocol == routeapi.Protocol_PROTOCOL_TCP {
		return nil
	}
	i, ok := slices.BinarySearchFunc(p.consumers, clientNamespace, func(rs *RuleSet, ns string) int { return strings.Compare(rs.namespace, ns) })
	if ok {
		return p.consumers[i]
	}
	return p.producer
}
