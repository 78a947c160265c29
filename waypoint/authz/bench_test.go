package authz

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// benchPolicies is 50 policies on one waypoint, as a namespace with a busy
// waypoint might have them: 10 DENY policies on the waypoint (paths,
// methods, a header, source blocks), and 40 ALLOW policies, 8 on each of 5
// Services, each allowing two service accounts a few paths and methods,
// one with a header condition. The cart Service's last ALLOW (by name) is
// the one that lets baseRequest through.
func benchPolicies(tb testing.TB) *Policies {
	var ps []*routeapi.WaypointPolicy
	for i := range 10 {
		ps = append(ps, deny(fmt.Sprintf("deny-%02d", i), waypoint,
			&routeapi.PolicyRule{
				To: []*routeapi.PolicyOperation{{Paths: []string{fmt.Sprintf("/admin/%d/*", i), "*.php"}, Methods: []string{"DELETE", "PUT"}}},
			},
			&routeapi.PolicyRule{
				From: []*routeapi.PolicySource{{NotNamespaces: []string{"shop", "team-*"}, IpBlocks: []string{fmt.Sprintf("10.%d.0.0/16", 100+i)}}},
			},
			when(cond("request.headers[x-block]", fmt.Sprintf("v%d", i))),
		))
	}
	for s := range 5 {
		target := cart
		if s > 0 {
			target = svcTarget(fmt.Sprintf("svc-%d.shop.svc.cluster.local", s))
		}
		for i := range 8 {
			ps = append(ps, allow(fmt.Sprintf("allow-%d-%d", s, i), target, &routeapi.PolicyRule{
				From: []*routeapi.PolicySource{{Principals: []string{
					fmt.Sprintf("cluster.local/ns/shop/sa/client-%d", i), fmt.Sprintf("*/ns/team-%d/sa/reader", i),
				}}},
				To: []*routeapi.PolicyOperation{{Methods: []string{"GET", "HEAD"}, Paths: []string{fmt.Sprintf("/v%d/*", i), "/healthz"}}},
				When: []*routeapi.PolicyCondition{
					cond("request.headers[x-tenant]", fmt.Sprintf("t-%d*", i)),
				},
			}))
		}
	}
	ps = append(ps, allow("allow-0-9", cart, &routeapi.PolicyRule{
		From: []*routeapi.PolicySource{{Principals: []string{"cluster.local/ns/shop/sa/frontend"}}},
		To:   []*routeapi.PolicyOperation{{Methods: []string{"GET"}, Paths: []string{"/api/*"}, Hosts: []string{"cart.shop.svc.cluster.local"}}},
	}))
	compiled, errs := Compile(ps)
	if len(errs) > 0 || compiled.Len() != 51 {
		tb.Fatalf("compiled %d policies, errors %v", compiled.Len(), errs)
	}
	return compiled
}

// BenchmarkCheck checks one request against benchPolicies: every DENY
// (10) and every ALLOW of the cart Service (9) is evaluated.
func BenchmarkCheck(b *testing.B) {
	ps := benchPolicies(b)
	cases := []struct {
		name    string
		change  func(*Request)
		allowed bool
	}{
		{name: "allowed by the last ALLOW", allowed: true},
		{name: "no ALLOW matches", change: func(r *Request) { r.Path = "/other" }},
		{name: "denied by a DENY", change: func(r *Request) { r.Header = http.Header{"X-Block": {"v9"}} }},
		{name: "no policy applies", change: func(r *Request) { r.GatewayName, r.ServiceHostname = "other", "" }, allowed: true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			r := baseRequest()
			if c.change != nil {
				c.change(&r)
			}
			if allowed, _ := ps.Check(r); allowed != c.allowed {
				b.Fatalf("allowed = %v, want %v", allowed, c.allowed)
			}
			b.ReportAllocs()
			for b.Loop() {
				ps.Check(r)
			}
		})
	}
}

// TestCheckDoesNotAllocate keeps BenchmarkCheck's 0 allocs/op true.
func TestCheckDoesNotAllocate(t *testing.T) {
	ps := benchPolicies(t)
	r := baseRequest()
	if n := testing.AllocsPerRun(100, func() { ps.Check(r) }); n != 0 {
		t.Errorf("Check allocates %v times per request", n)
	}
}
