package state

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Three connections, as in ztunnel's own rbac tests: one without identity,
// one from td/ns/namespace/sa/account, one from elsewhere.
var (
	plainConn = Conn{Source: ap("127.0.0.1:1234"), Destination: ap("127.0.0.2:8080")}
	tlsConn   = Conn{
		SourceIdentity: hbone.Identity{TrustDomain: "td", Namespace: "namespace", ServiceAccount: "account"},
		Source:         ap("127.0.0.1:1234"), Destination: ap("127.0.0.2:8080"),
	}
	altConn = Conn{
		SourceIdentity: hbone.Identity{TrustDomain: "td-alt", Namespace: "ns-alt", ServiceAccount: "sa-alt"},
		Source:         ap("127.0.0.3:1234"), Destination: ap("127.0.0.4:9090"),
	}
)

// compiled converts an ALLOW policy with the given groups, as the store does.
func compiled(t *testing.T, groups ...*security.Group) *Policy {
	t.Helper()
	p, err := convertPolicy(policy("namespace", "p", security.Scope_GLOBAL, security.Action_ALLOW, groups...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyEmptyForms(t *testing.T) {
	tests := []struct {
		name   string
		groups []*security.Group
		want   bool
	}{
		{"no rules matches nothing", nil, false},
		{"a rule without clauses matches everything", []*security.Group{group()}, true},
		{"a clause without matches matches everything", []*security.Group{group(clause())}, true},
		{"an empty match never matches", []*security.Group{group(clause(&security.Match{}))}, false},
		{"an empty match is skipped, the next one decides", []*security.Group{group(clause(&security.Match{}, &security.Match{DestinationPorts: []uint32{8080}}))}, true},
		{"a string match without a form is dropped, leaving an empty match", []*security.Group{group(clause(&security.Match{Principals: []*security.StringMatch{{}}}))}, false},
		{"a not_ string match without a form is dropped too", []*security.Group{group(clause(&security.Match{NotPrincipals: []*security.StringMatch{{}}}))}, false},
		{"an unreadable address is dropped", []*security.Group{group(clause(&security.Match{SourceIps: []*security.Address{{Address: []byte{1, 2, 3}, Length: 8}}}))}, false},
		{"a prefix longer than the address is dropped", []*security.Group{group(clause(&security.Match{
			NotSourceIps: []*security.Address{{Address: ipBytes("127.0.0.1"), Length: 33}}, DestinationPorts: []uint32{8080},
		}))}, true},
		{"ports are truncated to 16 bits as in ztunnel", []*security.Group{group(clause(&security.Match{DestinationPorts: []uint32{65536 + 8080}}))}, true},
		{"rules are ORed", []*security.Group{
			group(clause(&security.Match{DestinationPorts: []uint32{1}})),
			group(clause(&security.Match{DestinationPorts: []uint32{8080}})),
		}, true},
		{"clauses are ANDed", []*security.Group{group(
			clause(&security.Match{DestinationPorts: []uint32{8080}}),
			clause(&security.Match{Namespaces: []*security.StringMatch{exact("other")}}),
		)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := compiled(t, tc.groups...).Matches(tlsConn); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

// Each field alone, and its not_ form, against the three connections
// (ztunnel's rbac_test! cases, plus the principal forms Istio sends).
func TestPolicyMatchFields(t *testing.T) {
	tests := []struct {
		name            string
		match           *security.Match
		plain, tls, alt bool
	}{
		{"namespaces", &security.Match{Namespaces: []*security.StringMatch{exact("namespace")}}, false, true, false},
		{"not_namespaces", &security.Match{NotNamespaces: []*security.StringMatch{exact("namespace")}}, true, false, true},
		{"namespaces presence", &security.Match{Namespaces: []*security.StringMatch{presence()}}, false, true, true},
		{"namespaces exact empty matches plaintext", &security.Match{Namespaces: []*security.StringMatch{exact("")}}, true, false, false},
		{"service_accounts", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}}, false, true, false},
		{"not_service_accounts", &security.Match{NotServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}}, true, false, true},
		{"principals exact", &security.Match{Principals: []*security.StringMatch{exact("td/ns/namespace/sa/account")}}, false, true, false},
		{"not_principals exact", &security.Match{NotPrincipals: []*security.StringMatch{exact("td/ns/namespace/sa/account")}}, true, false, true},
		{"principals with spiffe:// never match", &security.Match{Principals: []*security.StringMatch{exact("spiffe://td/ns/namespace/sa/account")}}, false, false, false},
		{"principals prefix", &security.Match{Principals: []*security.StringMatch{prefix("td/")}}, false, true, false},
		{"principals suffix", &security.Match{Principals: []*security.StringMatch{suffix("/sa/sa-alt")}}, false, false, true},
		{"principals presence", &security.Match{Principals: []*security.StringMatch{presence()}}, false, true, true},
		{"not_principals presence (STRICT)", &security.Match{NotPrincipals: []*security.StringMatch{presence()}}, true, false, false},
		{"not_principals prefix", &security.Match{NotPrincipals: []*security.StringMatch{prefix("td-alt/")}}, true, true, false},
		{"source_ips", &security.Match{SourceIps: []*security.Address{cidr("127.0.0.1/32")}}, true, true, false},
		{"not_source_ips", &security.Match{NotSourceIps: []*security.Address{cidr("127.0.0.1/32")}}, false, false, true},
		{"source_ips prefix", &security.Match{SourceIps: []*security.Address{cidr("127.0.0.0/31")}}, true, true, false},
		{"source_ips v6 never matches v4", &security.Match{SourceIps: []*security.Address{cidr("::/0")}}, false, false, false},
		{"destination_ips", &security.Match{DestinationIps: []*security.Address{cidr("127.0.0.2/32")}}, true, true, false},
		{"not_destination_ips", &security.Match{NotDestinationIps: []*security.Address{cidr("127.0.0.2/32")}}, false, false, true},
		{"destination_ports", &security.Match{DestinationPorts: []uint32{8080}}, true, true, false},
		{"not_destination_ports", &security.Match{NotDestinationPorts: []uint32{8080}}, false, false, true},
		{"positive and not_ of one field", &security.Match{
			Namespaces: []*security.StringMatch{presence()}, NotNamespaces: []*security.StringMatch{exact("ns-alt")},
		}, false, true, false},
		{"fields are ANDed", &security.Match{
			Namespaces: []*security.StringMatch{exact("namespace")}, NotDestinationPorts: []uint32{8080},
		}, false, false, false},
		{"entries of a field are ORed", &security.Match{
			Namespaces: []*security.StringMatch{exact("nope"), exact("ns-alt")},
		}, false, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := compiled(t, group(clause(tc.match)))
			got := [3]bool{p.Matches(plainConn), p.Matches(tlsConn), p.Matches(altConn)}
			if want := [3]bool{tc.plain, tc.tls, tc.alt}; got != want {
				t.Errorf("plaintext, tls, alt = %v, want %v", got, want)
			}
		})
	}
}

// ztunnel's rbac_nesting: a clause ORs its matches, a rule ANDs clauses.
func TestPolicyNesting(t *testing.T) {
	p := compiled(t, group(
		clause(&security.Match{Namespaces: []*security.StringMatch{exact("a")}}, &security.Match{Namespaces: []*security.StringMatch{exact("b")}}),
		clause(&security.Match{DestinationPorts: []uint32{80}}),
	))
	for _, tc := range []struct {
		ns   string
		dst  string
		want bool
	}{
		{"a", "127.0.0.2:80", true},
		{"b", "127.0.0.2:80", true},
		{"bad", "127.0.0.2:80", false},
		{"b", "127.0.0.2:12345", false},
	} {
		c := Conn{SourceIdentity: hbone.Identity{TrustDomain: "td", Namespace: tc.ns, ServiceAccount: "x"}, Source: ap("127.0.0.1:1"), Destination: ap(tc.dst)}
		if got := p.Matches(c); got != tc.want {
			t.Errorf("%s → %s: %v, want %v", tc.ns, tc.dst, got, tc.want)
		}
	}
}

// Authorize over a store: which policies apply, and in which order they
// decide.
func TestAuthorize(t *testing.T) {
	fromNS := func(ns ...string) *security.Group {
		var ms []*security.StringMatch
		for _, n := range ns {
			ms = append(ms, exact(n))
		}
		return group(clause(&security.Match{Namespaces: ms}))
	}
	port := func(p uint32) *security.Group { return group(clause(&security.Match{DestinationPorts: []uint32{p}})) }
	dryRunDeny := policy("shop", "dry-deny", security.Scope_NAMESPACE, security.Action_DENY, group())
	dryRunDeny.DryRun = true
	dryRunAllow := policy("quiet", "dry-allow", security.Scope_NAMESPACE, security.Action_ALLOW, fromNS("nobody"))
	dryRunAllow.DryRun = true

	s := storeWith(t, Config{}, []*workloadapi.Address{
		wAddr(pod("shop", "cart-0", "10.0.0.1")),
		wAddr(pod("shop", "db-0", "10.0.0.2", policies("shop/db-allow-cart", "shop/db-deny-9000", "shop/not-sent"))),
		wAddr(pod("open", "web-0", "10.0.1.1")),
		wAddr(pod("quiet", "q-0", "10.0.2.1")),
		wAddr(pod("locked", "l-0", "10.0.3.1")),
	},
		// shop: namespace ALLOW from shop and frontend; db-0 also from cart only, and never port 9000.
		policy("shop", "ns-allow", security.Scope_NAMESPACE, security.Action_ALLOW, fromNS("shop", "frontend")),
		policy("shop", "db-allow-cart", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW,
			group(clause(&security.Match{Principals: []*security.StringMatch{exact("cluster.local/ns/other/sa/cart")}}))),
		policy("shop", "db-deny-9000", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY, port(9000)),
		// A selector policy no workload names applies to nobody.
		policy("open", "unnamed-deny", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY, group()),
		// Global: deny the namespace "evil" everywhere.
		policy("istio-system", "deny-evil", security.Scope_GLOBAL, security.Action_DENY, fromNS("evil")),
		dryRunDeny, dryRunAllow,
		// locked: an ALLOW policy without rules allows nothing.
		policy("locked", "allow-nothing", security.Scope_NAMESPACE, security.Action_ALLOW),
	)
	tests := []struct {
		name string
		from hbone.Identity
		to   string
		want Verdict
	}{
		{"namespace allow matches", id("frontend", "web"), "10.0.0.1:80", Verdict{Allowed: true, Policy: "shop/ns-allow", Reason: ReasonAllowPolicy, DryRun: []string{"shop/dry-deny"}}},
		{"namespace allow, other namespace", id("guest", "x"), "10.0.0.1:80", Verdict{Reason: ReasonNotAllowed, DryRun: []string{"shop/dry-deny"}}},
		{"any allow of several (selector) matches", id("other", "cart"), "10.0.0.2:5432", Verdict{Allowed: true, Policy: "shop/db-allow-cart", Reason: ReasonAllowPolicy, DryRun: []string{"shop/dry-deny"}}},
		{"deny beats allow", id("shop", "cart-0"), "10.0.0.2:9000", Verdict{Policy: "shop/db-deny-9000", Reason: ReasonDenyPolicy, DryRun: []string{"shop/dry-deny"}}},
		{"global deny applies in every namespace", id("evil", "x"), "10.0.1.1:80", Verdict{Policy: "istio-system/deny-evil", Reason: ReasonDenyPolicy}},
		{"global deny beats namespace allow", id("evil", "x"), "10.0.0.1:80", Verdict{Policy: "istio-system/deny-evil", Reason: ReasonDenyPolicy, DryRun: []string{"shop/dry-deny"}}},
		{"no allow policy: allowed; unnamed selector policy ignored", id("guest", "x"), "10.0.1.1:80", Verdict{Allowed: true, Reason: ReasonNoAllowPolicy}},
		{"plaintext with no allow policy", hbone.Identity{}, "10.0.1.1:80", Verdict{Allowed: true, Reason: ReasonNoAllowPolicy}},
		{"dry-run allow is not enforced", id("guest", "x"), "10.0.2.1:80", Verdict{Allowed: true, Reason: ReasonNoAllowPolicy}},
		{"allow policy without rules allows nothing", id("shop", "x"), "10.0.3.1:80", Verdict{Reason: ReasonNotAllowed}},
		{"unknown destination", id("shop", "x"), "10.9.9.9:80", Verdict{Reason: ReasonUnknownDestination}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ConnInfo{SourceIdentity: tc.from, Source: ap("10.0.9.9:40000"), Destination: ap(tc.to)}
			if diff := cmp.Diff(tc.want, s.Check(c)); diff != "" {
				t.Errorf("Check (-want +got)\n%s", diff)
			}
			allowed, pol := s.Authorize(c)
			if allowed != tc.want.Allowed || pol != tc.want.Policy {
				t.Errorf("Authorize = %v, %q", allowed, pol)
			}
		})
	}
}

// PeerAuthentication STRICT arrives as a DENY policy with not_principals:
// [presence], named by the workloads it covers: plaintext is denied, any
// mTLS peer passes it.
func TestStrictDeniesPlaintext(t *testing.T) {
	strict := policy("istio-system", "istio_converted_static_strict", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY,
		group(clause(&security.Match{NotPrincipals: []*security.StringMatch{presence()}})))
	// Port-level PERMISSIVE on 8080 (converted_peer_authentication_*):
	// deny without identity unless the port is 8080.
	portLevel := policy("shop", "converted_peer_authentication_db", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY,
		group(clause(&security.Match{NotPrincipals: []*security.StringMatch{presence()}}), clause(&security.Match{NotDestinationPorts: []uint32{8080}})))
	s := storeWith(t, Config{}, []*workloadapi.Address{
		wAddr(pod("shop", "strict", "10.0.0.1", policies("istio-system/istio_converted_static_strict"))),
		wAddr(pod("shop", "db", "10.0.0.2", policies("shop/converted_peer_authentication_db"))),
		wAddr(pod("shop", "permissive", "10.0.0.3")),
	}, strict, portLevel)
	for _, tc := range []struct {
		to   string
		from hbone.Identity
		want bool
	}{
		{"10.0.0.1:80", hbone.Identity{}, false},
		{"10.0.0.1:80", id("shop", "client"), true},
		{"10.0.0.2:5432", hbone.Identity{}, false},
		{"10.0.0.2:8080", hbone.Identity{}, true},
		{"10.0.0.2:5432", id("shop", "client"), true},
		{"10.0.0.3:80", hbone.Identity{}, true},
	} {
		t.Run(fmt.Sprintf("%s from %q", tc.to, tc.from), func(t *testing.T) {
			allowed, pol := s.Authorize(ConnInfo{SourceIdentity: tc.from, Source: ap("10.0.0.9:1234"), Destination: ap(tc.to)})
			if allowed != tc.want {
				t.Errorf("allowed = %v (policy %q), want %v", allowed, pol, tc.want)
			}
		})
	}
}

// The principal is matched part by part; compare with matching the joined
// string.
func TestPrincipalPartsMatching(t *testing.T) {
	ids := []hbone.Identity{
		{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"},
		{TrustDomain: "td", Namespace: "n", ServiceAccount: "s"},
		{TrustDomain: "a/b", Namespace: "ns", ServiceAccount: "sa/x"},
	}
	values := []string{"", "c", "cluster.local", "cluster.local/", "cluster.local/ns/shop", "cluster.local/ns/shop/sa/cart",
		"cluster.local/ns/shop/sa/cart2", "cluster.local/ns/shop/sa/car", "/ns/shop/sa/cart", "shop/sa/cart", "t", "art",
		"td/ns/n/sa/s", "d/ns/n/sa/s", "a/b/ns/ns/sa/sa/x", "/sa/x", "xtd/ns/n/sa/s", "td/ns/n/sa/sx"}
	for _, i := range ids {
		joined := i.TrustDomain + "/ns/" + i.Namespace + "/sa/" + i.ServiceAccount
		pe := peer{c: &Conn{SourceIdentity: i}}
		for _, v := range values {
			for _, k := range []MatchKind{Exact, Prefix, Suffix, Presence} {
				m := StringMatch{Kind: k, Value: v}
				if got, want := pe.matchPrincipal(m), m.matches(joined); got != want {
					t.Errorf("%v %q on %q: %v, want %v", k, v, joined, got, want)
				}
			}
		}
	}
}
