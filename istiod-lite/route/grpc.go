package route

import (
	"fmt"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// grpcRoute compiles the rules of a GRPCRoute into templates.
func (c *compiler) grpcRoute(gr *gatewayv1.GRPCRoute) *route {
	r := &route{
		kind:       KindGRPCRoute,
		namespace:  gr.Namespace,
		name:       gr.Name,
		generation: gr.Generation,
		created:    gr.CreationTimestamp.Time,
		parentRefs: gr.Spec.ParentRefs,
	}
	rules := gr.Spec.Rules
	if len(rules) == 0 {
		// A rule without matches matches every request; a GRPCRoute without
		// rules is treated as one such rule without backends (500 /
		// UNAVAILABLE), as for HTTPRoutes.
		rules = []gatewayv1.GRPCRouteRule{{}}
	}
	for i, rule := range rules {
		r.rules = append(r.rules, c.grpcRule(r, i, rule))
	}
	c.reportDropped(r)
	return r
}

func (c *compiler) grpcRule(r *route, i int, rule gatewayv1.GRPCRouteRule) *ruleTemplate {
	t := &ruleTemplate{origin: origin(r, i, rule.Name), label: ruleLabel(i, rule.Name)}
	matches := rule.Matches
	if len(matches) == 0 {
		// "If no matches are specified, the implementation MUST match every
		// gRPC request."
		matches = []gatewayv1.GRPCRouteMatch{{}}
	}
	for j, m := range matches {
		mt, err := grpcMatch(m)
		if err != nil {
			t.dropf(gatewayv1.RouteReasonUnsupportedValue, "match %d: %v", j, err)
			continue
		}
		t.matches = append(t.matches, mt)
	}
	for _, f := range rule.Filters {
		ft, fail, err := grpcFilter(f)
		switch {
		case err != nil:
			t.dropf(gatewayv1.RouteReasonUnsupportedValue, "%s filter: %v", f.Type, err)
		case fail != nil:
			t.failClosedf(fail.reason, "%s", fail.msg)
		default:
			t.filters = append(t.filters, ft)
		}
	}
	for k, br := range rule.BackendRefs {
		bt := backendTemplate{ref: br.BackendObjectReference, weight: weight(br.Weight)}
		for _, f := range br.Filters {
			ft, fail, err := grpcFilter(f)
			switch {
			case err != nil:
				t.dropf(gatewayv1.RouteReasonUnsupportedValue, "backendRef %d: %s filter: %v", k, f.Type, err)
			case fail != nil:
				if bt.failClosed == nil {
					bt.failClosed = fail
				}
			default:
				bt.filters = append(bt.filters, ft)
			}
		}
		t.backends = append(t.backends, bt)
	}
	if rule.SessionPersistence != nil && t.drop == nil {
		c.routeProblem(r, fmt.Sprintf("%s: sessionPersistence is not supported and is ignored", t.label))
	}
	return t
}

// grpcFilter compiles a GRPCRouteFilter; see httpFilter for fail and err.
func grpcFilter(f gatewayv1.GRPCRouteFilter) (ft filterTemplate, fail *condErr, err error) {
	switch f.Type {
	case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
		hm, err := headerModifier(f.RequestHeaderModifier)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{static: &routeapi.Filter{Kind: &routeapi.Filter_RequestHeaderModifier{RequestHeaderModifier: hm}}}, nil, nil
	case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
		hm, err := headerModifier(f.ResponseHeaderModifier)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{static: &routeapi.Filter{Kind: &routeapi.Filter_ResponseHeaderModifier{ResponseHeaderModifier: hm}}}, nil, nil
	case gatewayv1.GRPCRouteFilterRequestMirror:
		mt, err := mirror(f.RequestMirror)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{mirror: mt}, nil, nil
	}
	return ft, unsupportedFilter(string(f.Type), f.ExtensionRef), nil
}
