package route

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// condErr is why a condition is False (or PartiallyInvalid True): a
// Gateway API reason and a message for humans.
type condErr struct {
	reason gatewayv1.RouteConditionReason
	msg    string
}

func errorf(reason gatewayv1.RouteConditionReason, format string, args ...any) *condErr {
	return &condErr{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// ruleTemplate is one route rule checked and compiled as far as it can be
// without knowing the parent it is applied to: backends, mirrors and the
// redirect port are resolved per parent and port by instantiate.
type ruleTemplate struct {
	origin *routeapi.Origin
	// label names the rule in messages: "rule 0" or "rule 0 (name)".
	label string
	// drop, if set, is why the rule is invalid; it is left out everywhere
	// (the Gateway API's "Dropped Rule" approach).
	drop    *condErr
	matches []matchTemplate
	filters []filterTemplate
	// redirect, if set, is the rule's action; backends are then ignored.
	redirect *redirectTemplate
	backends []backendTemplate
	// failClosed, if set, is a filter the waypoint cannot apply: the rule
	// answers 500 instead of skipping it.
	failClosed *condErr
	timeouts   *routeapi.Timeouts
	retry      *routeapi.Retry
}

// dropf marks the rule invalid unless it already is (the first reason wins).
func (t *ruleTemplate) dropf(reason gatewayv1.RouteConditionReason, format string, args ...any) {
	if t.drop == nil {
		t.drop = errorf(reason, format, args...)
	}
}

// failClosedf makes the rule answer 500 unless it already does.
func (t *ruleTemplate) failClosedf(reason gatewayv1.RouteConditionReason, format string, args ...any) {
	if t.failClosed == nil {
		t.failClosed = errorf(reason, format, args...)
	}
}

// matchTemplate is one compiled match (Match.rule still unset) and its
// precedence.
type matchTemplate struct {
	match *routeapi.Match
	prec  precedence
}

// filterTemplate is a filter that is ready (static) or a mirror whose
// backend is resolved per parent.
type filterTemplate struct {
	static *routeapi.Filter
	mirror *mirrorTemplate
}

type mirrorTemplate struct {
	ref                    gatewayv1.BackendObjectReference
	numerator, denominator uint32
}

type backendTemplate struct {
	ref     gatewayv1.BackendObjectReference
	weight  uint32
	filters []filterTemplate
	// failClosed, if set, is a filter the waypoint cannot apply: this
	// backend's share answers 500.
	failClosed *condErr
}

type redirectTemplate struct {
	scheme   string // "" = the request's, which is always http in the mesh
	hostname string
	path     *routeapi.PathModifier
	port     uint32 // 0 = derived
	status   uint32
}

// applyCtx is where a rule is applied.
type applyCtx struct {
	routeKind string
	routeNS   string
	// parentNS is the namespace of the parent Service.
	parentNS string
	// port is the service port; 0 when only references are checked.
	port int32
}

// instantiate builds the wire form of rule t for ctx and returns the
// reference errors found on the way (each also visible in the rule as an
// invalid backend, a dropped mirror or a direct 500).
func (c *compiler) instantiate(t *ruleTemplate, ctx applyCtx) (*routeapi.Rule, []condErr) {
	rule := &routeapi.Rule{
		Origin:   proto.CloneOf(t.origin),
		Timeouts: proto.CloneOf(t.timeouts),
		Retry:    proto.CloneOf(t.retry),
	}
	var errs []condErr
	filters := func(fts []filterTemplate) []*routeapi.Filter {
		var out []*routeapi.Filter
		for _, ft := range fts {
			if ft.static != nil {
				out = append(out, proto.CloneOf(ft.static))
				continue
			}
			dest, err := c.resolve(ctx, ft.mirror.ref)
			if err != nil {
				// "not configure this backend in the underlying implementation"
				errs = append(errs, condErr{err.reason, fmt.Sprintf("%s: RequestMirror not applied: %s", t.label, err.msg)})
				continue
			}
			out = append(out, &routeapi.Filter{Kind: &routeapi.Filter_RequestMirror{RequestMirror: &routeapi.Mirror{
				Destination: dest, Numerator: ft.mirror.numerator, Denominator: ft.mirror.denominator,
			}}})
		}
		return out
	}
	rule.Filters = filters(t.filters)

	forward := &routeapi.Forward{}
	for _, bt := range t.backends {
		if t.redirect != nil {
			break // a redirecting rule ignores its backendRefs
		}
		dest, err := c.resolve(ctx, bt.ref)
		var invalid string
		switch {
		case err != nil:
			invalid = err.msg
			errs = append(errs, condErr{err.reason, fmt.Sprintf("%s: %s", t.label, err.msg)})
		case bt.failClosed != nil:
			invalid = bt.failClosed.msg
			errs = append(errs, condErr{bt.failClosed.reason, fmt.Sprintf("%s: backendRef %s/%s: %s", t.label, dest.GetNamespace(), dest.GetName(), bt.failClosed.msg)})
		}
		if bt.weight == 0 || t.failClosed != nil {
			continue
		}
		b := &routeapi.Backend{Weight: bt.weight}
		if invalid != "" {
			b.Target = &routeapi.Backend_Invalid{Invalid: invalid}
		} else {
			b.Target = &routeapi.Backend_Destination{Destination: dest}
			b.Filters = filters(bt.filters)
		}
		forward.Backends = append(forward.Backends, b)
	}

	switch {
	case t.failClosed != nil:
		errs = append(errs, condErr{t.failClosed.reason, fmt.Sprintf("%s: %s", t.label, t.failClosed.msg)})
		rule.Filters = nil
		rule.Action = &routeapi.Rule_DirectResponse{DirectResponse: &routeapi.DirectResponse{Status: 500, Reason: t.failClosed.msg}}
	case t.redirect != nil:
		rule.Action = &routeapi.Rule_Redirect{Redirect: t.redirect.build(ctx.port)}
	case len(forward.Backends) == 0:
		rule.Action = &routeapi.Rule_DirectResponse{DirectResponse: &routeapi.DirectResponse{
			Status: 500, Reason: "no backendRef with a weight above 0",
		}}
	default:
		rule.Action = &routeapi.Rule_Forward{Forward: forward}
	}
	return rule, errs
}

// build derives the redirect for a service port as the Gateway API says:
// the filter's port, else the well-known port of the filter's scheme, else
// the listener (service) port; no port at all for http:80 and https:443.
func (r *redirectTemplate) build(servicePort int32) *routeapi.Redirect {
	scheme, port := r.scheme, r.port
	if scheme == "" {
		scheme = "http"
		if port == 0 {
			port = uint32(servicePort)
		}
	}
	if port == 0 {
		port = map[string]uint32{"http": 80, "https": 443}[scheme]
	}
	if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) {
		port = 0
	}
	return &routeapi.Redirect{
		Scheme:     scheme,
		Hostname:   r.hostname,
		Path:       proto.CloneOf(r.path),
		Port:       port,
		StatusCode: r.status,
	}
}

// ruleLabel names rule i (with its name, if any) in messages.
func ruleLabel(i int, name *gatewayv1.SectionName) string {
	if name != nil && *name != "" {
		return fmt.Sprintf("rule %d (%s)", i, *name)
	}
	return fmt.Sprintf("rule %d", i)
}

func origin(r *route, i int, name *gatewayv1.SectionName) *routeapi.Origin {
	o := &routeapi.Origin{Kind: r.kind, Namespace: r.namespace, Name: r.name, RuleIndex: uint32(i)}
	if name != nil {
		o.RuleName = string(*name)
	}
	return o
}

// reportDropped adds a Problem for every dropped rule of r.
func (c *compiler) reportDropped(r *route) {
	for _, t := range r.rules {
		if t.drop != nil {
			c.routeProblem(r, fmt.Sprintf("%s dropped: %s", t.label, t.drop.msg))
		}
	}
}
