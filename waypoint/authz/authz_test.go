package authz

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambientlite/mesh/internal/routeapi"
)

const cartHost = "cart.shop.svc.cluster.local"

var (
	waypoint = &routeapi.PolicyTarget{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Namespace: "shop", Name: "waypoint"}}}
	cart     = svcTarget(cartHost)
	allowAny = &routeapi.PolicyRule{}
)

func svcTarget(hostname string) *routeapi.PolicyTarget {
	return &routeapi.PolicyTarget{Kind: &routeapi.PolicyTarget_ServiceHostname{ServiceHostname: hostname}}
}

func allow(name string, target *routeapi.PolicyTarget, rules ...*routeapi.PolicyRule) *routeapi.WaypointPolicy {
	return &routeapi.WaypointPolicy{Namespace: "shop", Name: name, Targets: []*routeapi.PolicyTarget{target}, Rules: rules}
}

func deny(name string, target *routeapi.PolicyTarget, rules ...*routeapi.PolicyRule) *routeapi.WaypointPolicy {
	p := allow(name, target, rules...)
	p.Action = routeapi.PolicyAction_POLICY_ACTION_DENY
	return p
}

func from(s ...*routeapi.PolicySource) *routeapi.PolicyRule    { return &routeapi.PolicyRule{From: s} }
func to(o ...*routeapi.PolicyOperation) *routeapi.PolicyRule   { return &routeapi.PolicyRule{To: o} }
func when(c ...*routeapi.PolicyCondition) *routeapi.PolicyRule { return &routeapi.PolicyRule{When: c} }

func cond(key string, values ...string) *routeapi.PolicyCondition {
	return &routeapi.PolicyCondition{Key: key, Values: values}
}

func notCond(key string, notValues ...string) *routeapi.PolicyCondition {
	return &routeapi.PolicyCondition{Key: key, NotValues: notValues}
}

// baseRequest is a GET from shop/frontend to the cart Service through the
// shop/waypoint waypoint.
func baseRequest() Request {
	return Request{
		GatewayNamespace: "shop", GatewayName: "waypoint",
		ServiceHostname: cartHost,
		SourcePrincipal: "spiffe://cluster.local/ns/shop/sa/frontend", SourceNamespace: "shop",
		SourceIP:      netip.MustParseAddr("10.244.0.5"),
		DestinationIP: netip.MustParseAddr("10.96.0.10"), DestinationPort: 80,
		Method: "GET", Host: cartHost, Path: "/api/items",
		Header: http.Header{"X-Tenant": {"acme"}, "User-Agent": {"curl/8"}},
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		policies []*routeapi.WaypointPolicy
		change   func(*Request) // applied to baseRequest
		allowed  bool
		policy   string
	}{
		// Which policies apply, and the DENY → ALLOW → allow order.
		{name: "no policies", allowed: true},
		{name: "policies of another waypoint", allowed: true, policies: []*routeapi.WaypointPolicy{
			allow("a", &routeapi.PolicyTarget{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Namespace: "blog", Name: "waypoint"}}}),
			deny("d", svcTarget("reviews.shop.svc.cluster.local"), allowAny),
		}},
		{name: "matching ALLOW on the gateway", policies: []*routeapi.WaypointPolicy{allow("a", waypoint, allowAny)}, allowed: true, policy: "shop/a"},
		{name: "matching ALLOW on the service", policies: []*routeapi.WaypointPolicy{allow("a", cart, allowAny)}, allowed: true, policy: "shop/a"},
		{name: "no ALLOW matches", policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Methods: []string{"POST"}}))}},
		{name: "ALLOW without rules allows nothing", policies: []*routeapi.WaypointPolicy{allow("a", waypoint)}},
		{
			name:     "a service policy does not apply without a service",
			policies: []*routeapi.WaypointPolicy{allow("a", cart)},
			change:   func(r *Request) { r.ServiceHostname = "" },
			allowed:  true,
		},
		{
			name:     "one ALLOW matching is enough",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint), allow("b", cart, allowAny), allow("c", waypoint, allowAny)},
			allowed:  true, policy: "shop/b",
		},
		{
			name:     "DENY wins over ALLOW",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, allowAny), deny("z", cart, allowAny)},
			policy:   "shop/z",
		},
		{name: "DENY without rules denies nothing", policies: []*routeapi.WaypointPolicy{deny("d", waypoint)}, allowed: true},
		{
			name:     "non-matching DENY, no ALLOW",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, to(&routeapi.PolicyOperation{Paths: []string{"/admin*"}}))},
			allowed:  true,
		},
		{
			name:     "first matching DENY by name, across targets",
			policies: []*routeapi.WaypointPolicy{deny("c", waypoint, allowAny), deny("b", cart, allowAny), deny("d", cart, allowAny)},
			policy:   "shop/b",
		},
		{
			name: "a policy targeting the gateway and the service",
			policies: []*routeapi.WaypointPolicy{{Namespace: "shop", Name: "both", Targets: []*routeapi.PolicyTarget{waypoint, cart},
				Rules: []*routeapi.PolicyRule{to(&routeapi.PolicyOperation{Methods: []string{"POST"}})}}},
		},

		// Sources.
		{
			name:     "principal exact",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{"cluster.local/ns/shop/sa/frontend"}}))},
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "principal given without the scheme",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{"cluster.local/ns/shop/sa/frontend"}}))},
			change:   func(r *Request) { r.SourcePrincipal = "cluster.local/ns/shop/sa/frontend" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "principal of another service account",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{"cluster.local/ns/shop/sa/admin"}}))},
		},
		{
			name:     "service account principal of any trust domain",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{"*/ns/shop/sa/frontend"}}))},
			change:   func(r *Request) { r.SourcePrincipal = "spiffe://example.org/ns/shop/sa/frontend" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "service account suffix does not match a longer name",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{"*/ns/shop/sa/frontend"}}))},
			change:   func(r *Request) { r.SourcePrincipal = "spiffe://cluster.local/ns/xshop/sa/frontend" },
		},
		{
			name:     "any principal needs one",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{"*"}}))},
			change:   func(r *Request) { r.SourcePrincipal, r.SourceNamespace = "", "" },
		},
		{
			name:     "DENY not_principals any: the unauthenticated",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, from(&routeapi.PolicySource{NotPrincipals: []string{"*"}}))},
			change:   func(r *Request) { r.SourcePrincipal, r.SourceNamespace = "", "" },
			policy:   "shop/d",
		},
		{
			name:     "DENY not_principals any lets identities pass",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, from(&routeapi.PolicySource{NotPrincipals: []string{"*"}}))},
			allowed:  true,
		},
		{
			name:     "namespace prefix and not_namespaces suffix",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Namespaces: []string{"team-*"}, NotNamespaces: []string{"*-sandbox"}}))},
			change:   func(r *Request) { r.SourceNamespace = "team-blue" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "not_namespaces excludes",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Namespaces: []string{"team-*"}, NotNamespaces: []string{"*-sandbox"}}))},
			change:   func(r *Request) { r.SourceNamespace = "team-sandbox" },
		},
		{
			name:     "ip block",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{IpBlocks: []string{"10.244.0.0/16"}, NotIpBlocks: []string{"10.244.9.0/24"}}))},
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "IPv4-mapped source address",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{IpBlocks: []string{"10.244.0.5"}}))},
			change:   func(r *Request) { r.SourceIP = netip.MustParseAddr("::ffff:10.244.0.5") },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "not_ip_blocks excludes",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{IpBlocks: []string{"10.0.0.0/8"}, NotIpBlocks: []string{"10.244.0.0/24"}}))},
		},
		{
			name:     "unknown source IP matches no block",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{IpBlocks: []string{"0.0.0.0/0"}}))},
			change:   func(r *Request) { r.SourceIP = netip.Addr{} },
		},
		{
			name: "sources are ORed, their fields ANDed",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(
				&routeapi.PolicySource{Namespaces: []string{"shop"}, Principals: []string{"*/sa/admin"}},
				&routeapi.PolicySource{Namespaces: []string{"shop"}, IpBlocks: []string{"10.244.0.5/32"}},
			))},
			allowed: true, policy: "shop/a",
		},

		// Operations.
		{
			name:     "host case-insensitive, with a port",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Hosts: []string{"CART.shop.svc.cluster.local"}}))},
			change:   func(r *Request) { r.Host = "cart.Shop.svc.cluster.local:80" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "host value with its port",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Hosts: []string{"cart:8080"}}))},
			change:   func(r *Request) { r.Host = "cart:8080" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "host suffix; not_hosts with a port excluded",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Hosts: []string{"*.svc.cluster.local"}, NotHosts: []string{"cart.shop.svc.cluster.local"}}))},
			change:   func(r *Request) { r.Host = "cart.shop.svc.cluster.local:80" },
		},
		{
			name:     "IPv6 host with a port",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Hosts: []string{"[fd00::1]"}}))},
			change:   func(r *Request) { r.Host = "[fd00::1]:80" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "methods are case-sensitive",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Methods: []string{"GET"}}))},
			change:   func(r *Request) { r.Method = "get" },
		},
		{
			name:     "not_methods",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, to(&routeapi.PolicyOperation{NotMethods: []string{"GET", "HEAD"}}))},
			change:   func(r *Request) { r.Method = "DELETE" },
			policy:   "shop/d",
		},
		{
			name:     "path prefix, query ignored",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, to(&routeapi.PolicyOperation{Paths: []string{"/admin/*"}}))},
			change:   func(r *Request) { r.Path = "/admin/users?x=/y" },
			policy:   "shop/d",
		},
		{
			name:     "path exact does not take a query",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Paths: []string{"/healthz"}}))},
			change:   func(r *Request) { r.Path = "/healthz?full=1" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "path suffix and not_paths",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Paths: []string{"*.json"}, NotPaths: []string{"/private/*"}}))},
			change:   func(r *Request) { r.Path = "/private/keys.json" },
		},
		{
			name:     "any path",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Paths: []string{"*"}}))},
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "ports and not_ports",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(&routeapi.PolicyOperation{Ports: []uint32{80, 8080}, NotPorts: []uint32{8080}}))},
			change:   func(r *Request) { r.DestinationPort = 8080 },
		},
		{
			name: "operations are ORed",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, to(
				&routeapi.PolicyOperation{Methods: []string{"POST"}},
				&routeapi.PolicyOperation{Paths: []string{"/api/*"}, Ports: []uint32{80}},
			))},
			allowed: true, policy: "shop/a",
		},
		{
			name: "from, to and when are ANDed",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, &routeapi.PolicyRule{
				From: []*routeapi.PolicySource{{Namespaces: []string{"shop"}}},
				To:   []*routeapi.PolicyOperation{{Methods: []string{"GET"}}},
				When: []*routeapi.PolicyCondition{cond("request.headers[x-tenant]", "other")},
			})},
		},
		{
			name: "rules are ORed",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint,
				when(cond("request.headers[x-tenant]", "other")),
				from(&routeapi.PolicySource{Namespaces: []string{"shop"}}),
			)},
			allowed: true, policy: "shop/a",
		},

		// Conditions.
		{
			name:     "header by its lower-case name",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[x-tenant]", "ac*")))},
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "header stored under a lower-case key",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[x-tenant]", "acme")))},
			change:   func(r *Request) { r.Header = http.Header{"x-tenant": {"acme"}} },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "absent header matches only not_values",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, when(notCond("request.headers[x-token]", "*")))},
			policy:   "shop/d",
		},
		{
			name:     "absent header does not match a value",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[x-token]", "*")))},
		},
		{
			name:     "present empty header matches *",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[x-debug]", "*")))},
			change:   func(r *Request) { r.Header.Set("X-Debug", "") },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "repeated header is joined with commas",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[x-tenant]", "acme,globex")))},
			change:   func(r *Request) { r.Header.Add("X-Tenant", "globex") },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     ":authority is the Host, without its port too",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[:authority]", "*.svc.cluster.local")))},
			change:   func(r *Request) { r.Host += ":80" },
			allowed:  true, policy: "shop/a",
		},
		{
			name:     "host header is the Host",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("request.headers[host]", cartHost)))},
			allowed:  true, policy: "shop/a",
		},
		{
			name:     ":method",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, when(cond("request.headers[:method]", "GET")))},
			policy:   "shop/d",
		},
		{
			name: "source and destination conditions",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(
				cond("source.ip", "10.244.0.0/16"),
				cond("source.namespace", "shop"),
				cond("source.principal", "*/sa/frontend"),
				cond("destination.ip", "10.96.0.10"),
				cond("destination.port", "80"),
			))},
			allowed: true, policy: "shop/a",
		},
		{
			name:     "destination.port not_values",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(notCond("destination.port", "80")))},
		},
		{
			name:     "destination.ip not in range",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, when(cond("destination.ip", "10.96.1.0/24")))},
		},

		// What cannot be used never weakens a policy.
		{
			name: "ALLOW rule with a bad CIDR is left out",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint,
				from(&routeapi.PolicySource{Namespaces: []string{"shop"}, IpBlocks: []string{"10.0.0.0/33"}}))},
		},
		{
			name: "ALLOW keeps its good rules",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint,
				when(cond("request.auth.claims[groups]", "admins")),
				to(&routeapi.PolicyOperation{Methods: []string{"GET"}}))},
			allowed: true, policy: "shop/a",
		},
		{
			name:     "DENY ignores a bad CIDR, so it denies more",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, from(&routeapi.PolicySource{Namespaces: []string{"shop"}, IpBlocks: []string{"not-an-ip"}}))},
			policy:   "shop/d",
		},
		{
			name:     "DENY ignores a condition it cannot evaluate",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, to(&routeapi.PolicyOperation{Methods: []string{"GET"}}), when(cond("remote.ip", "192.0.2.1")))},
			policy:   "shop/d",
		},
		{
			name:     "DENY ignores a port above 65535",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, to(&routeapi.PolicyOperation{Ports: []uint32{70000}, Methods: []string{"GET"}}))},
			policy:   "shop/d",
		},
		{
			name:     "DENY with a null rule denies everything",
			policies: []*routeapi.WaypointPolicy{deny("d", waypoint, nil)},
			policy:   "shop/d",
		},
		{
			name:     "an empty principal would match the unauthenticated: unusable",
			policies: []*routeapi.WaypointPolicy{allow("a", waypoint, from(&routeapi.PolicySource{Principals: []string{""}}))},
			change:   func(r *Request) { r.SourcePrincipal, r.SourceNamespace = "", "" },
		},
		{
			name: "unknown action is DENY",
			policies: []*routeapi.WaypointPolicy{func() *routeapi.WaypointPolicy {
				p := allow("x", waypoint, allowAny)
				p.Action = 7
				return p
			}()},
			policy: "shop/x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, _ := Compile(tt.policies)
			r := baseRequest()
			if tt.change != nil {
				tt.change(&r)
			}
			allowed, policy := ps.Check(r)
			if allowed != tt.allowed || policy != tt.policy {
				t.Errorf("Check = %v, %q; want %v, %q", allowed, policy, tt.allowed, tt.policy)
			}
		})
	}
}

func TestNilPolicies(t *testing.T) {
	var ps *Policies
	if allowed, policy := ps.Check(baseRequest()); !allowed || policy != "" {
		t.Errorf("nil Policies: Check = %v, %q; want allowed", allowed, policy)
	}
	if ps.Len() != 0 || ps.Names() != nil {
		t.Errorf("nil Policies: Len %d, Names %v", ps.Len(), ps.Names())
	}
}

func TestCompileErrors(t *testing.T) {
	noTarget := &routeapi.WaypointPolicy{Namespace: "shop", Name: "nowhere", Targets: []*routeapi.PolicyTarget{
		{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Name: "waypoint"}}},
		svcTarget(""),
		{},
	}}
	unknownAction := allow("odd", waypoint)
	unknownAction.Action = 9
	tests := []struct {
		name      string
		policies  []*routeapi.WaypointPolicy
		wantNames []string            // compiled in
		wantErrs  map[string][]string // policy → substrings of its reasons, in order
	}{
		{name: "clean", policies: []*routeapi.WaypointPolicy{allow("a", waypoint, allowAny), nil, deny("d", cart, allowAny)}, wantNames: []string{"shop/a", "shop/d"}},
		{
			name:     "no usable target: left out",
			policies: []*routeapi.WaypointPolicy{noTarget},
			wantErrs: map[string][]string{"shop/nowhere": {"target 0: a gateway needs a namespace", "target 1: empty service hostname", "target 2: neither", "no usable target"}},
		},
		{
			name:      "unknown action",
			policies:  []*routeapi.WaypointPolicy{unknownAction},
			wantNames: []string{"shop/odd"},
			wantErrs:  map[string][]string{"shop/odd": {"unknown action 9; applied as DENY"}},
		},
		{
			name: "ALLOW rules left out, DENY attributes ignored",
			policies: []*routeapi.WaypointPolicy{
				allow("a", waypoint, from(&routeapi.PolicySource{IpBlocks: []string{"10.0.0.0/40"}}), allowAny, to(&routeapi.PolicyOperation{Ports: []uint32{65536}})),
				deny("d", waypoint, when(cond("request.headers[:path]", "/x"), cond("request.headers[]", "x"), &routeapi.PolicyCondition{Key: "source.ip"}, nil)),
			},
			wantNames: []string{"shop/a", "shop/d"},
			wantErrs: map[string][]string{
				"shop/a": {`rule 0: from[0].ip_blocks: "10.0.0.0/40" is not an IP address or CIDR range; the ALLOW rule is left out`, "rule 2: to[0].ports: 65536 is not a port number"},
				"shop/d": {"rule 0: when[0] (request.headers[:path]): pseudo-header :path is not evaluated, when[1] (request.headers[]): a key a waypoint does not evaluate, when[2] (source.ip) has neither values nor not_values, when[3] is null; ignored, so the DENY rule denies more"},
			},
		},
		{
			name:      "duplicate names",
			policies:  []*routeapi.WaypointPolicy{allow("a", waypoint, allowAny), deny("a", cart, allowAny)},
			wantNames: []string{"shop/a", "shop/a"},
			wantErrs:  map[string][]string{"shop/a": {"a second resource with this name; both are applied"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, errs := Compile(tt.policies)
			if diff := cmp.Diff(tt.wantNames, ps.Names()); diff != "" {
				t.Errorf("compiled policies (-want +got):\n%s", diff)
			}
			got := map[string][]string{}
			for _, err := range errs {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("error %v is a %T, want *Error", err, err)
				}
				if !strings.HasPrefix(err.Error(), "waypoint policy "+e.Policy+": ") {
					t.Errorf("error text %q", err)
				}
				got[e.Policy] = append(got[e.Policy], e.Reasons...)
			}
			if len(got) != len(tt.wantErrs) {
				t.Errorf("errors for %d policies (%v), want %d", len(got), got, len(tt.wantErrs))
			}
			for name, want := range tt.wantErrs {
				if len(got[name]) != len(want) {
					t.Errorf("%s: reasons %q, want %d", name, got[name], len(want))
					continue
				}
				for i, w := range want {
					if !strings.Contains(got[name][i], w) {
						t.Errorf("%s: reason %d %q, want it to contain %q", name, i, got[name][i], w)
					}
				}
			}
		})
	}
}

func TestStripPort(t *testing.T) {
	for host, want := range map[string]string{
		"cart":          "",
		"cart:80":       "cart",
		"cart:":         "",
		"cart:http":     "",
		"10.0.0.1:8080": "10.0.0.1",
		"[fd00::1]:80":  "[fd00::1]",
		"[fd00::1]":     "",
		"fd00::1":       "",
		"":              "",
	} {
		if got := stripPort(host); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", host, got, want)
		}
	}
}
