package route

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/ambientlite/mesh/internal/routeapi"

	"github.com/ambientlite/mesh/istiod-lite/model"
)

// setKey identifies a RuleSet: the routes of one Service port that apply to
// one group of clients (a consumer namespace, or "" for producer routes).
type setKey struct {
	svc   nsName
	port  int32
	group string
}

// tables builds one ServiceRoutes per Service with attached routes. routes
// are in precedence order, and so are the attachments collected from them.
func (c *compiler) tables(routes []*route) []*routeapi.ServiceRoutes {
	sets := map[setKey][]*attachment{}
	var keys []setKey
	for _, r := range routes {
		for _, p := range r.parents {
			for _, a := range p.atts {
				if a.duplicate {
					continue
				}
				k := setKey{nsName{p.svc.Namespace, p.svc.Name}, a.port.Port, a.group}
				if sets[k] == nil {
					keys = append(keys, k)
				}
				sets[k] = append(sets[k], a)
			}
		}
	}

	// GEP-1294: of several route kinds on one Service port, GRPCRoute wins
	// over HTTPRoute.
	for _, k := range keys {
		atts := sets[k]
		if !slices.ContainsFunc(atts, func(a *attachment) bool { return a.route.kind == KindGRPCRoute }) {
			continue
		}
		kept := atts[:0]
		for _, a := range atts {
			if a.route.kind == KindGRPCRoute {
				kept = append(kept, a)
				continue
			}
			a.conflicted = true
			c.routeProblem(a.route, fmt.Sprintf("not applied to port %d of Service %s/%s: GRPCRoutes attached there take precedence (GEP-1294)",
				k.port, k.svc.namespace, k.svc.name))
		}
		sets[k] = kept
	}

	bySvc := map[nsName]*routeapi.ServiceRoutes{}
	for _, k := range keys {
		atts := sets[k]
		svc := atts[0].parent.svc
		t := bySvc[k.svc]
		if t == nil {
			t = c.emptyTable(svc)
			bySvc[k.svc] = t
		}
		pr := portRoutes(t, k.port)
		rs := c.ruleSet(atts, k)
		if k.group == "" {
			pr.Producer = rs
		} else {
			pr.Consumers = append(pr.Consumers, rs)
		}
	}
	out := make([]*routeapi.ServiceRoutes, 0, len(bySvc))
	for _, t := range bySvc {
		for _, p := range t.Ports {
			slices.SortFunc(p.Consumers, func(a, b *routeapi.RuleSet) int { return cmp.Compare(a.Namespace, b.Namespace) })
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *routeapi.ServiceRoutes) int { return cmp.Compare(a.ResourceName(), b.ResourceName()) })
	return out
}

// emptyTable is the ServiceRoutes of svc with every TCP port and no rules.
func (c *compiler) emptyTable(svc *corev1.Service) *routeapi.ServiceRoutes {
	t := &routeapi.ServiceRoutes{
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Hostname:  serviceHostname(svc.Name, svc.Namespace, c.cfg.DomainSuffix),
		Addresses: model.ServiceVIPs(svc),
	}
	for _, sp := range svc.Spec.Ports {
		proto, ok := portProtocol(sp)
		if !ok || slices.ContainsFunc(t.Ports, func(p *routeapi.PortRoutes) bool { return p.Port == uint32(sp.Port) }) {
			continue
		}
		t.Ports = append(t.Ports, &routeapi.PortRoutes{Port: uint32(sp.Port), Name: sp.Name, Protocol: proto})
	}
	slices.SortFunc(t.Ports, func(a, b *routeapi.PortRoutes) int { return cmp.Compare(a.Port, b.Port) })
	return t
}

func portRoutes(t *routeapi.ServiceRoutes, port int32) *routeapi.PortRoutes {
	for _, p := range t.Ports {
		if p.Port == uint32(port) {
			return p
		}
	}
	panic(fmt.Sprintf("route: port %d missing from the table of %s", port, t.ResourceName()))
}

// ruleSet merges the rules of atts (in route precedence order) and sorts
// their matches: by match precedence, then the route's age and
// "<namespace>/<name>", then rule order within the route, then match order.
func (c *compiler) ruleSet(atts []*attachment, k setKey) *routeapi.RuleSet {
	rs := &routeapi.RuleSet{Namespace: k.group}
	type entry struct {
		m         *routeapi.Match
		prec      precedence
		route     *route
		rule, pos int
	}
	var entries []entry
	for _, a := range atts {
		r := a.route
		ctx := applyCtx{routeKind: r.kind, routeNS: r.namespace, parentNS: a.parent.namespace, port: k.port}
		for i, t := range r.rules {
			if t.drop != nil {
				continue
			}
			rule, errs := c.instantiate(t, ctx)
			c.refErrs[refKey{t, ctx.parentNS}] = errs
			idx := uint32(len(rs.Rules))
			rs.Rules = append(rs.Rules, rule)
			for j, mt := range t.matches {
				m := proto.CloneOf(mt.match)
				m.Rule = idx
				entries = append(entries, entry{m: m, prec: mt.prec, route: r, rule: i, pos: j})
			}
		}
	}
	slices.SortStableFunc(entries, func(a, b entry) int {
		return cmp.Or(
			comparePrecedence(a.prec, b.prec),
			compareRoutes(a.route, b.route),
			cmp.Compare(a.rule, b.rule),
			cmp.Compare(a.pos, b.pos),
		)
	})
	for _, e := range entries {
		rs.Matches = append(rs.Matches, e.m)
	}
	return rs
}
