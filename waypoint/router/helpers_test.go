package router

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Builders for routeapi messages, to keep the tables short.

func pathExact(p string) *routeapi.PathMatch {
	return &routeapi.PathMatch{Kind: &routeapi.PathMatch_Exact{Exact: p}}
}

func pathPrefix(p string) *routeapi.PathMatch {
	return &routeapi.PathMatch{Kind: &routeapi.PathMatch_Prefix{Prefix: p}}
}

func pathRegex(p string) *routeapi.PathMatch {
	return &routeapi.PathMatch{Kind: &routeapi.PathMatch_Regex{Regex: p}}
}

func strExact(v string) *routeapi.StringMatch {
	return &routeapi.StringMatch{Kind: &routeapi.StringMatch_Exact{Exact: v}}
}

func strRegex(v string) *routeapi.StringMatch {
	return &routeapi.StringMatch{Kind: &routeapi.StringMatch_Regex{Regex: v}}
}

func hdr(name string, v *routeapi.StringMatch) *routeapi.HeaderMatch {
	return &routeapi.HeaderMatch{Name: name, Value: v}
}

func qp(name string, v *routeapi.StringMatch) *routeapi.QueryParamMatch {
	return &routeapi.QueryParamMatch{Name: name, Value: v}
}

func dest(name string) *routeapi.Destination {
	return &routeapi.Destination{Name: name, Namespace: "mesh", Hostname: name + ".mesh.svc.cluster.local", Port: 8080, Protocol: routeapi.Protocol_PROTOCOL_HTTP}
}

func backend(name string, weight uint32, filters ...*routeapi.Filter) *routeapi.Backend {
	return &routeapi.Backend{Weight: weight, Target: &routeapi.Backend_Destination{Destination: dest(name)}, Filters: filters}
}

// forwardRule is a rule named name (in its Origin) that forwards to the
// backend name.
func forwardRule(name string, filters ...*routeapi.Filter) *routeapi.Rule {
	return &routeapi.Rule{
		Origin:  &routeapi.Origin{Kind: "HTTPRoute", Namespace: "mesh", Name: name},
		Filters: filters,
		Action:  &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{backend(name, 1)}}},
	}
}

func redirectRule(rd *routeapi.Redirect) *routeapi.Rule {
	return &routeapi.Rule{Origin: &routeapi.Origin{Kind: "HTTPRoute", Name: "redirect"}, Action: &routeapi.Rule_Redirect{Redirect: rd}}
}

func reqHeaders(set, add []*routeapi.Header, remove ...string) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_RequestHeaderModifier{RequestHeaderModifier: &routeapi.HeaderModifier{Set: set, Add: add, Remove: remove}}}
}

func respHeaders(set, add []*routeapi.Header, remove ...string) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &routeapi.HeaderModifier{Set: set, Add: add, Remove: remove}}}
}

func hv(name, value string) []*routeapi.Header { return []*routeapi.Header{{Name: name, Value: value}} }

func rewriteFilter(host string, path *routeapi.PathModifier) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_UrlRewrite{UrlRewrite: &routeapi.URLRewrite{Hostname: host, Path: path}}}
}

func fullPath(p string) *routeapi.PathModifier {
	return &routeapi.PathModifier{Kind: &routeapi.PathModifier_FullPath{FullPath: p}}
}

func replacePrefix(matched, repl string) *routeapi.PathModifier {
	return &routeapi.PathModifier{Kind: &routeapi.PathModifier_Prefix{Prefix: &routeapi.PrefixReplacement{MatchedPrefix: matched, Replacement: repl}}}
}

func corsFilter(c *routeapi.CORS) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_Cors{Cors: c}}
}

func mirrorFilter(name string, num, den uint32) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_RequestMirror{RequestMirror: &routeapi.Mirror{Destination: dest(name), Numerator: num, Denominator: den}}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// echoService is the ServiceRoutes of mesh/echo with the given VIPs and an
// HTTP port 80 whose producer rule set is rs (nil: none).
func echoService(rs *routeapi.RuleSet, addrs ...string) *routeapi.ServiceRoutes {
	return &routeapi.ServiceRoutes{
		Name: "echo", Namespace: "mesh", Hostname: "echo.mesh.svc.cluster.local",
		Addresses: addrs,
		Ports:     []*routeapi.PortRoutes{{Port: 80, Name: "http", Protocol: routeapi.Protocol_PROTOCOL_HTTP, Producer: rs}},
	}
}

const echoName = "mesh/echo.mesh.svc.cluster.local"

// oneRule is a rule set of one prefix "/" match selecting r.
func oneRule(r *routeapi.Rule) *routeapi.RuleSet {
	return &routeapi.RuleSet{Matches: []*routeapi.Match{{Path: pathPrefix("/")}}, Rules: []*routeapi.Rule{r}}
}

// compileOne compiles a rule with the echo Service's hostname.
func compileOne(t testing.TB, r *routeapi.Rule) *Rule {
	t.Helper()
	rule, err := compileRule(r, "echo.mesh.svc.cluster.local")
	if err != nil {
		t.Fatalf("compileRule: %v", err)
	}
	return rule
}

// mustRuleSet compiles a rule set.
func mustRuleSet(t testing.TB, rs *routeapi.RuleSet) *RuleSet {
	t.Helper()
	out, err := compileRuleSet(rs, "echo.mesh.svc.cluster.local")
	if err != nil {
		t.Fatalf("compileRuleSet: %v", err)
	}
	return out
}

// newRequest is a request as net/http's server hands it over: target is
// "/path?query" (Host "echo") or an absolute URL; headers are name, value
// pairs added with Header.Add (canonical names).
func newRequest(method, target string, headers ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	if target != "" && target[0] == '/' {
		r.Host = "echo"
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

// ruleName is the Origin name of a matched rule; "" for nil.
func ruleName(r *Rule) string {
	if r == nil {
		return ""
	}
	return r.Origin.GetName()
}
