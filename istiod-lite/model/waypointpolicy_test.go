package model

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

func TestTranslateWaypointRule(t *testing.T) {
	from := func(s *securityv1beta1.Source) []*securityv1beta1.Rule_From {
		return []*securityv1beta1.Rule_From{{Source: s}}
	}
	to := func(o *securityv1beta1.Operation) []*securityv1beta1.Rule_To {
		return []*securityv1beta1.Rule_To{{Operation: o}}
	}
	tests := []struct {
		name        string
		allow       bool
		rule        *securityv1beta1.Rule
		want        *routeapi.PolicyRule // nil: omitted
		wantProblem string               // substring of the reason; "" for none
	}{
		{name: "empty rule matches every request", allow: true, rule: &securityv1beta1.Rule{}, want: &routeapi.PolicyRule{}},
		{name: "null rule in ALLOW is omitted", allow: true, rule: nil, want: nil, wantProblem: "the rule is null"},
		{name: "null rule in DENY matches every request", rule: nil, want: &routeapi.PolicyRule{}, wantProblem: "the rule is null"},
		{
			name:  "service accounts become principals of any trust domain",
			allow: true,
			rule:  &securityv1beta1.Rule{From: from(&securityv1beta1.Source{ServiceAccounts: []string{"cart", "blog/writer"}, NotServiceAccounts: []string{"robot"}})},
			want: &routeapi.PolicyRule{From: []*routeapi.PolicySource{{
				Principals:    []string{"*/ns/shop/sa/cart", "*/ns/blog/sa/writer"},
				NotPrincipals: []string{"*/ns/shop/sa/robot"},
			}}},
		},
		{
			name:  "notServiceAccounts join notPrincipals",
			allow: true,
			rule:  &securityv1beta1.Rule{From: from(&securityv1beta1.Source{NotPrincipals: []string{"td/ns/a/sa/b"}, NotServiceAccounts: []string{"x/y"}})},
			want:  &routeapi.PolicyRule{From: []*routeapi.PolicySource{{NotPrincipals: []string{"td/ns/a/sa/b", "*/ns/x/sa/y"}}}},
		},
		{
			name:  "namespaces and serviceAccounts are ANDed fields",
			allow: true,
			rule:  &securityv1beta1.Rule{From: from(&securityv1beta1.Source{Namespaces: []string{"shop"}, ServiceAccounts: []string{"cart"}})},
			want:  &routeapi.PolicyRule{From: []*routeapi.PolicySource{{Namespaces: []string{"shop"}, Principals: []string{"*/ns/shop/sa/cart"}}}},
		},
		{
			name:        "principals with serviceAccounts: DENY keeps the principals",
			rule:        &securityv1beta1.Rule{From: from(&securityv1beta1.Source{Principals: []string{"td/ns/a/sa/b"}, ServiceAccounts: []string{"c"}})},
			want:        &routeapi.PolicyRule{From: []*routeapi.PolicySource{{Principals: []string{"td/ns/a/sa/b"}}}},
			wantProblem: "sets both principals and serviceAccounts",
		},
		{
			name:  "namespace wildcards at either end",
			allow: true,
			rule:  &securityv1beta1.Rule{From: from(&securityv1beta1.Source{Namespaces: []string{"*", "team-*", "*-prod"}})},
			want:  &routeapi.PolicyRule{From: []*routeapi.PolicySource{{Namespaces: []string{"*", "team-*", "*-prod"}}}},
		},
		{
			name:        "two namespace wildcards are not evaluated",
			allow:       true,
			rule:        &securityv1beta1.Rule{From: from(&securityv1beta1.Source{Namespaces: []string{"*team*"}})},
			wantProblem: `"*team*": a '*' inside`,
		},
		{
			name:        "DENY ignores a namespace field it cannot evaluate, keeping the rest",
			rule:        &securityv1beta1.Rule{From: from(&securityv1beta1.Source{Namespaces: []string{"a*b"}, IpBlocks: []string{"10.0.0.1"}})},
			want:        &routeapi.PolicyRule{From: []*routeapi.PolicySource{{IpBlocks: []string{"10.0.0.1/32"}}}},
			wantProblem: "a '*' inside",
		},
		{
			name:  "CIDRs are masked, IPv6 too",
			allow: true,
			rule:  &securityv1beta1.Rule{From: from(&securityv1beta1.Source{IpBlocks: []string{"10.1.2.3/8", "fd00::1", "fd00::1/16"}})},
			want:  &routeapi.PolicyRule{From: []*routeapi.PolicySource{{IpBlocks: []string{"10.0.0.0/8", "fd00::1/128", "fd00::/16"}}}},
		},
		{
			name:        "an empty principal omits an ALLOW rule",
			allow:       true,
			rule:        &securityv1beta1.Rule{From: from(&securityv1beta1.Source{Principals: []string{""}})},
			wantProblem: "principals: empty value",
		},
		{
			name:        "a source with only requestPrincipals matches every source in DENY",
			rule:        &securityv1beta1.Rule{From: from(&securityv1beta1.Source{RequestPrincipals: []string{"*"}}), To: to(&securityv1beta1.Operation{Methods: []string{"POST"}})},
			want:        &routeapi.PolicyRule{From: []*routeapi.PolicySource{{}}, To: []*routeapi.PolicyOperation{{Methods: []string{"POST"}}}},
			wantProblem: "(requestPrincipals)",
		},
		{
			name:        "to without an operation in DENY matches every request",
			rule:        &securityv1beta1.Rule{To: []*securityv1beta1.Rule_To{{}}},
			want:        &routeapi.PolicyRule{To: []*routeapi.PolicyOperation{{}}},
			wantProblem: "to[0] has no operation",
		},
		{
			name:  "header names are lower-cased; :authority and :method are evaluated",
			allow: true,
			rule: &securityv1beta1.Rule{When: []*securityv1beta1.Condition{
				{Key: "request.headers[X-Tenant]", Values: []string{"acme"}},
				{Key: "request.headers[:Authority]", NotValues: []string{"*.internal"}},
				{Key: "request.headers[:method]", Values: []string{"GET"}},
			}},
			want: &routeapi.PolicyRule{When: []*routeapi.PolicyCondition{
				{Key: "request.headers[x-tenant]", Values: []string{"acme"}},
				{Key: "request.headers[:authority]", NotValues: []string{"*.internal"}},
				{Key: "request.headers[:method]", Values: []string{"GET"}},
			}},
		},
		{
			name:        "an empty header name is malformed",
			allow:       true,
			rule:        &securityv1beta1.Rule{When: []*securityv1beta1.Condition{{Key: "request.headers[]", Values: []string{"x"}}}},
			wantProblem: "malformed key",
		},
		{
			name:  "source.serviceAccount becomes source.principal; ports are canonical",
			allow: true,
			rule: &securityv1beta1.Rule{When: []*securityv1beta1.Condition{
				{Key: "source.serviceAccount", Values: []string{"cart"}, NotValues: []string{"other/cart"}},
				{Key: "destination.port", Values: []string{"0080"}},
			}},
			want: &routeapi.PolicyRule{When: []*routeapi.PolicyCondition{
				{Key: "source.principal", Values: []string{"*/ns/shop/sa/cart"}, NotValues: []string{"*/ns/other/sa/cart"}},
				{Key: "destination.port", Values: []string{"80"}},
			}},
		},
		{
			name:        "remote.ip is not evaluated: DENY ignores the condition",
			rule:        &securityv1beta1.Rule{When: []*securityv1beta1.Condition{{Key: "remote.ip", Values: []string{"192.0.2.1"}}, {Key: "source.namespace", Values: []string{"guest"}}}},
			want:        &routeapi.PolicyRule{When: []*routeapi.PolicyCondition{{Key: "source.namespace", Values: []string{"guest"}}}},
			wantProblem: "(remote.ip)",
		},
		{
			name:        "a bad destination.ip drops the condition whole",
			rule:        &securityv1beta1.Rule{When: []*securityv1beta1.Condition{{Key: "destination.ip", Values: []string{"10.0.0.1"}, NotValues: []string{"10.0.0.300"}}}},
			want:        &routeapi.PolicyRule{},
			wantProblem: `"10.0.0.300" is not an IP address`,
		},
		{
			name:        "path templates are not evaluated",
			allow:       true,
			rule:        &securityv1beta1.Rule{To: to(&securityv1beta1.Operation{NotPaths: []string{"/a/{**}"}})},
			wantProblem: "path templates",
		},
		{
			name:  "operation fields pass through",
			allow: true,
			rule: &securityv1beta1.Rule{To: to(&securityv1beta1.Operation{
				Hosts: []string{"Cart.Shop"}, NotHosts: []string{"*.internal"}, Methods: []string{"GET"}, NotMethods: []string{"PUT"},
				Paths: []string{"/a*"}, NotPaths: []string{"*.php"}, Ports: []string{"80"}, NotPorts: []string{"81"},
			})},
			want: &routeapi.PolicyRule{To: []*routeapi.PolicyOperation{{
				Hosts: []string{"Cart.Shop"}, NotHosts: []string{"*.internal"}, Methods: []string{"GET"}, NotMethods: []string{"PUT"},
				Paths: []string{"/a*"}, NotPaths: []string{"*.php"}, Ports: []uint32{80}, NotPorts: []uint32{81},
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, issues := translateWaypointRule(tt.allow, tt.rule, "shop")
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("rule (-want +got):\n%s", diff)
			}
			reason := issues.describe(0, tt.allow, waypointWords)
			if tt.wantProblem == "" && reason != "" || !strings.Contains(reason, tt.wantProblem) {
				t.Errorf("problem %q, want one containing %q", reason, tt.wantProblem)
			}
		})
	}
}

// TestWaypointPolicyActions checks what each action becomes, and that
// ztunnel's view is unaffected by waypoint policies.
func TestWaypointPolicyActions(t *testing.T) {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "waypoint"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointGatewayClass}}
	target := []*typev1beta1.PolicyTargetReference{{Group: groupGatewayAPI, Kind: kindGateway, Name: "waypoint"}}
	allowAll := []*securityv1beta1.Rule{{}}
	tests := []struct {
		name        string
		annotations map[string]string
		spec        *securityv1beta1.AuthorizationPolicy
		want        *routeapi.WaypointPolicy // nil: not served
		wantProblem string                   // substring of the only problem; "" for none
	}{
		{
			name: "allow",
			spec: &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Rules: allowAll},
			want: &routeapi.WaypointPolicy{Rules: []*routeapi.PolicyRule{{}}},
		},
		{
			name: "deny",
			spec: &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Action: securityv1beta1.AuthorizationPolicy_DENY, Rules: allowAll},
			want: &routeapi.WaypointPolicy{Action: routeapi.PolicyAction_POLICY_ACTION_DENY, Rules: []*routeapi.PolicyRule{{}}},
		},
		{
			name: "allow without rules allows nothing",
			spec: &securityv1beta1.AuthorizationPolicy{TargetRefs: target},
			want: &routeapi.WaypointPolicy{},
		},
		{
			name: "custom fails closed as deny of its rules",
			spec: &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Action: securityv1beta1.AuthorizationPolicy_CUSTOM,
				ActionDetail: &securityv1beta1.AuthorizationPolicy_Provider{Provider: &securityv1beta1.AuthorizationPolicy_ExtensionProvider{Name: "opa"}},
				Rules:        []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Paths: []string{"/x"}}}}}}},
			want: &routeapi.WaypointPolicy{Action: routeapi.PolicyAction_POLICY_ACTION_DENY,
				Rules: []*routeapi.PolicyRule{{To: []*routeapi.PolicyOperation{{Paths: []string{"/x"}}}}}},
			wantProblem: `CUSTOM (provider "opa")`,
		},
		{
			name:        "audit is not served",
			spec:        &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Action: securityv1beta1.AuthorizationPolicy_AUDIT, Rules: allowAll},
			wantProblem: "AUDIT",
		},
		{
			name:        "unknown action is not served",
			spec:        &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Action: securityv1beta1.AuthorizationPolicy_Action(42)},
			wantProblem: "do not enforce action 42",
		},
		{
			name:        "dry-run is not served",
			annotations: map[string]string{AnnotationDryRun: "true"},
			spec:        &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Action: securityv1beta1.AuthorizationPolicy_DENY, Rules: allowAll},
			wantProblem: "dry-run",
		},
		{
			name:        "unparsable dry-run is enforced",
			annotations: map[string]string{AnnotationDryRun: "perhaps"},
			spec:        &securityv1beta1.AuthorizationPolicy{TargetRefs: target, Rules: allowAll},
			want:        &routeapi.WaypointPolicy{Rules: []*routeapi.PolicyRule{{}}},
			wantProblem: "is not a boolean",
		},
		{
			name: "deprecated targetRef",
			spec: &securityv1beta1.AuthorizationPolicy{TargetRef: target[0], Rules: allowAll},
			want: &routeapi.WaypointPolicy{Rules: []*routeapi.PolicyRule{{}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &AuthorizationPolicy{Namespace: "shop", Name: "p", Annotations: tt.annotations, Spec: tt.spec}
			v := Build(Config{}, Snapshot{Gateways: []*gatewayv1.Gateway{gw}, AuthorizationPolicies: []*AuthorizationPolicy{p}})
			var want []*routeapi.WaypointPolicy
			if tt.want != nil {
				tt.want.Name, tt.want.Namespace = "p", "shop"
				tt.want.Targets = []*routeapi.PolicyTarget{{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Namespace: "shop", Name: "waypoint"}}}}
				want = []*routeapi.WaypointPolicy{tt.want}
			}
			if diff := cmp.Diff(want, v.WaypointPolicies, protocmp.Transform()); diff != "" {
				t.Errorf("WaypointPolicies (-want +got):\n%s", diff)
			}
			if len(v.Authorizations) > 0 {
				t.Errorf("a waypoint policy reached ztunnel: %v", v.Authorizations)
			}
			switch {
			case tt.wantProblem == "" && len(v.Problems) > 0:
				t.Errorf("problems %v, want none", v.Problems)
			case tt.wantProblem != "" && (len(v.Problems) != 1 || !strings.Contains(v.Problems[0].Reason, tt.wantProblem)):
				t.Errorf("problems %v, want one containing %q", v.Problems, tt.wantProblem)
			}
		})
	}
}

func TestDiffWaypointPolicies(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	policy := func(name string, methods ...string) *AuthorizationPolicy {
		return &AuthorizationPolicy{Namespace: "shop", Name: name, Spec: &securityv1beta1.AuthorizationPolicy{
			TargetRefs: []*typev1beta1.PolicyTargetReference{{Kind: kindService, Name: "cart"}},
			Rules:      []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: methods}}}}},
		}}
	}
	build := func(aps ...*AuthorizationPolicy) *View {
		return Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{ns}, AuthorizationPolicies: aps})
	}
	base := build(policy("a", "GET"), policy("b", "GET"))
	tests := []struct {
		name     string
		old, new *View
		want     Changes
	}{
		{name: "rebuilt from copies", old: base, new: build(policy("a", "GET"), policy("b", "GET"))},
		{name: "rule changed", old: base, new: build(policy("a", "GET"), policy("b", "POST")), want: Changes{Updated: []string{"shop/b"}}},
		{name: "policy deleted", old: base, new: build(policy("a", "GET")), want: Changes{Removed: []string{"shop/b"}}},
		{name: "from nothing", old: nil, new: base, want: Changes{Updated: []string{"shop/a", "shop/b"}}},
		{name: "to nothing", old: base, new: &View{}, want: Changes{Removed: []string{"shop/a", "shop/b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, DiffWaypointPolicies(tt.old, tt.new)); diff != "" {
				t.Errorf("DiffWaypointPolicies (-want +got):\n%s", diff)
			}
			if c := DiffAuthorizations(tt.old, tt.new); !c.Empty() {
				t.Errorf("waypoint policies changed Authorizations: %+v", c)
			}
		})
	}
}
