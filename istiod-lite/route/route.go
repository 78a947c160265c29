package route

import (
	"cmp"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/ambientlite/mesh/internal/routeapi"

	"github.com/ambientlite/mesh/istiod-lite/model"
)

// Route kinds, as written in Origin.kind, RouteStatus.Kind and Problems.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Snapshot is the set of Kubernetes objects one compilation reads. Objects
// may be in any order; nil entries are ignored.
type Snapshot struct {
	// Namespaces are read for their istio.io/use-waypoint label
	// (the ResolvedWaypoints condition).
	Namespaces []*corev1.Namespace
	// Services are parents (the frontends routes attach to) and backends.
	Services        []*corev1.Service
	HTTPRoutes      []*gatewayv1.HTTPRoute
	GRPCRoutes      []*gatewayv1.GRPCRoute
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
}

// Result is the compiled routing of a Snapshot.
type Result struct {
	// Tables has one ServiceRoutes per Service with at least one attached
	// route, sorted by resource name ("<namespace>/<hostname>"). A Service
	// without one is not routed by waypoints: its traffic passes through.
	Tables []*routeapi.ServiceRoutes
	// Statuses has one entry per route with at least one Service parentRef,
	// sorted by kind, namespace and name. Routes without one (e.g. only
	// Gateway parents) are not ours and get no entry.
	Statuses []RouteStatus
	// Problems lists what did not compile as written, sorted by object then
	// reason. Each is also visible in the status, except notes about parts
	// that were ignored.
	Problems []Problem
}

// RouteStatus is the status istiod-lite owns on one route: a
// RouteParentStatus for each of the route's Service parentRefs, in the
// order of spec.parentRefs. A status writer replaces the entries whose
// controllerName is Config.ControllerName with these (and removes such
// entries from routes that are not in Result.Statuses), merging conditions
// with meta.SetStatusCondition so that unchanged ones keep their
// lastTransitionTime.
type RouteStatus struct {
	Kind       string                        `json:"kind"`
	Namespace  string                        `json:"namespace"`
	Name       string                        `json:"name"`
	Generation int64                         `json:"generation"`
	Parents    []gatewayv1.RouteParentStatus `json:"parents"`
}

// ObjectRef names the Kubernetes object a Problem is about.
type ObjectRef = model.ObjectRef

// Problem is something in an object that was not compiled as written: the
// part named in Reason was dropped, ignored or answers with an error; the
// rest of the configuration is intact.
type Problem = model.Problem

// Compile compiles the mesh routes of snap under cfg. It never fails: what
// cannot be compiled is reported in Result.Problems and in the statuses.
// Two Compiles never share messages.
func Compile(cfg Config, snap Snapshot) *Result {
	c := newCompiler(cfg.withDefaults(), snap)
	routes := c.routes(snap)
	for _, r := range routes {
		for _, ref := range r.parentRefs {
			if isServiceParent(ref) {
				r.parents = append(r.parents, c.attach(r, ref))
			}
		}
	}
	res := &Result{Tables: c.tables(routes)}
	for _, r := range routes {
		if len(r.parents) > 0 {
			res.Statuses = append(res.Statuses, c.status(r))
		}
	}
	slices.SortFunc(res.Statuses, func(a, b RouteStatus) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	res.Problems = model.SortProblems(c.problems)
	return res
}

// compiler holds the indexes of one Compile and the problems found.
type compiler struct {
	cfg        Config
	namespaces map[string]*corev1.Namespace
	services   map[nsName]*corev1.Service
	// grants are the ReferenceGrants by namespace (the namespace they grant
	// access to).
	grants map[string][]*gatewayv1beta1.ReferenceGrant
	// refErrs memoises the reference errors of a rule applied under a
	// parent namespace (they do not depend on the port).
	refErrs  map[refKey][]condErr
	problems []Problem
}

type refKey struct {
	rule     *ruleTemplate
	parentNS string
}

type nsName struct{ namespace, name string }

func newCompiler(cfg Config, snap Snapshot) *compiler {
	c := &compiler{
		cfg:        cfg,
		namespaces: map[string]*corev1.Namespace{},
		services:   map[nsName]*corev1.Service{},
		grants:     map[string][]*gatewayv1beta1.ReferenceGrant{},
		refErrs:    map[refKey][]condErr{},
	}
	for _, ns := range snap.Namespaces {
		if ns != nil {
			c.namespaces[ns.Name] = ns
		}
	}
	for _, s := range snap.Services {
		if s != nil {
			c.services[nsName{s.Namespace, s.Name}] = s
		}
	}
	for _, g := range snap.ReferenceGrants {
		if g != nil {
			c.grants[g.Namespace] = append(c.grants[g.Namespace], g)
		}
	}
	return c
}

func (c *compiler) problem(kind, namespace, name, reason string) {
	c.problems = append(c.problems, Problem{Ref: ObjectRef{Kind: kind, Namespace: namespace, Name: name}, Reason: reason})
}

func (c *compiler) routeProblem(r *route, reason string) {
	c.problem(r.kind, r.namespace, r.name, reason)
}

// route is an HTTPRoute or GRPCRoute with its rules checked and compiled
// into templates, independent of the parent they are applied to.
type route struct {
	kind       string
	namespace  string
	name       string
	generation int64
	created    time.Time
	parentRefs []gatewayv1.ParentReference
	rules      []*ruleTemplate // by spec index
	// parents are the Service parentRefs, in spec order, once attached.
	parents []*parent
}

// key is the route's name for precedence ties: "<namespace>/<name>".
func (r *route) key() string { return r.namespace + "/" + r.name }

// routes compiles every route of snap into its templates, sorted by
// precedence: oldest first, then by "<namespace>/<name>", then kind.
func (c *compiler) routes(snap Snapshot) []*route {
	var out []*route
	for _, hr := range snap.HTTPRoutes {
		if hr != nil {
			out = append(out, c.httpRoute(hr))
		}
	}
	for _, gr := range snap.GRPCRoutes {
		if gr != nil {
			out = append(out, c.grpcRoute(gr))
		}
	}
	slices.SortFunc(out, compareRoutes)
	return out
}

func compareRoutes(a, b *route) int {
	return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.key(), b.key()), cmp.Compare(a.kind, b.kind))
}

// validRules reports whether at least one rule of r was not dropped.
func (r *route) validRules() bool {
	return slices.ContainsFunc(r.rules, func(t *ruleTemplate) bool { return t.drop == nil })
}
