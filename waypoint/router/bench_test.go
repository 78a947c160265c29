package router

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// benchRuleSet is 50 rules in precedence order, as istiod-lite sorts them:
// 20 exact paths, 10 long prefixes, 10 prefixes with a header, 4 prefixes
// with a query parameter, 5 regular expressions, and the catch-all "/".
func benchRuleSet() *routeapi.RuleSet {
	rs := &routeapi.RuleSet{}
	add := func(m *routeapi.Match) {
		m.Rule = uint32(len(rs.Rules))
		rs.Matches = append(rs.Matches, m)
		rs.Rules = append(rs.Rules, forwardRule(fmt.Sprintf("r%d", len(rs.Rules))))
	}
	for i := range 20 {
		add(&routeapi.Match{Path: pathExact(fmt.Sprintf("/exact/%d", i))})
	}
	for i := range 10 {
		add(&routeapi.Match{Path: pathPrefix(fmt.Sprintf("/prefix/%d/api", i))})
	}
	for i := range 10 {
		add(&routeapi.Match{Path: pathPrefix("/hdr"), Headers: []*routeapi.HeaderMatch{hdr("x-tenant", strExact(fmt.Sprintf("t%d", i)))}})
	}
	for i := range 4 {
		add(&routeapi.Match{Path: pathPrefix("/q"), QueryParams: []*routeapi.QueryParamMatch{qp("v", strExact(fmt.Sprint(i)))}})
	}
	for i := range 5 {
		add(&routeapi.Match{Path: pathRegex(fmt.Sprintf("/re/%d/[a-z]+/[0-9]+", i))})
	}
	add(&routeapi.Match{Path: pathPrefix("/")})
	return rs
}

type benchRequest struct {
	name        string
	req         *http.Request
	want        string // rule name
	mayAllocate bool
}

func benchRequests() []benchRequest {
	h := []string{"User-Agent", "bench", "Accept", "*/*", "X-Request-Id", "0123456789"}
	req := func(target string, extra ...string) *http.Request {
		return newRequest("GET", target, append(append([]string{}, h...), extra...)...)
	}
	return []benchRequest{
		{name: "exact/first", req: req("/exact/0"), want: "r0"},
		{name: "exact/last", req: req("/exact/19"), want: "r19"},
		{name: "prefix", req: req("/prefix/9/api/users/42"), want: "r29"},
		{name: "header", req: req("/hdr/x", "X-Tenant", "t9"), want: "r39"},
		{name: "query", req: req("/q?a=1&v=3"), want: "r43"},
		{name: "query-escaped", req: req("/q?v=%33"), want: "r43", mayAllocate: true},
		// regexp keeps its machines in a sync.Pool, which a GC may empty.
		{name: "regex", req: req("/re/4/abc/123"), want: "r48", mayAllocate: true},
		{name: "catch-all", req: req("/nothing/here"), want: "r49"},
	}
}

// BenchmarkMatch walks the 50-rule set of benchRuleSet; the rule found is
// the one of the sub-benchmark's name.
//
//	go test ./waypoint/router/ -run '^$' -bench Match -benchmem
func BenchmarkMatch(b *testing.B) {
	rs, err := compileRuleSet(benchRuleSet(), "echo.mesh.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range benchRequests() {
		if got := ruleName(rs.Match(tc.req)); got != tc.want {
			b.Fatalf("%s: matched %q, want %q", tc.name, got, tc.want)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rs.Match(tc.req)
			}
		})
	}
}

// BenchmarkLookup is the per-tunnel part: VIP and port, then the rule set.
func BenchmarkLookup(b *testing.B) {
	upserts := map[string]*routeapi.ServiceRoutes{}
	for i := range 1000 {
		s := echoService(oneRule(forwardRule("r")), fmt.Sprintf("10.96.%d.%d", i/250, i%250))
		s.Name = fmt.Sprintf("svc-%d", i)
		s.Hostname = s.Name + ".mesh.svc.cluster.local"
		upserts[s.ResourceName()] = s
	}
	tbl, problems := Update(nil, upserts, nil)
	if len(problems) > 0 {
		b.Fatal(problems)
	}
	dst := mustAddrPort("10.96.3.200:80")
	b.ReportAllocs()
	for b.Loop() {
		if tbl.Lookup(dst).RuleSet("client") == nil {
			b.Fatal("no rule set")
		}
	}
}

// BenchmarkPick picks among 3 weighted backends.
func BenchmarkPick(b *testing.B) {
	r := compileOne(b, &routeapi.Rule{Action: &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{
		backend("a", 70), backend("b", 20), backend("c", 10),
	}}}})
	rnd := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		r.Pick(rnd)
	}
}

// BenchmarkUpdate is one upsert into a table of 1000 Services.
func BenchmarkUpdate(b *testing.B) {
	upserts := map[string]*routeapi.ServiceRoutes{}
	for i := range 1000 {
		s := echoService(benchRuleSet(), fmt.Sprintf("10.96.%d.%d", i/250, i%250))
		s.Name = fmt.Sprintf("svc-%d", i)
		s.Hostname = s.Name + ".mesh.svc.cluster.local"
		upserts[s.ResourceName()] = s
	}
	tbl, _ := Update(nil, upserts, nil)
	one := map[string]*routeapi.ServiceRoutes{"mesh/svc-7.mesh.svc.cluster.local": upserts["mesh/svc-7.mesh.svc.cluster.local"]}
	b.ReportAllocs()
	for b.Loop() {
		Update(tbl, one, nil)
	}
}
