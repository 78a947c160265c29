package route

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Retry defaults for fields a route leaves unset ("implementation-specific").
const (
	// defaultRetryAttempts is Istio's default number of retries.
	defaultRetryAttempts = 2
	// defaultRetryBackoff is Envoy's base retry interval, which Istio keeps.
	defaultRetryBackoff = 25 * time.Millisecond
)

// httpRoute compiles the rules of an HTTPRoute into templates.
func (c *compiler) httpRoute(hr *gatewayv1.HTTPRoute) *route {
	r := &route{
		kind:       KindHTTPRoute,
		namespace:  hr.Namespace,
		name:       hr.Name,
		generation: hr.Generation,
		created:    hr.CreationTimestamp.Time,
		parentRefs: hr.Spec.ParentRefs,
	}
	rules := hr.Spec.Rules
	if len(rules) == 0 {
		// The API defaults rules to one rule matching every request.
		rules = []gatewayv1.HTTPRouteRule{{}}
	}
	for i, rule := range rules {
		r.rules = append(r.rules, c.httpRule(r, i, rule))
	}
	c.reportDropped(r)
	return r
}

func (c *compiler) httpRule(r *route, i int, rule gatewayv1.HTTPRouteRule) *ruleTemplate {
	t := &ruleTemplate{origin: origin(r, i, rule.Name), label: ruleLabel(i, rule.Name)}
	matches := rule.Matches
	if len(matches) == 0 {
		// The API's default: a prefix match on "/".
		matches = []gatewayv1.HTTPRouteMatch{{}}
	}
	for j, m := range matches {
		mt, err := httpMatch(m)
		if err != nil {
			t.dropf(gatewayv1.RouteReasonUnsupportedValue, "match %d: %v", j, err)
			continue
		}
		t.matches = append(t.matches, mt)
	}
	// ReplacePrefixMatch needs exactly one PathPrefix match: the prefix it
	// replaces.
	prefix, hasPrefix := "", false
	if len(t.matches) == 1 && len(matches) == 1 {
		if p, ok := t.matches[0].match.GetPath().GetKind().(*routeapi.PathMatch_Prefix); ok {
			prefix, hasPrefix = p.Prefix, true
		}
	}

	rewrites := 0
	for _, f := range rule.Filters {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			if t.redirect != nil {
				t.dropf(gatewayv1.RouteReasonIncompatibleFilters, "more than one RequestRedirect filter")
				continue
			}
			rt, err := redirect(f.RequestRedirect, prefix, hasPrefix)
			if err != nil {
				t.dropf(gatewayv1.RouteReasonUnsupportedValue, "RequestRedirect: %v", err)
				continue
			}
			t.redirect = rt
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if rewrites++; rewrites > 1 {
				t.dropf(gatewayv1.RouteReasonIncompatibleFilters, "more than one URLRewrite filter")
				continue
			}
			ft, err := urlRewrite(f.URLRewrite, prefix, hasPrefix)
			if err != nil {
				t.dropf(gatewayv1.RouteReasonUnsupportedValue, "URLRewrite: %v", err)
				continue
			}
			t.filters = append(t.filters, ft)
		default:
			ft, fail, err := httpFilter(f, false)
			switch {
			case err != nil:
				t.dropf(gatewayv1.RouteReasonUnsupportedValue, "%s filter: %v", f.Type, err)
			case fail != nil:
				t.failClosedf(fail.reason, "%s", fail.msg)
			default:
				t.filters = append(t.filters, ft)
			}
		}
	}
	if t.redirect != nil && rewrites > 0 {
		t.dropf(gatewayv1.RouteReasonIncompatibleFilters, "RequestRedirect and URLRewrite filters cannot be combined")
	}

	for k, br := range rule.BackendRefs {
		bt := backendTemplate{ref: br.BackendObjectReference, weight: weight(br.Weight)}
		for _, f := range br.Filters {
			if f.Type == gatewayv1.HTTPRouteFilterURLRewrite {
				ft, err := urlRewrite(f.URLRewrite, prefix, hasPrefix)
				if err != nil {
					t.dropf(gatewayv1.RouteReasonUnsupportedValue, "backendRef %d: URLRewrite: %v", k, err)
					continue
				}
				bt.filters = append(bt.filters, ft)
				continue
			}
			ft, fail, err := httpFilter(f, true)
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
	if t.redirect != nil && len(rule.BackendRefs) > 0 && t.drop == nil {
		c.routeProblem(r, fmt.Sprintf("%s: backendRefs ignored: the rule redirects", t.label))
	}

	if rule.Timeouts != nil {
		to, err := timeouts(rule.Timeouts)
		if err != nil {
			t.dropf(gatewayv1.RouteReasonUnsupportedValue, "timeouts: %v", err)
		}
		t.timeouts = to
	}
	if rule.Retry != nil {
		rt, err := retry(rule.Retry)
		if err != nil {
			t.dropf(gatewayv1.RouteReasonUnsupportedValue, "retry: %v", err)
		}
		t.retry = rt
	}
	if rule.SessionPersistence != nil && t.drop == nil {
		c.routeProblem(r, fmt.Sprintf("%s: sessionPersistence is not supported and is ignored", t.label))
	}
	return t
}

// httpFilter compiles a filter other than RequestRedirect and URLRewrite.
// fail is set for a filter the waypoint cannot apply (the rule or backend
// then answers 500: such a filter may not be skipped); err for a malformed
// one (the rule is dropped).
func httpFilter(f gatewayv1.HTTPRouteFilter, backend bool) (ft filterTemplate, fail *condErr, err error) {
	switch f.Type {
	case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
		hm, err := headerModifier(f.RequestHeaderModifier)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{static: &routeapi.Filter{Kind: &routeapi.Filter_RequestHeaderModifier{RequestHeaderModifier: hm}}}, nil, nil
	case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
		hm, err := headerModifier(f.ResponseHeaderModifier)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{static: &routeapi.Filter{Kind: &routeapi.Filter_ResponseHeaderModifier{ResponseHeaderModifier: hm}}}, nil, nil
	case gatewayv1.HTTPRouteFilterRequestMirror:
		mt, err := mirror(f.RequestMirror)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{mirror: mt}, nil, nil
	case gatewayv1.HTTPRouteFilterCORS:
		if backend {
			return ft, errorf(gatewayv1.RouteReasonUnsupportedValue, "a CORS filter on a backendRef is not supported (requests get 500)"), nil
		}
		cors, err := corsFilter(f.CORS)
		if err != nil {
			return ft, nil, err
		}
		return filterTemplate{static: &routeapi.Filter{Kind: &routeapi.Filter_Cors{Cors: cors}}}, nil, nil
	case gatewayv1.HTTPRouteFilterRequestRedirect:
		// Only reached for backendRef filters.
		return ft, errorf(gatewayv1.RouteReasonUnsupportedValue, "a RequestRedirect filter on a backendRef is not supported (requests get 500)"), nil
	}
	return ft, unsupportedFilter(string(f.Type), f.ExtensionRef), nil
}

// unsupportedFilter is why a filter the waypoint cannot apply fails closed.
func unsupportedFilter(typ string, ext *gatewayv1.LocalObjectReference) *condErr {
	if typ == string(gatewayv1.HTTPRouteFilterExtensionRef) {
		what := "ExtensionRef filter"
		if ext != nil {
			what = fmt.Sprintf("ExtensionRef filter %s/%s %s", ext.Group, ext.Kind, ext.Name)
		}
		return errorf(gatewayv1.RouteReasonInvalidKind, "%s is not supported: requests get 500 (a filter may not be skipped)", what)
	}
	return errorf(gatewayv1.RouteReasonUnsupportedValue, "filter type %q is not supported: requests get 500 (fail closed)", typ)
}

// weight is a backendRef's weight: 1 when unset, never negative.
func weight(w *int32) uint32 {
	switch {
	case w == nil:
		return 1
	case *w < 0:
		return 0
	}
	return uint32(*w)
}

// gepDuration is the Gateway API duration format (GEP-2257).
var gepDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

func parseDuration(d gatewayv1.Duration) (time.Duration, error) {
	if !gepDuration.MatchString(string(d)) {
		return 0, fmt.Errorf("%q is not a Gateway API duration (e.g. 1h30m, 10s, 500ms)", d)
	}
	return time.ParseDuration(string(d))
}

// timeouts compiles rule timeouts; a zero duration means none.
func timeouts(t *gatewayv1.HTTPRouteTimeouts) (*routeapi.Timeouts, error) {
	var request, backend time.Duration
	var err error
	if t.Request != nil {
		if request, err = parseDuration(*t.Request); err != nil {
			return nil, fmt.Errorf("request: %w", err)
		}
	}
	if t.BackendRequest != nil {
		if backend, err = parseDuration(*t.BackendRequest); err != nil {
			return nil, fmt.Errorf("backendRequest: %w", err)
		}
	}
	if request != 0 && backend > request {
		return nil, fmt.Errorf("backendRequest %s is longer than request %s", backend, request)
	}
	out := &routeapi.Timeouts{}
	if request != 0 {
		out.Request = durationpb.New(request)
	}
	if backend != 0 {
		out.BackendRequest = durationpb.New(backend)
	}
	if out.Request == nil && out.BackendRequest == nil {
		return nil, nil
	}
	return out, nil
}

// retry compiles a retry stanza, filling in the defaults.
func retry(r *gatewayv1.HTTPRouteRetry) (*routeapi.Retry, error) {
	out := &routeapi.Retry{Attempts: defaultRetryAttempts, Backoff: durationpb.New(defaultRetryBackoff)}
	if r.Attempts != nil {
		if *r.Attempts < 1 || *r.Attempts > 1<<16 {
			return nil, fmt.Errorf("attempts %d is not between 1 and 65536", *r.Attempts)
		}
		out.Attempts = uint32(*r.Attempts)
	}
	for _, code := range r.Codes {
		if code < 400 || code > 599 {
			return nil, fmt.Errorf("code %d is not between 400 and 599", code)
		}
		out.Codes = append(out.Codes, uint32(code))
	}
	slices.Sort(out.Codes)
	out.Codes = slices.Compact(out.Codes)
	if r.Backoff != nil {
		d, err := parseDuration(*r.Backoff)
		if err != nil {
			return nil, fmt.Errorf("backoff: %w", err)
		}
		out.Backoff = durationpb.New(d)
	}
	return out, nil
}
