package model

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	"istio.io/istio/pkg/workloadapi/security"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDiffAuthorizations(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}}}
	a := runningPod("shop", "a", map[string]string{"app": "a"})
	b := runningPod("shop", "b", map[string]string{"app": "b"})
	allowA := &AuthorizationPolicy{Namespace: "shop", Name: "allow-a", Spec: &securityv1beta1.AuthorizationPolicy{
		Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "a"}},
		Rules:    []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{"shop"}}}}}},
	}}
	strict := newPeerAuth(t, "istio-system", "default", "", securityv1beta1.PeerAuthentication_MutualTLS_STRICT, nil)
	snap := func(aps []*AuthorizationPolicy, pas []*PeerAuthentication) Snapshot {
		return Snapshot{Namespaces: []*corev1.Namespace{ns}, Pods: []*corev1.Pod{a, b}, AuthorizationPolicies: aps, PeerAuthentications: pas}
	}
	base := Build(Config{}, snap([]*AuthorizationPolicy{allowA}, []*PeerAuthentication{strict}))

	otherRule := clonePolicy(allowA)
	otherRule.Spec.Rules[0].From[0].Source.Namespaces = []string{"blog"}
	otherPods := clonePolicy(allowA)
	otherPods.Spec.Selector.MatchLabels["app"] = "b"
	deny := &AuthorizationPolicy{Namespace: "shop", Name: "deny-all", Spec: &securityv1beta1.AuthorizationPolicy{
		Action: securityv1beta1.AuthorizationPolicy_DENY, Rules: []*securityv1beta1.Rule{{}},
	}}

	tests := []struct {
		name      string
		old, new  *View
		want      Changes
		addresses Changes // what Diff reports for the same views
	}{
		{name: "same", old: base, new: base},
		{
			name: "rebuilt from copies",
			old:  base,
			new:  Build(Config{}, snap([]*AuthorizationPolicy{clonePolicy(allowA)}, []*PeerAuthentication{strict})),
		},
		{
			name: "rule changed",
			old:  base,
			new:  Build(Config{}, snap([]*AuthorizationPolicy{otherRule}, []*PeerAuthentication{strict})),
			want: Changes{Updated: []string{"shop/allow-a"}},
		},
		{
			name:      "selector changed moves the policy between workloads only",
			old:       base,
			new:       Build(Config{}, snap([]*AuthorizationPolicy{otherPods}, []*PeerAuthentication{strict})),
			addresses: Changes{Updated: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b"}},
		},
		{
			name: "policy added",
			old:  base,
			new:  Build(Config{}, snap([]*AuthorizationPolicy{allowA, deny}, []*PeerAuthentication{strict})),
			want: Changes{Updated: []string{"shop/deny-all"}},
		},
		{
			name:      "last PeerAuthentication removed",
			old:       base,
			new:       Build(Config{}, snap([]*AuthorizationPolicy{allowA}, nil)),
			want:      Changes{Removed: []string{"istio-system/istio_converted_static_strict"}},
			addresses: Changes{Updated: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b"}},
		},
		{
			name:      "from nothing",
			old:       nil,
			new:       base,
			want:      Changes{Updated: []string{"istio-system/istio_converted_static_strict", "shop/allow-a"}},
			addresses: Changes{Updated: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b"}},
		},
		{
			name:      "to nothing",
			old:       base,
			new:       &View{},
			want:      Changes{Removed: []string{"istio-system/istio_converted_static_strict", "shop/allow-a"}},
			addresses: Changes{Removed: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DiffAuthorizations(tt.old, tt.new)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DiffAuthorizations (-want +got):\n%s", diff)
			}
			if got.Empty() != tt.want.Empty() {
				t.Errorf("Empty() = %v", got.Empty())
			}
			if diff := cmp.Diff(tt.addresses, Diff(tt.old, tt.new)); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPeerAuthenticationModes walks Istio's mesh → namespace → workload →
// port mTLS precedence for one pod (app=db in namespace shop).
func TestPeerAuthenticationModes(t *testing.T) {
	const (
		unset      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
		disable    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
		permissive = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
		strict     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
		static     = "istio-system/istio_converted_static_strict"
		converted  = "shop/converted_peer_authentication_db"
	)
	type ports = map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode
	mesh := func(m securityv1beta1.PeerAuthentication_MutualTLS_Mode) *PeerAuthentication {
		return newPeerAuth(t, "istio-system", "default", "", m, nil)
	}
	ns := func(m securityv1beta1.PeerAuthentication_MutualTLS_Mode) *PeerAuthentication {
		return newPeerAuth(t, "shop", "default", "", m, nil)
	}
	wl := func(m securityv1beta1.PeerAuthentication_MutualTLS_Mode, p ports) *PeerAuthentication {
		return newPeerAuth(t, "shop", "db", "db", m, p)
	}
	plaintext := func(ports ...uint32) *security.Rules {
		return &security.Rules{Matches: []*security.Match{{
			NotPrincipals:    []*security.StringMatch{{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}},
			DestinationPorts: ports,
		}}}
	}
	notPort := func(p uint32) *security.Rules {
		return &security.Rules{Matches: []*security.Match{{NotDestinationPorts: []uint32{p}}}}
	}
	tests := []struct {
		name string
		pas  []*PeerAuthentication
		want []string
		// wantConverted is the converted policy's groups; nil: not sent.
		wantConverted []*security.Group
	}{
		{name: "none", pas: nil, want: nil},
		{name: "mesh strict", pas: []*PeerAuthentication{mesh(strict)}, want: []string{static}},
		{name: "mesh permissive", pas: []*PeerAuthentication{mesh(permissive)}, want: nil},
		{name: "namespace permissive overrides mesh strict", pas: []*PeerAuthentication{mesh(strict), ns(permissive)}, want: nil},
		{name: "namespace unset inherits mesh strict", pas: []*PeerAuthentication{mesh(strict), ns(unset)}, want: []string{static}},
		{name: "namespace strict over mesh permissive", pas: []*PeerAuthentication{mesh(permissive), ns(strict)}, want: []string{static}},
		{name: "workload permissive overrides namespace strict", pas: []*PeerAuthentication{ns(strict), wl(permissive, nil)}, want: nil},
		{name: "workload disable overrides namespace strict", pas: []*PeerAuthentication{ns(strict), wl(disable, nil)}, want: nil},
		{name: "workload strict over namespace permissive", pas: []*PeerAuthentication{ns(permissive), wl(strict, nil)}, want: []string{static}},
		{name: "workload strict, all ports strict", pas: []*PeerAuthentication{wl(strict, ports{80: strict})}, want: []string{static}},
		{
			name:          "workload strict with a permissive port",
			pas:           []*PeerAuthentication{wl(strict, ports{80: permissive})},
			want:          []string{converted},
			wantConverted: []*security.Group{{Rules: []*security.Rules{plaintext(), notPort(80)}}},
		},
		{
			name:          "workload unset with a permissive port under namespace strict",
			pas:           []*PeerAuthentication{ns(strict), wl(unset, ports{80: permissive, 81: disable})},
			want:          []string{converted},
			wantConverted: []*security.Group{{Rules: []*security.Rules{notPort(80), notPort(81), plaintext()}}},
		},
		{
			// Istio looks only for PERMISSIVE ports here: DISABLE alone keeps
			// the workload on the static STRICT policy (stricter); the
			// converted policy is sent but not named.
			name:          "workload unset with only a disable port under namespace strict",
			pas:           []*PeerAuthentication{ns(strict), wl(unset, ports{80: disable})},
			want:          []string{static},
			wantConverted: []*security.Group{{Rules: []*security.Rules{notPort(80), plaintext()}}},
		},
		{
			name:          "workload unset with a strict port under permissive",
			pas:           []*PeerAuthentication{mesh(permissive), wl(unset, ports{5432: strict})},
			want:          []string{converted},
			wantConverted: []*security.Group{{Rules: []*security.Rules{plaintext(5432)}}},
		},
		{
			// Istio's conversion skips the STRICT port here (its mesh check
			// ignores the workload's own mode), so the workload would name a
			// policy that is never sent; we send it.
			name:          "workload permissive with a strict port under mesh strict",
			pas:           []*PeerAuthentication{mesh(strict), wl(permissive, ports{5432: strict})},
			want:          []string{converted},
			wantConverted: []*security.Group{{Rules: []*security.Rules{plaintext(5432)}}},
		},
		{
			// Istio's conversion reads the UNSET namespace policy as "not
			// STRICT" and drops the exception, leaving the workload with no
			// mTLS requirement at all; we keep the inherited STRICT.
			name:          "workload unset with a permissive port, namespace unset, mesh strict",
			pas:           []*PeerAuthentication{mesh(strict), ns(unset), wl(unset, ports{80: permissive})},
			want:          []string{converted},
			wantConverted: []*security.Group{{Rules: []*security.Rules{notPort(80), plaintext()}}},
		},
		{
			name: "oldest workload policy wins",
			pas: []*PeerAuthentication{
				wl(strict, nil),
				func() *PeerAuthentication {
					p := newPeerAuth(t, "shop", "a-newer", "db", permissive, nil)
					p.CreationTimestamp = p.CreationTimestamp.Add(time.Hour)
					return p
				}(),
			},
			want: []string{static},
		},
		{
			name: "root namespace selector policy is ignored",
			pas:  []*PeerAuthentication{newPeerAuth(t, "istio-system", "db", "db", strict, nil)},
			want: nil,
		},
		{
			name: "undecodable namespace policy fails closed",
			pas:  []*PeerAuthentication{mesh(permissive), {Namespace: "shop", Name: "broken"}},
			want: []string{static},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := runningPod("shop", "db-0", map[string]string{"app": "db"})
			v := Build(Config{}, Snapshot{Pods: []*corev1.Pod{pod}, PeerAuthentications: tt.pas})
			got := v.Workloads[0].GetAuthorizationPolicies()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("authorization_policies (-want +got):\n%s", diff)
			}
			checkPolicyNames(t, v)
			var gotConverted []*security.Group
			for _, a := range v.Authorizations {
				if AuthorizationResourceName(a) == converted {
					gotConverted = a.GetGroups()
					if a.GetAction() != security.Action_DENY || a.GetScope() != security.Scope_WORKLOAD_SELECTOR {
						t.Errorf("converted policy action %v scope %v", a.GetAction(), a.GetScope())
					}
				}
			}
			if diff := cmp.Diff(tt.wantConverted, gotConverted, protocmp.Transform()); diff != "" {
				t.Errorf("converted policy groups (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTranslateRule(t *testing.T) {
	anyone := &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
	allow, deny := security.Action_ALLOW, security.Action_DENY
	tests := []struct {
		name        string
		action      security.Action
		rule        *securityv1beta1.Rule
		want        *security.Group
		wantProblem string // substring of the reason; "" for none
	}{
		{name: "empty rule matches everything", action: allow, rule: &securityv1beta1.Rule{}, want: &security.Group{}},
		{name: "null rule in ALLOW is omitted", action: allow, rule: nil, want: nil, wantProblem: "the rule is null"},
		{name: "null rule in DENY matches everything", action: deny, rule: nil, want: &security.Group{}, wantProblem: "the rule is null"},
		{
			name:   "presence",
			action: allow,
			rule:   &securityv1beta1.Rule{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Principals: []string{"*"}}}}},
			want:   &security.Group{Rules: []*security.Rules{{Matches: []*security.Match{{Principals: []*security.StringMatch{anyone}}}}}},
		},
		{
			name:        "bad notPorts omits an ALLOW rule",
			action:      allow,
			rule:        &securityv1beta1.Rule{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{NotPorts: []string{"70000"}}}}},
			want:        nil,
			wantProblem: `"70000" is not a port number`,
		},
		{
			name:   "bad notPorts is ignored in a DENY rule",
			action: deny,
			rule: &securityv1beta1.Rule{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{
				Ports: []string{"80"}, NotPorts: []string{"x"},
			}}}},
			want:        &security.Group{Rules: []*security.Rules{{Matches: []*security.Match{{DestinationPorts: []uint32{80}}}}}},
			wantProblem: `"x" is not a port number`,
		},
		{
			name:   "HTTP-only operation makes a DENY clause match everything",
			action: deny,
			rule: &securityv1beta1.Rule{
				To:   []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: []string{"POST"}}}},
				From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{"guest"}}}},
			},
			want:        &security.Group{Rules: []*security.Rules{{Matches: []*security.Match{{Namespaces: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "guest"}}}}}}}},
			wantProblem: "(methods)",
		},
		{
			name:   "one HTTP-only source among several widens the whole DENY clause",
			action: deny,
			rule: &securityv1beta1.Rule{From: []*securityv1beta1.Rule_From{
				{Source: &securityv1beta1.Source{Namespaces: []string{"guest"}}},
				{Source: &securityv1beta1.Source{RequestPrincipals: []string{"*"}}},
			}},
			want:        &security.Group{},
			wantProblem: "(requestPrincipals)",
		},
		{
			name:        "trust domains are not enforced",
			action:      allow,
			rule:        &securityv1beta1.Rule{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{TrustDomains: []string{"example.org"}}}}},
			want:        nil,
			wantProblem: "(trustDomains)",
		},
		{
			name:        "condition without values",
			action:      allow,
			rule:        &securityv1beta1.Rule{When: []*securityv1beta1.Condition{{Key: "source.ip"}}},
			want:        nil,
			wantProblem: "has neither values nor notValues",
		},
		{
			name:   "partly malformed condition is dropped whole in DENY",
			action: deny,
			rule: &securityv1beta1.Rule{When: []*securityv1beta1.Condition{
				{Key: "destination.port", Values: []string{"80"}, NotValues: []string{"eighty"}},
				{Key: "source.namespace", Values: []string{"guest"}},
			}},
			want:        &security.Group{Rules: []*security.Rules{{Matches: []*security.Match{{Namespaces: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "guest"}}}}}}}},
			wantProblem: `"eighty" is not a port number`,
		},
		{
			name:        "wildcard service account",
			action:      allow,
			rule:        &securityv1beta1.Rule{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{ServiceAccounts: []string{"shop/*"}}}}},
			want:        nil,
			wantProblem: "is not a service account",
		},
		{
			name:        "source without fields",
			action:      allow,
			rule:        &securityv1beta1.Rule{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{}}}},
			want:        nil,
			wantProblem: "from[0].source is empty",
		},
		{
			name:        "to without operation",
			action:      deny,
			rule:        &securityv1beta1.Rule{To: []*securityv1beta1.Rule_To{{}}},
			want:        &security.Group{},
			wantProblem: "to[0] has no operation",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, issues := translateRule(tt.action, tt.rule, "shop")
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("group (-want +got):\n%s", diff)
			}
			reason := issues.reason(0, tt.action)
			if tt.wantProblem == "" && reason != "" || !strings.Contains(reason, tt.wantProblem) {
				t.Errorf("problem %q, want one containing %q", reason, tt.wantProblem)
			}
		})
	}
}

func TestAuthorizationPolicyScope(t *testing.T) {
	sel := &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "a"}}
	tests := []struct {
		name        string
		cfg         Config
		policy      *AuthorizationPolicy
		want        *security.Authorization // nil: not sent
		wantProblem bool
	}{
		{
			name:   "namespace",
			policy: &AuthorizationPolicy{Namespace: "shop", Name: "p", Spec: &securityv1beta1.AuthorizationPolicy{}},
			want:   &security.Authorization{Namespace: "shop", Name: "p", Scope: security.Scope_NAMESPACE},
		},
		{
			name:   "root namespace is global",
			policy: &AuthorizationPolicy{Namespace: "istio-system", Name: "p", Spec: &securityv1beta1.AuthorizationPolicy{}},
			want:   &security.Authorization{Namespace: "istio-system", Name: "p", Scope: security.Scope_GLOBAL},
		},
		{
			name:   "configured root namespace",
			cfg:    Config{RootNamespace: "mesh-root"},
			policy: &AuthorizationPolicy{Namespace: "mesh-root", Name: "p", Spec: &securityv1beta1.AuthorizationPolicy{}},
			want:   &security.Authorization{Namespace: "mesh-root", Name: "p", Scope: security.Scope_GLOBAL},
		},
		{
			name:   "selector in the root namespace",
			policy: &AuthorizationPolicy{Namespace: "istio-system", Name: "p", Spec: &securityv1beta1.AuthorizationPolicy{Selector: sel}},
			want:   &security.Authorization{Namespace: "istio-system", Name: "p", Scope: security.Scope_WORKLOAD_SELECTOR},
		},
		{
			name:        "nil spec fails closed",
			policy:      &AuthorizationPolicy{Namespace: "shop", Name: "p"},
			want:        &security.Authorization{Namespace: "shop", Name: "p", Scope: security.Scope_NAMESPACE},
			wantProblem: true,
		},
		{
			name:   "unparsable dry-run is enforced",
			policy: &AuthorizationPolicy{Namespace: "shop", Name: "p", Annotations: map[string]string{AnnotationDryRun: "maybe"}, Spec: &securityv1beta1.AuthorizationPolicy{}},
			want:   &security.Authorization{Namespace: "shop", Name: "p", Scope: security.Scope_NAMESPACE}, wantProblem: true,
		},
		{
			name:   "dry-run false is enforced",
			policy: &AuthorizationPolicy{Namespace: "shop", Name: "p", Annotations: map[string]string{AnnotationDryRun: "false"}, Spec: &securityv1beta1.AuthorizationPolicy{}},
			want:   &security.Authorization{Namespace: "shop", Name: "p", Scope: security.Scope_NAMESPACE},
		},
		{
			name: "unknown action",
			policy: &AuthorizationPolicy{Namespace: "shop", Name: "p", Spec: &securityv1beta1.AuthorizationPolicy{
				Action: securityv1beta1.AuthorizationPolicy_Action(42),
			}},
			wantProblem: true,
		},
		{
			name: "empty selector key",
			policy: &AuthorizationPolicy{Namespace: "shop", Name: "p", Spec: &securityv1beta1.AuthorizationPolicy{
				Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"": "a"}},
			}},
			wantProblem: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Build(tt.cfg, Snapshot{AuthorizationPolicies: []*AuthorizationPolicy{tt.policy}})
			var want []*security.Authorization
			if tt.want != nil {
				want = []*security.Authorization{tt.want}
			}
			if diff := cmp.Diff(want, v.Authorizations, protocmp.Transform()); diff != "" {
				t.Errorf("Authorizations (-want +got):\n%s", diff)
			}
			if got := len(v.Problems) > 0; got != tt.wantProblem {
				t.Errorf("problems %v, want some: %v", v.Problems, tt.wantProblem)
			}
		})
	}
}

// TestPoliciesDeterministic checks that input order does not change the
// policy output.
func TestPoliciesDeterministic(t *testing.T) {
	for _, name := range []string{"peerauth_namespace_overrides", "policy_problems", "authz_workload_selector", "waypoint_policy_targets", "waypoint_policy_rules"} {
		t.Run(name, func(t *testing.T) {
			snap := loadSnapshot(t, "testdata/"+name+".yaml")
			want := renderView(t, Build(Config{}, snap))
			slices.Reverse(snap.Pods)
			slices.Reverse(snap.AuthorizationPolicies)
			slices.Reverse(snap.PeerAuthentications)
			if diff := cmp.Diff(string(want), string(renderView(t, Build(Config{}, snap)))); diff != "" {
				t.Errorf("output depends on input order (-first +reversed):\n%s", diff)
			}
		})
	}
}

// checkPolicyNames fails if a workload names a policy the View does not send.
func checkPolicyNames(t *testing.T, v *View) {
	t.Helper()
	sent := map[string]bool{}
	for _, a := range v.Authorizations {
		sent[AuthorizationResourceName(a)] = true
	}
	for _, w := range v.Workloads {
		for _, n := range w.GetAuthorizationPolicies() {
			if !sent[n] {
				t.Errorf("workload %s names policy %s, which is not sent", w.GetUid(), n)
			}
		}
	}
}

func newPeerAuth(t *testing.T, ns, name, app string, mode securityv1beta1.PeerAuthentication_MutualTLS_Mode,
	ports map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode,
) *PeerAuthentication {
	t.Helper()
	spec := &securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}}
	if app != "" {
		spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": app}}
	}
	for p, m := range ports {
		if spec.PortLevelMtls == nil {
			spec.PortLevelMtls = map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		}
		spec.PortLevelMtls[p] = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
	}
	return &PeerAuthentication{Namespace: ns, Name: name, CreationTimestamp: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Spec: spec}
}

func clonePolicy(p *AuthorizationPolicy) *AuthorizationPolicy {
	c := *p
	c.Spec = p.Spec.DeepCopy()
	return &c
}

// TestPoliciesNotShared checks that two Builds never share Authorization
// messages (the static STRICT policy included), so an old View stays valid.
func TestPoliciesNotShared(t *testing.T) {
	snap := loadSnapshot(t, "testdata/peerauth_namespace_overrides.yaml")
	v1, v2 := Build(Config{}, snap), Build(Config{}, snap)
	for _, a := range v2.Authorizations {
		for _, g := range a.Groups {
			for _, r := range g.Rules {
				for _, m := range r.Matches {
					for _, sm := range m.NotPrincipals {
						sm.MatchType = &security.StringMatch_Exact{Exact: "changed"}
					}
					m.DestinationPorts = append(m.DestinationPorts, 1)
				}
			}
		}
	}
	if c := DiffAuthorizations(v1, Build(Config{}, snap)); !c.Empty() {
		t.Errorf("mutating one Build's output changed another: %+v", c)
	}
}
