package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// TestPolicyTable: WaypointPolicy responses build the policies a request is
// checked against — DENY for a path from one namespace on the Gateway, an
// ALLOW on one Service for one principal — and a removal withdraws them.
func TestPolicyTable(t *testing.T) {
	pt := newPolicyTable(nil, newMetrics())
	authorize := pt.authorize("shop", "waypoint")
	deny := &routeapi.WaypointPolicy{
		Name: "no-admin", Namespace: "shop", Action: routeapi.PolicyAction_POLICY_ACTION_DENY,
		Targets: []*routeapi.PolicyTarget{{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Namespace: "shop", Name: "waypoint"}}}},
		Rules: []*routeapi.PolicyRule{{
			From: []*routeapi.PolicySource{{Namespaces: []string{"web"}}},
			To:   []*routeapi.PolicyOperation{{Paths: []string{"/admin*"}}},
		}},
	}
	allow := &routeapi.WaypointPolicy{
		Name: "ratings-from-reviews", Namespace: "shop", Action: routeapi.PolicyAction_POLICY_ACTION_ALLOW,
		Targets: []*routeapi.PolicyTarget{{Kind: &routeapi.PolicyTarget_ServiceHostname{ServiceHostname: "ratings.shop.svc.cluster.local"}}},
		Rules: []*routeapi.PolicyRule{{
			From: []*routeapi.PolicySource{{Principals: []string{"cluster.local/ns/shop/sa/reviews"}}},
			To:   []*routeapi.PolicyOperation{{Methods: []string{"GET"}}},
		}},
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(pt.apply([]xdsclient.TypedResource[*routeapi.WaypointPolicy]{
		{Name: deny.ResourceName(), Message: deny}, {Name: allow.ResourceName(), Message: allow},
	}, nil))

	ratings := &state.Service{Name: "ratings", Namespace: "shop", Hostname: "ratings.shop.svc.cluster.local"}
	reviews := &state.Service{Name: "reviews", Namespace: "shop", Hostname: "reviews.shop.svc.cluster.local"}
	id := func(ns, sa string) hbone.Identity {
		return hbone.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
	}
	dst := netip.MustParseAddrPort("10.96.0.10:9080")
	for _, tc := range []struct {
		name      string
		method    string
		path      string
		from      hbone.Identity
		svc       *state.Service
		wantDeny  bool
		wantInErr string
	}{
		{"deny: /admin from web", "GET", "/admin/users", id("web", "frontend"), reviews, true, "shop/no-admin"},
		{"deny does not cover other paths", "GET", "/products", id("web", "frontend"), reviews, false, ""},
		{"deny does not cover other namespaces", "GET", "/admin", id("shop", "ops"), reviews, false, ""},
		{"allow: the principal with GET", "GET", "/ratings/1", id("shop", "reviews"), ratings, false, ""},
		{"allow: another method is not allowed", "POST", "/ratings/1", id("shop", "reviews"), ratings, true, "no ALLOW policy matched"},
		{"allow: another principal is not allowed", "GET", "/ratings/1", id("shop", "productpage"), ratings, true, "no ALLOW policy matched"},
		{"deny wins over allow", "GET", "/admin", id("web", "frontend"), ratings, true, "shop/no-admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://svc"+tc.path, nil)
			err := authorize(t.Context(), r, &caller{Identity: tc.from, Destination: dst, Service: tc.svc})
			if (err != nil) != tc.wantDeny {
				t.Fatalf("authorize = %v, want denied %v", err, tc.wantDeny)
			}
			if err != nil && !strings.Contains(err.Error(), tc.wantInErr) {
				t.Errorf("authorize = %v, want it to name %q", err, tc.wantInErr)
			}
		})
	}

	// Withdrawn: everything allowed again.
	must(pt.apply(nil, []string{deny.ResourceName(), allow.ResourceName()}))
	r := httptest.NewRequest(http.MethodPost, "http://svc/admin", nil)
	if err := authorize(t.Context(), r, &caller{Identity: id("web", "frontend"), Destination: dst, Service: ratings}); err != nil {
		t.Errorf("after removal: %v", err)
	}
	if !pt.received.Load() {
		t.Error("received not set")
	}
}
