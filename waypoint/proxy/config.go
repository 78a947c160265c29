package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync/atomic"

	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/waypoint/authz"
	"github.com/ambientlite/mesh/waypoint/router"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// The waypoint's configuration comes from istiod-lite over one delta ADS
// stream with three wildcard types:
//
//   - istio.workload.Address (workloads and services, as ztunnel gets them)
//     into a ztunnel/state.Store: where a service's endpoints are and who
//     they are;
//   - ambientlite.route.v1.ServiceRoutes into a routeTable: the compiled
//     routes of every Service with routes;
//   - ambientlite.route.v1.WaypointPolicy into a policyTable: the L7
//     AuthorizationPolicies (targetRefs to a waypoint Gateway or a Service),
//     applied per request before routing.
//
// Routes are taken by wildcard: the table answers only for the VIPs whose
// tunnels reach this waypoint, and a wildcard type keeps the first-config
// readiness meaningful (named types do not count in xdsclient's Synced).

// routeTable holds the router.Table in use. Each ServiceRoutes response
// builds the next table from the current one (router.Update) and swaps it
// in atomically; resources that do not compile keep their last good version
// (the router's rule) and are NACKed by name; requests read the table with
// one atomic load.
type routeTable struct {
	cur      atomic.Pointer[router.Table]
	received atomic.Bool // a response was applied
	log      *slog.Logger
	m        *metrics
	// update is router.Update (tests replace it).
	update func(prev *router.Table, upserts map[string]*routeapi.ServiceRoutes, removed []string) (*router.Table, []router.Problem)
}

func newRouteTable(log *slog.Logger, m *metrics) *routeTable {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &routeTable{log: log, m: m, update: router.Update}
}

// lookup returns the routes of a tunnel's destination (service VIP:port),
// nil when there are none.
func (rt *routeTable) lookup(dst netip.AddrPort) *router.Port {
	t := rt.cur.Load()
	if t == nil {
		return nil
	}
	return t.Lookup(dst)
}

// handler is the xdsclient handler of ServiceRoutes.
func (rt *routeTable) handler() xdsclient.Handler { return xdsclient.Typed(rt.apply) }

// apply builds and installs the table that follows a response.
func (rt *routeTable) apply(ups []xdsclient.TypedResource[*routeapi.ServiceRoutes], removed []string) (err error) {
	defer rt.received.Store(true)
	prev := rt.cur.Load()
	if prev == nil && len(ups) == 0 {
		return nil // no routes at all: nothing to build
	}
	upserts := make(map[string]*routeapi.ServiceRoutes, len(ups))
	for _, u := range ups {
		upserts[u.Name] = u.Message
	}
	defer func() {
		if p := recover(); p != nil {
			// A router bug must not take the waypoint down: keep the last
			// good table and NACK the response.
			rt.m.panics.Inc()
			rt.m.routeUpdates.WithLabelValues("failed").Inc()
			rt.log.Error("route update failed; keeping the last good routes", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("route update failed: %v", p)
		}
	}()
	next, problems := rt.update(prev, upserts, removed)
	if next == nil {
		rt.m.routeUpdates.WithLabelValues("failed").Inc()
		return errors.New("route update produced no table")
	}
	rt.cur.Store(next)
	if len(problems) == 0 {
		rt.m.routeUpdates.WithLabelValues("applied").Inc()
		rt.log.Info("routes updated", "upserts", slices.Sorted(maps.Keys(upserts)), "removed", removed)
		return nil
	}
	rt.m.routeUpdates.WithLabelValues("partial").Inc()
	rejected := make(xdsclient.Rejections, 0, len(problems))
	for _, p := range problems {
		rt.m.routeProblems.Inc()
		rt.log.Warn("route resource rejected; its last good version (if any) stays in use", "resource", p.Resource, "err", p.Err)
		rejected = append(rejected, xdsclient.Rejection{Name: p.Resource, Err: p.Err})
	}
	return rejected
}

// configWatch registers the waypoint's types with xc: addresses into st,
// routes into rt. received reports whether both have had a response
// applied.
type configWatch struct {
	addresses atomic.Bool
	routes    *routeTable
	policies  *policyTable
}

func watchConfig(xc *xdsclient.Client, st *state.Store, rt *routeTable, pt *policyTable) (*configWatch, error) {
	cw := &configWatch{routes: rt, policies: pt}
	addrs := st.AddressHandler()
	err := xc.Watch(state.AddressTypeURL, func(ups []xdsclient.Resource, removed []string) error {
		defer cw.addresses.Store(true)
		return addrs(ups, removed)
	})
	if err != nil {
		return nil, err
	}
	if err := xc.Watch(routeapi.TypeURL, rt.handler()); err != nil {
		return nil, err
	}
	if err := xc.Watch(routeapi.PolicyTypeURL, pt.handler()); err != nil {
		return nil, err
	}
	return cw, nil
}

// received reports whether the first configuration has arrived: a response
// of each type applied, even if some resources in it were rejected (one bad
// resource elsewhere in the mesh must not keep every waypoint unready; the
// rejection shows as a NACK at istiod-lite and in the logs).
func (cw *configWatch) received() bool {
	return cw.addresses.Load() && cw.routes.received.Load() && cw.policies.received.Load()
}

// policyTable holds the waypoint's L7 authorization policies
// (ambientlite.route.v1.WaypointPolicy, wildcard). Every response rebuilds
// the compiled set from all resources held; authz.Compile never weakens a
// policy it cannot use as written, so every resource is applied (its
// problems are logged and counted, not NACKed: istiod-lite reports them on
// the policy already).
type policyTable struct {
	cur      atomic.Pointer[authz.Policies]
	received atomic.Bool
	held     map[string]*routeapi.WaypointPolicy // only touched by the xDS handler
	log      *slog.Logger
	m        *metrics
}

func newPolicyTable(log *slog.Logger, m *metrics) *policyTable {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &policyTable{held: map[string]*routeapi.WaypointPolicy{}, log: log, m: m}
}

func (pt *policyTable) handler() xdsclient.Handler { return xdsclient.Typed(pt.apply) }

func (pt *policyTable) apply(ups []xdsclient.TypedResource[*routeapi.WaypointPolicy], removed []string) error {
	defer pt.received.Store(true)
	for _, n := range removed {
		delete(pt.held, n)
	}
	for _, u := range ups {
		pt.held[u.Name] = u.Message
	}
	all := make([]*routeapi.WaypointPolicy, 0, len(pt.held))
	for _, n := range slices.Sorted(maps.Keys(pt.held)) {
		all = append(all, pt.held[n])
	}
	compiled, problems := authz.Compile(all)
	pt.cur.Store(compiled)
	for _, p := range problems {
		pt.m.policyProblems.Inc()
		pt.log.Warn("authorization policy applied in a stricter form than written", "err", p)
	}
	pt.log.Info("authorization policies updated", "upserts", len(ups), "removed", removed, "policies", compiled.Len())
	return nil
}

// authorize is dataPlaneConfig.Authorize for the waypoint of Gateway
// gwNamespace/gwName: the request is checked against the policies that
// target the Gateway or the Service addressed.
func (pt *policyTable) authorize(gwNamespace, gwName string) func(context.Context, *http.Request, *caller) error {
	return func(_ context.Context, r *http.Request, c *caller) error {
		p := pt.cur.Load()
		if p.Len() == 0 {
			return nil
		}
		req := authz.Request{
			GatewayNamespace: gwNamespace, GatewayName: gwName,
			SourceNamespace: c.Identity.Namespace,
			DestinationIP:   c.Destination.Addr(), DestinationPort: c.Destination.Port(),
			Method: r.Method, Host: r.Host, Path: r.URL.EscapedPath(), Header: r.Header,
		}
		if c.Identity.ServiceAccount != "" {
			req.SourcePrincipal = c.Identity.String()
		}
		if c.Service != nil {
			req.ServiceHostname = c.Service.Hostname
		}
		if c.Addr.IsValid() {
			req.SourceIP = c.Addr.Addr()
		} else if c.Workload != nil && len(c.Workload.Addresses) > 0 {
			req.SourceIP = c.Workload.Addresses[0]
		}
		if ok, policy := p.Check(req); !ok {
			if policy == "" {
				return errors.New("denied: no ALLOW policy matched")
			}
			return fmt.Errorf("denied by %s", policy)
		}
		return nil
	}
}
