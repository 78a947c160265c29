package kube

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/ambientlite/mesh/istiod-lite/ca"
)

func pod(ns, name, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node, Volumes: []corev1.Volume{{Name: "v"}},
			Containers: []corev1.Container{{Name: "app", Image: "x", Env: []corev1.EnvVar{{Name: "A"}}, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: phase, PodIP: "10.0.0.1"},
	}
}

func newTestCache(t *testing.T, objs ...runtime.Object) *Cache {
	t.Helper()
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		AuthorizationPolicyResource: "AuthorizationPolicyList",
		PeerAuthenticationResource:  "PeerAuthenticationList",
	})
	kc, err := NewCache(Clients{Kube: fake.NewClientset(objs...), Gateway: gatewayfake.NewSimpleClientset(), Dynamic: dyn})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kc.Start(ctx)
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := kc.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	return kc
}

func TestIdentityRunsOnNode(t *testing.T) {
	kc := newTestCache(t,
		pod("shop", "cart-1", "cart", "node-a", corev1.PodRunning),
		pod("shop", "pay-1", "", "node-a", corev1.PodPending),
		pod("shop", "old", "legacy", "node-a", corev1.PodSucceeded),
		pod("shop", "unscheduled", "queue", "", corev1.PodPending),
	)
	tests := []struct {
		id   ca.Identity
		node string
		want bool
	}{
		{ca.Identity{Namespace: "shop", ServiceAccount: "cart"}, "node-a", true},
		{ca.Identity{Namespace: "shop", ServiceAccount: "cart"}, "node-b", false},
		{ca.Identity{Namespace: "shop", ServiceAccount: "default"}, "node-a", true}, // no SA name means default
		{ca.Identity{Namespace: "shop", ServiceAccount: "legacy"}, "node-a", false}, // finished pods hold no identity
		{ca.Identity{Namespace: "shop", ServiceAccount: "queue"}, "", false},
		{ca.Identity{Namespace: "other", ServiceAccount: "cart"}, "node-a", false},
	}
	for _, tc := range tests {
		got, err := kc.IdentityRunsOnNode(context.Background(), tc.id, tc.node)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("IdentityRunsOnNode(%v, %q) = %v, want %v", tc.id, tc.node, got, tc.want)
		}
	}
}

func TestCacheStripsPods(t *testing.T) {
	kc := newTestCache(t, pod("shop", "cart-1", "cart", "node-a", corev1.PodRunning))
	p, ok := kc.Pod("shop", "cart-1")
	if !ok {
		t.Fatal("pod not in cache")
	}
	if p.ManagedFields != nil || p.Spec.Volumes != nil || p.Spec.Containers[0].Env != nil || p.Spec.Containers[0].Image != "" {
		t.Errorf("unused fields kept: %+v", p)
	}
	if p.Spec.Containers[0].Ports[0].Name != "http" || p.Spec.NodeName != "node-a" || p.Status.PodIP != "10.0.0.1" || p.Spec.ServiceAccountName != "cart" {
		t.Errorf("needed fields lost: %+v", p)
	}
	select {
	case <-kc.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled for the initial list")
	}
}
