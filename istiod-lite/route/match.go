package route

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// precedence is what orders a match against the matches of other rules and
// routes in the same RuleSet, most specific first. HTTPRoute matches use the
// path, method, header and query fields; GRPCRoute matches the service,
// method and header fields (the others stay zero), so one order serves both.
type precedence struct {
	pathRank    int // 3 exact, 2 prefix, 1 regular expression
	pathLen     int
	grpcService int // characters in the service match
	grpcMethod  int // characters in the method match
	method      bool
	headers     int
	queryParams int
}

// Path match ranks: Exact > PathPrefix > RegularExpression, as Istio orders
// them (the spec leaves regular expressions implementation-specific).
const (
	rankRegex  = 1
	rankPrefix = 2
	rankExact  = 3
)

// comparePrecedence orders a before b (-1) when a is more specific.
func comparePrecedence(a, b precedence) int {
	desc := func(x, y int) int { return y - x }
	b2i := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	for _, d := range []int{
		desc(a.pathRank, b.pathRank),
		desc(a.pathLen, b.pathLen),
		desc(a.grpcService, b.grpcService),
		desc(a.grpcMethod, b.grpcMethod),
		desc(b2i(a.method), b2i(b.method)),
		desc(a.headers, b.headers),
		desc(a.queryParams, b.queryParams),
	} {
		if d != 0 {
			return d
		}
	}
	return 0
}

var httpMethods = map[gatewayv1.HTTPMethod]bool{
	gatewayv1.HTTPMethodGet: true, gatewayv1.HTTPMethodHead: true, gatewayv1.HTTPMethodPost: true,
	gatewayv1.HTTPMethodPut: true, gatewayv1.HTTPMethodDelete: true, gatewayv1.HTTPMethodConnect: true,
	gatewayv1.HTTPMethodOptions: true, gatewayv1.HTTPMethodTrace: true, gatewayv1.HTTPMethodPatch: true,
}

// httpMatch compiles an HTTPRouteMatch with the API's defaults (a prefix
// match on "/", Exact header and query matches).
func httpMatch(m gatewayv1.HTTPRouteMatch) (matchTemplate, error) {
	out := &routeapi.Match{}
	var p precedence
	typ, value := gatewayv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		if m.Path.Value != nil {
			value = *m.Path.Value
		}
	}
	switch typ {
	case gatewayv1.PathMatchExact:
		if !strings.HasPrefix(value, "/") {
			return matchTemplate{}, fmt.Errorf("path %q does not start with '/'", value)
		}
		out.Path = &routeapi.PathMatch{Kind: &routeapi.PathMatch_Exact{Exact: value}}
		p.pathRank, p.pathLen = rankExact, len(value)
	case gatewayv1.PathMatchPathPrefix:
		if !strings.HasPrefix(value, "/") {
			return matchTemplate{}, fmt.Errorf("path prefix %q does not start with '/'", value)
		}
		value = normalizePrefix(value)
		out.Path = &routeapi.PathMatch{Kind: &routeapi.PathMatch_Prefix{Prefix: value}}
		p.pathRank, p.pathLen = rankPrefix, len(value)
	case gatewayv1.PathMatchRegularExpression:
		if err := checkRegex(value); err != nil {
			return matchTemplate{}, fmt.Errorf("path: %w", err)
		}
		out.Path = &routeapi.PathMatch{Kind: &routeapi.PathMatch_Regex{Regex: value}}
		p.pathRank, p.pathLen = rankRegex, len(value)
	default:
		return matchTemplate{}, fmt.Errorf("unsupported path match type %q", typ)
	}
	if m.Method != nil {
		if !httpMethods[*m.Method] {
			return matchTemplate{}, fmt.Errorf("unsupported method %q", *m.Method)
		}
		out.Method = string(*m.Method)
		p.method = true
	}
	headers := make([]stringMatchSpec, 0, len(m.Headers))
	for _, h := range m.Headers {
		headers = append(headers, stringMatchSpec{name: string(h.Name), typ: string(ptrOr(h.Type, gatewayv1.HeaderMatchExact)), value: h.Value})
	}
	var err error
	if out.Headers, err = headerMatches(headers); err != nil {
		return matchTemplate{}, err
	}
	p.headers = len(out.Headers)
	seen := map[string]bool{}
	for _, q := range m.QueryParams {
		// "only the first entry with an equivalent name MUST be considered"
		if seen[string(q.Name)] {
			continue
		}
		seen[string(q.Name)] = true
		sm, err := stringMatch(string(ptrOr(q.Type, gatewayv1.QueryParamMatchExact)), q.Value)
		if err != nil {
			return matchTemplate{}, fmt.Errorf("query parameter %q: %w", q.Name, err)
		}
		out.QueryParams = append(out.QueryParams, &routeapi.QueryParamMatch{Name: string(q.Name), Value: sm})
	}
	p.queryParams = len(out.QueryParams)
	return matchTemplate{match: out, prec: p}, nil
}

// grpcMatch compiles a GRPCRouteMatch. A match without a method matches
// every service and method.
func grpcMatch(m gatewayv1.GRPCRouteMatch) (matchTemplate, error) {
	out := &routeapi.Match{}
	var p precedence
	if mm := m.Method; mm != nil {
		typ := ptrOr(mm.Type, gatewayv1.GRPCMethodMatchExact)
		service, method := ptrOr(mm.Service, ""), ptrOr(mm.Method, "")
		if service == "" && method == "" {
			return matchTemplate{}, errors.New("a method match needs a service or a method")
		}
		gm := &routeapi.GRPCMethodMatch{}
		for _, part := range []struct {
			what, value string
			dst         **routeapi.StringMatch
		}{{"service", service, &gm.Service}, {"method", method, &gm.Method}} {
			if part.value == "" {
				continue
			}
			if typ == gatewayv1.GRPCMethodMatchExact && strings.Contains(part.value, "/") {
				return matchTemplate{}, fmt.Errorf("%s %q contains '/'", part.what, part.value)
			}
			sm, err := stringMatch(string(typ), part.value)
			if err != nil {
				return matchTemplate{}, fmt.Errorf("%s: %w", part.what, err)
			}
			*part.dst = sm
		}
		out.GrpcMethod = gm
		p.grpcService, p.grpcMethod = len(service), len(method)
	}
	headers := make([]stringMatchSpec, 0, len(m.Headers))
	for _, h := range m.Headers {
		headers = append(headers, stringMatchSpec{name: string(h.Name), typ: string(ptrOr(h.Type, gatewayv1.GRPCHeaderMatchExact)), value: h.Value})
	}
	var err error
	if out.Headers, err = headerMatches(headers); err != nil {
		return matchTemplate{}, err
	}
	p.headers = len(out.Headers)
	return matchTemplate{match: out, prec: p}, nil
}

// normalizePrefix drops the trailing "/" of a path prefix ("a trailing `/`
// is ignored"), except for "/" itself.
func normalizePrefix(p string) string {
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	if p == "" {
		p = "/"
	}
	return p
}

type stringMatchSpec struct{ name, typ, value string }

// headerMatches compiles header matches: names lower case, and of several
// entries with an equivalent name only the first counts, as the API says.
func headerMatches(specs []stringMatchSpec) ([]*routeapi.HeaderMatch, error) {
	var out []*routeapi.HeaderMatch
	seen := map[string]bool{}
	for _, h := range specs {
		name := strings.ToLower(h.name)
		if !validHeaderName(name) {
			return nil, fmt.Errorf("header name %q is not a valid HTTP header name", h.name)
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		sm, err := stringMatch(h.typ, h.value)
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", h.name, err)
		}
		out = append(out, &routeapi.HeaderMatch{Name: name, Value: sm})
	}
	return out, nil
}

// stringMatch compiles an Exact or RegularExpression value match (the
// Header, QueryParam and GRPCMethod match types share these names).
func stringMatch(typ, value string) (*routeapi.StringMatch, error) {
	switch typ {
	case "Exact":
		return &routeapi.StringMatch{Kind: &routeapi.StringMatch_Exact{Exact: value}}, nil
	case "RegularExpression":
		if err := checkRegex(value); err != nil {
			return nil, err
		}
		return &routeapi.StringMatch{Kind: &routeapi.StringMatch_Regex{Regex: value}}, nil
	}
	return nil, fmt.Errorf("unsupported match type %q", typ)
}

// checkRegex checks that re is a valid RE2 expression, the dialect the
// waypoint (Go's regexp) uses.
func checkRegex(re string) error {
	_, err := regexp.Compile(re)
	var se *syntax.Error
	switch {
	case errors.As(err, &se):
		// se.Error repeats the input; the code alone says what is wrong.
		return fmt.Errorf("invalid regular expression %q: %s (RE2 syntax)", re, se.Code)
	case err != nil:
		return fmt.Errorf("invalid regular expression %q: %w", re, err)
	}
	return nil
}

// validHeaderName reports whether s is an HTTP token (RFC 7230), the
// Gateway API's HeaderName pattern.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
