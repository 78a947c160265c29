package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

func policy(kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1",
		"kind":       kind,
		"metadata":   map[string]any{"namespace": ns, "name": name},
	}}
	if spec != nil {
		u.Object["spec"] = spec
	}
	return u
}

func TestPolicyDecoding(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		AuthorizationPolicyResource: "AuthorizationPolicyList",
		PeerAuthenticationResource:  "PeerAuthenticationList",
	},
		policy("AuthorizationPolicy", "shop", "allow-cart", map[string]any{
			"action": "ALLOW",
			"rules":  []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/shop/sa/cart"}}}}}},
		}),
		policy("AuthorizationPolicy", "shop", "typo", map[string]any{"acton": "DENY"}),
		policy("AuthorizationPolicy", "shop", "empty", nil),
		policy("PeerAuthentication", "istio-system", "default", map[string]any{"mtls": map[string]any{"mode": "STRICT"}}),
	)
	kc, err := NewCache(Clients{Kube: fake.NewClientset(), Gateway: gatewayfake.NewSimpleClientset(), Dynamic: dyn})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kc.Start(ctx)
	if err := kc.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	aps, errs := kc.AuthorizationPolicies()
	got := map[string]bool{}
	for _, ap := range aps {
		got[ap.Name] = ap.Spec != nil
	}
	if !got["allow-cart"] || got["typo"] || !got["empty"] || len(aps) != 3 {
		t.Errorf("decoded specs (name → non-nil): %v", got)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "shop/typo") || !strings.Contains(errs[0].Error(), "fails closed") {
		t.Errorf("decode errors: %v", errs)
	}
	for _, ap := range aps {
		if ap.Name == "allow-cart" && ap.Spec.GetRules()[0].GetFrom()[0].GetSource().GetPrincipals()[0] != "cluster.local/ns/shop/sa/cart" {
			t.Errorf("allow-cart spec: %v", ap.Spec)
		}
	}
	pas, errs := kc.PeerAuthentications()
	if len(pas) != 1 || len(errs) != 0 || pas[0].Spec.GetMtls().GetMode().String() != "STRICT" {
		t.Errorf("peer authentications %v, errors %v", pas, errs)
	}
}
