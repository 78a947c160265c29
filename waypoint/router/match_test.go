package router

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// TestMatchConditions checks one Match against one request per case; the
// case name is the rule of routeapi.proto or the Gateway API it checks.
func TestMatchConditions(t *testing.T) {
	get := func(target string, headers ...string) *http.Request { return newRequest("GET", target, headers...) }
	handBuilt := func(target string, h http.Header) *http.Request {
		r := get(target)
		r.Header = h
		return r
	}
	for _, tc := range []struct {
		name  string
		match *routeapi.Match
		req   *http.Request
		want  bool
	}{
		// Path: Exact.
		{"exact path equals the path", &routeapi.Match{Path: pathExact("/abc")}, get("/abc"), true},
		{"exact path does not match a trailing slash", &routeapi.Match{Path: pathExact("/abc")}, get("/abc/"), false},
		{"exact path is case-sensitive", &routeapi.Match{Path: pathExact("/abc")}, get("/Abc"), false},
		{"exact path does not match a longer path", &routeapi.Match{Path: pathExact("/abc")}, get("/abcd"), false},
		{"exact path ignores the query string", &routeapi.Match{Path: pathExact("/abc")}, get("/abc?x=1"), true},
		// Path: PathPrefix, element-wise.
		{"prefix matches the same path", &routeapi.Match{Path: pathPrefix("/abc")}, get("/abc"), true},
		{"prefix matches with a trailing slash", &routeapi.Match{Path: pathPrefix("/abc")}, get("/abc/"), true},
		{"prefix matches a longer path by element", &routeapi.Match{Path: pathPrefix("/abc")}, get("/abc/def"), true},
		{"prefix does not match a partial element", &routeapi.Match{Path: pathPrefix("/abc")}, get("/abcd"), false},
		{"prefix does not match a shorter path", &routeapi.Match{Path: pathPrefix("/abc/def")}, get("/abc"), false},
		{"prefix is case-sensitive", &routeapi.Match{Path: pathPrefix("/abc")}, get("/ABC/d"), false},
		{"prefix / matches every path", &routeapi.Match{Path: pathPrefix("/")}, get("/anything/at/all"), true},
		{"prefix trailing slash in config is ignored", &routeapi.Match{Path: pathPrefix("/abc/")}, get("/abc"), true},
		{"prefix multi-element", &routeapi.Match{Path: pathPrefix("/v1/api")}, get("/v1/api/x"), true},
		{"prefix multi-element partial", &routeapi.Match{Path: pathPrefix("/v1/api")}, get("/v1/apix"), false},
		// Path: RegularExpression, anchored.
		{"regex matches the whole path", &routeapi.Match{Path: pathRegex("/a.c")}, get("/abc"), true},
		{"regex is anchored at the end", &routeapi.Match{Path: pathRegex("/a.c")}, get("/abcd"), false},
		{"regex is anchored at the start", &routeapi.Match{Path: pathRegex("/a.c")}, get("/x/abc"), false},
		{"regex alternation stays anchored (left)", &routeapi.Match{Path: pathRegex("/a|/b")}, get("/ab"), false},
		{"regex alternation stays anchored (right)", &routeapi.Match{Path: pathRegex("/a|/b")}, get("/xb"), false},
		{"regex alternation matches either", &routeapi.Match{Path: pathRegex("/a|/b")}, get("/b"), true},
		{"case-insensitive regex is not cut short by its literal prefix", &routeapi.Match{Path: pathRegex("(?i)/API/v[0-9]")}, get("/api/V1"), true},
		{"regex literal prefix must hold", &routeapi.Match{Path: pathRegex("/api/v[0-9]")}, get("/apx/v1"), false},
		{"regex does not see the query", &routeapi.Match{Path: pathRegex("/a.*")}, get("/a?b"), true},
		{"regex query is not path", &routeapi.Match{Path: pathRegex(`/a\?b`)}, get("/a?b"), false},
		// Path form: as sent, escaped.
		{"escaped path matches its escaped value", &routeapi.Match{Path: pathExact("/a%20b")}, get("/a%20b"), true},
		{"escaped slash is not a separator", &routeapi.Match{Path: pathPrefix("/a")}, get("/a%2Fb"), false},
		{"escaped unreserved is not decoded without NormalizePath", &routeapi.Match{Path: pathExact("/admin")}, get("/%61dmin"), false},
		{"no path condition matches every path", &routeapi.Match{}, get("/x"), true},
		// Method.
		{"method equal", &routeapi.Match{Path: pathPrefix("/"), Method: "GET"}, get("/"), true},
		{"method differs", &routeapi.Match{Path: pathPrefix("/"), Method: "POST"}, get("/"), false},
		// Headers.
		{"header name is case-insensitive", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-env", strExact("canary"))}}, get("/", "X-ENV", "canary"), true},
		{"header value is case-sensitive", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-env", strExact("canary"))}}, get("/", "X-Env", "Canary"), false},
		{"absent header does not match", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-env", strExact("canary"))}}, get("/"), false},
		{"absent header does not match a catch-all regex", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-env", strRegex(".*"))}}, get("/"), false},
		{"empty header value is present", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-env", strRegex(".*"))}}, get("/", "X-Env", ""), true},
		{"headers are ANDed", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1")), hdr("x-b", strExact("2"))}}, get("/", "X-A", "1"), false},
		{"headers are ANDed, all present", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1")), hdr("x-b", strExact("2"))}}, get("/", "X-A", "1", "X-B", "2"), true},
		{"repeated header is joined with comma", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1,2"))}}, get("/", "X-A", "1", "X-A", "2"), true},
		{"repeated header: first value alone does not match", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1"))}}, get("/", "X-A", "1", "X-A", "2"), false},
		{"repeated header: joined without space", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1, 2"))}}, get("/", "X-A", "1", "X-A", "2"), false},
		{"repeated header: exact longer than the values", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1,2,3"))}}, get("/", "X-A", "1", "X-A", "2"), false},
		{"repeated header: regex sees the joined value", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strRegex(`1,\d`))}}, get("/", "X-A", "1", "X-A", "2"), true},
		{"header regex is anchored", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strRegex("v[0-9]"))}}, get("/", "X-A", "v12"), false},
		{"header regex matches", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strRegex("v[0-9]+"))}}, get("/", "X-A", "v12"), true},
		{"header lower-case key in a hand-built Header", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1"))}}, handBuilt("/", http.Header{"x-a": {"1"}}), true},
		{"header upper-case name in config is lower-cased", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("X-A", strExact("1"))}}, get("/", "x-a", "1"), true},
		{"host header is the request's Host", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("host", strExact("echo"))}}, get("/"), true},
		{"host header differs", &routeapi.Match{Headers: []*routeapi.HeaderMatch{hdr("host", strExact("other"))}}, get("/"), false},
		// Query parameters.
		{"query param exact", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/?q=1"), true},
		{"query param absent does not match", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/?r=1"), false},
		{"query param absent does not match a catch-all regex", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strRegex(".*"))}}, get("/"), false},
		{"query param first value is matched", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/?q=1&q=2"), true},
		{"query param later value is not matched", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("2"))}}, get("/?q=1&q=2"), false},
		{"query param name is case-sensitive", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/?Q=1"), false},
		{"query param value is unescaped", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("a b&c"))}}, get("/?q=a%20b%26c"), true},
		{"query param plus is a space", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("a b"))}}, get("/?q=a+b"), true},
		{"query param name is unescaped", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/?%71=1"), true},
		{"query param without value is empty", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact(""))}}, get("/?q"), true},
		{"query param regex is anchored", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strRegex("[0-9]"))}}, get("/?q=12"), false},
		{"query params are ANDed", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("a", strExact("1")), qp("b", strExact("2"))}}, get("/?b=2&a=1"), true},
		{"query pair with semicolon is skipped", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("3"))}}, get("/?q=1;x=2&q=3"), true},
		{"query pair with bad escape is skipped", &routeapi.Match{QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("ok"))}}, get("/?q=%zz&q=ok"), true},
		// gRPC.
		{"grpc service and method", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Service: strExact("pkg.Echo"), Method: strExact("Call")}}, get("/pkg.Echo/Call"), true},
		{"grpc other method", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Service: strExact("pkg.Echo"), Method: strExact("Call")}}, get("/pkg.Echo/Other"), false},
		{"grpc service only: any method", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Service: strExact("pkg.Echo")}}, get("/pkg.Echo/Other"), true},
		{"grpc method only: any service", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Method: strExact("Call")}}, get("/x.Y/Call"), true},
		{"grpc regex service", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Service: strRegex(`pkg\..*`)}}, get("/pkg.Echo/Call"), true},
		{"grpc path with extra element never matches", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Service: strExact("pkg.Echo")}}, get("/pkg.Echo/Call/x"), false},
		{"grpc path without method never matches", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{}}, get("/pkg.Echo"), false},
		{"grpc path with empty method never matches", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{}}, get("/pkg.Echo/"), false},
		{"grpc empty method match needs a grpc path", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{}}, get("/a/b"), true},
		{"grpc with header", &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{Service: strExact("s")}, Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1"))}}, get("/s/m"), false},
		// Everything ANDed.
		{"all conditions hold", &routeapi.Match{Path: pathExact("/a"), Method: "GET", Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1"))}, QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/a?q=1", "X-A", "1"), true},
		{"one condition fails", &routeapi.Match{Path: pathExact("/a"), Method: "GET", Headers: []*routeapi.HeaderMatch{hdr("x-a", strExact("1"))}, QueryParams: []*routeapi.QueryParamMatch{qp("q", strExact("1"))}}, get("/a?q=2", "X-A", "1"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := mustRuleSet(t, &routeapi.RuleSet{Matches: []*routeapi.Match{tc.match}, Rules: []*routeapi.Rule{forwardRule("hit")}})
			got := rs.Match(tc.req) != nil
			if got != tc.want {
				t.Errorf("Match(%s %s %v) = %v, want %v", tc.req.Method, tc.req.URL, tc.req.Header, got, tc.want)
			}
		})
	}
}

// TestMatchOrder: the first Match that holds wins (they arrive sorted by
// precedence), a rule may have several matches, no match is nil.
func TestMatchOrder(t *testing.T) {
	rs := mustRuleSet(t, &routeapi.RuleSet{
		Matches: []*routeapi.Match{
			{Rule: 2, Path: pathExact("/v2/exact")},
			{Rule: 1, Path: pathPrefix("/v2/long"), Headers: []*routeapi.HeaderMatch{hdr("x-v", strExact("1"))}},
			{Rule: 0, Path: pathPrefix("/v2")},
			{Rule: 2, Path: pathRegex("/r/.*")},
		},
		Rules: []*routeapi.Rule{forwardRule("prefix"), forwardRule("header"), forwardRule("exact-or-regex")},
	})
	for _, tc := range []struct {
		name, target string
		headers      []string
		want         string
	}{
		{"exact before a prefix that also holds", "/v2/exact", nil, "exact-or-regex"},
		{"a failing earlier match falls through", "/v2/long/x", nil, "prefix"},
		{"earlier match with header", "/v2/long/x", []string{"X-V", "1"}, "header"},
		{"second match of a rule", "/r/x", nil, "exact-or-regex"},
		{"no match is nil (404)", "/other", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ruleName(rs.Match(newRequest("GET", tc.target, tc.headers...))); got != tc.want {
				t.Errorf("Match(%s) = %q, want %q", tc.target, got, tc.want)
			}
		})
	}
	var nilSet *RuleSet
	if nilSet.Match(newRequest("GET", "/")) != nil {
		t.Error("nil RuleSet matched")
	}
}

// TestMatchAfterNormalizePath: with NormalizePath first, the encodings and
// dot segments a backend would resolve cannot bypass a rule.
func TestMatchAfterNormalizePath(t *testing.T) {
	rs := mustRuleSet(t, &routeapi.RuleSet{
		Matches: []*routeapi.Match{{Rule: 0, Path: pathPrefix("/admin")}, {Rule: 1, Path: pathPrefix("/")}},
		Rules:   []*routeapi.Rule{forwardRule("admin"), forwardRule("public")},
	})
	for _, target := range []string{"/admin", "/%61dmin/x", "/public/../admin", "/./admin/", "/x/%2e%2e/admin"} {
		r := newRequest("GET", target)
		NormalizePath(r)
		if got := ruleName(rs.Match(r)); got != "admin" {
			t.Errorf("%s normalised to %s matched %q, want admin", target, r.URL.EscapedPath(), got)
		}
	}
}

// TestMatchDoesNotAllocate holds Match to its contract on the common path.
func TestMatchDoesNotAllocate(t *testing.T) {
	rs := mustRuleSet(t, benchRuleSet())
	for _, tc := range benchRequests() {
		if tc.mayAllocate {
			continue
		}
		if n := testing.AllocsPerRun(100, func() { rs.Match(tc.req) }); n != 0 {
			t.Errorf("%s: %v allocations per Match", tc.name, n)
		}
	}
}

// TestQueryValueAgreesWithParseQuery compares the lazy scan with the
// standard library's parse, whose result it promises.
func TestQueryValueAgreesWithParseQuery(t *testing.T) {
	for _, raw := range queryCorpus {
		checkQueryValue(t, raw, "q")
	}
}

var queryCorpus = []string{
	"", "q", "q=", "q=1", "q=1&q=2", "a=1&q=2", "q=a+b", "q=a%20b", "%71=1", "q%3D1=2",
	"q=1;x=2&q=3", "q;=1", "q=%zz&q=ok", "%zz=1&q=2", "&&q=1&", "q=%", "q=1=2", "Q=1", "q+=1", "+q=1",
}

func checkQueryValue(t *testing.T, raw, name string) {
	t.Helper()
	parsed, _ := url.ParseQuery(raw)
	want, wantOK := "", parsed.Has(name)
	if wantOK {
		want = parsed[name][0]
	}
	got, ok := queryValue(raw, name)
	if got != want || ok != wantOK {
		t.Errorf("queryValue(%q, %q) = %q, %v; ParseQuery says %q, %v", raw, name, got, ok, want, wantOK)
	}
}

func FuzzQueryValue(f *testing.F) {
	for _, raw := range queryCorpus {
		f.Add(raw, "q")
	}
	f.Fuzz(func(t *testing.T, raw, name string) { checkQueryValue(t, raw, name) })
}

func TestGRPCMethod(t *testing.T) {
	for _, tc := range []struct {
		path, svc, method string
		ok                bool
	}{
		{"/pkg.Svc/Method", "pkg.Svc", "Method", true},
		{"/a/b", "a", "b", true},
		{"/pkg.Svc", "", "", false},
		{"/pkg.Svc/", "", "", false},
		{"//Method", "", "", false},
		{"/a/b/c", "", "", false},
		{"a/b", "", "", false},
		{"/", "", "", false},
	} {
		svc, method, ok := grpcMethod(tc.path)
		if svc != tc.svc || method != tc.method || ok != tc.ok {
			t.Errorf("grpcMethod(%q) = %q, %q, %v; want %q, %q, %v", tc.path, svc, method, ok, tc.svc, tc.method, tc.ok)
		}
	}
}
