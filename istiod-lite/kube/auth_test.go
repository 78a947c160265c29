package kube

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ambientlite/mesh/istiod-lite/ca"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// reviewer answers TokenReviews from a table of tokens, as the API server
// would, and counts the reviews.
func reviewer(t *testing.T, answers map[string]authnv1.TokenReviewStatus) (*fake.Clientset, *int) {
	t.Helper()
	c := fake.NewClientset()
	calls := 0
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		if diff := cmp.Diff([]string{"istio-ca"}, tr.Spec.Audiences); diff != "" {
			t.Errorf("review audiences (-want +got):\n%s", diff)
		}
		tr.Status = answers[tr.Spec.Token]
		return true, tr, nil
	})
	return c, &calls
}

func bearer(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

func TestTokenAuthenticator(t *testing.T) {
	ok := func(user string, extra map[string]authnv1.ExtraValue) authnv1.TokenReviewStatus {
		return authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"}, User: authnv1.UserInfo{Username: user, Extra: extra}}
	}
	answers := map[string]authnv1.TokenReviewStatus{
		"ztunnel": ok("system:serviceaccount:istio-system:ztunnel", map[string]authnv1.ExtraValue{
			extraPodName: {"ztunnel-abc"}, extraPodUID: {"uid-1"}, extraNodeName: {"node-from-token"},
		}),
		"stale-pod": ok("system:serviceaccount:istio-system:ztunnel", map[string]authnv1.ExtraValue{
			extraPodName: {"ztunnel-abc"}, extraPodUID: {"other-uid"}, extraNodeName: {"node-from-token"},
		}),
		"app":      ok("system:serviceaccount:shop:cart", nil),
		"user":     ok("alice", nil),
		"expired":  {Authenticated: false, Error: "token has expired"},
		"audience": {Authenticated: true, Audiences: []string{"other"}, User: authnv1.UserInfo{Username: "system:serviceaccount:shop:cart"}},
	}
	pods := map[string]*corev1.Pod{
		"istio-system/ztunnel-abc": {ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-abc", Namespace: "istio-system", UID: "uid-1"}, Spec: corev1.PodSpec{NodeName: "node-a"}},
	}
	tests := []struct {
		name    string
		ctx     context.Context
		want    ca.Caller
		wantErr string
	}{
		{"node from the bound pod", bearer("ztunnel"), ca.Caller{Identity: ca.Identity{Namespace: "istio-system", ServiceAccount: "ztunnel"}, Node: "node-a"}, ""},
		{"pod uid mismatch falls back to the token's node", bearer("stale-pod"), ca.Caller{Identity: ca.Identity{Namespace: "istio-system", ServiceAccount: "ztunnel"}, Node: "node-from-token"}, ""},
		{"workload without pod binding", bearer("app"), ca.Caller{Identity: ca.Identity{Namespace: "shop", ServiceAccount: "cart"}}, ""},
		{"not a service account", bearer("user"), ca.Caller{}, "not a service account"},
		{"expired", bearer("expired"), ca.Caller{}, "token has expired"},
		{"wrong audience", bearer("audience"), ca.Caller{}, "do not include"},
		{"no metadata", context.Background(), ca.Caller{}, "no service-account token"},
		{"not bearer", metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Basic x")), ca.Caller{}, "no service-account token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, _ := reviewer(t, answers)
			a := &TokenAuthenticator{Client: client, Pod: func(ns, name string) (*corev1.Pod, bool) {
				p, ok := pods[ns+"/"+name]
				return p, ok
			}}
			got, err := a.CA().Authenticate(tc.ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("caller (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenAuthenticatorXDSAndCache(t *testing.T) {
	client, calls := reviewer(t, map[string]authnv1.TokenReviewStatus{
		"z": {Authenticated: true, Audiences: []string{"istio-ca"}, User: authnv1.UserInfo{
			Username: "system:serviceaccount:istio-system:ztunnel", Extra: map[string]authnv1.ExtraValue{extraNodeName: {"n1"}}}},
	})
	a := &TokenAuthenticator{Client: client, TrustDomain: "example.org"}
	for range 3 {
		p, err := a.XDS().Authenticate(bearer("z"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(xds.Proxy{Identity: "spiffe://example.org/ns/istio-system/sa/ztunnel", Node: "n1"}, p); diff != "" {
			t.Fatalf("proxy (-want +got):\n%s", diff)
		}
	}
	if *calls != 1 {
		t.Errorf("%d token reviews for one token within the cache TTL, want 1", *calls)
	}
	if _, err := a.XDS().Authenticate(bearer("unknown")); err == nil {
		t.Error("unknown token accepted")
	}
	if *calls != 2 {
		t.Errorf("failed review not made: %d calls", *calls)
	}
}

func TestTokenReviewError(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver down")
	})
	_, err := (&TokenAuthenticator{Client: c}).Review(bearer("x"))
	if err == nil || !strings.Contains(err.Error(), "apiserver down") {
		t.Fatalf("err = %v", err)
	}
}
