package trust

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ambientlite/mesh/istiod-lite/ca"
)

func TestLoadAuthorityKeepsTheRoot(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	first, src, err := LoadAuthority(ctx, client, "", ca.Config{}, nil)
	if err != nil || src != FromNewlyMade {
		t.Fatalf("first start: %v, %v", src, err)
	}
	second, src, err := LoadAuthority(ctx, client, "", ca.Config{}, nil)
	if err != nil || src != FromPersisted {
		t.Fatalf("restart: %v, %v", src, err)
	}
	if !bytes.Equal(first.RootsPEM(), second.RootsPEM()) {
		t.Fatal("restart changed the root")
	}
}

func TestLoadAuthorityLosesTheCreateRace(t *testing.T) {
	ctx := context.Background()
	winner, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	// The other replica stores its root between our Get and our Create.
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		client.ReactionChain = client.ReactionChain[1:]
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SelfSignedSecret, Namespace: DefaultNamespace}, Data: winner.SecretData()}
		if err := client.Tracker().Add(s); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil
	})
	got, src, err := LoadAuthority(ctx, client, "", ca.Config{}, nil)
	if err != nil || src != FromPersisted {
		t.Fatalf("%v, %v", src, err)
	}
	if !bytes.Equal(got.RootsPEM(), winner.RootsPEM()) {
		t.Fatal("did not adopt the root the other replica stored")
	}
}

func TestLoadAuthorityPluggedCACerts(t *testing.T) {
	ctx := context.Background()
	root, err := ca.NewSelfSigned(ca.Config{TrustDomain: "example.org"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: PluggedSecret, Namespace: "mesh"},
		Data:       root.SecretData(),
	})
	got, src, err := LoadAuthority(ctx, client, "mesh", ca.Config{TrustDomain: "example.org"}, nil)
	if err != nil || src != FromPlugged {
		t.Fatalf("%v, %v", src, err)
	}
	if !bytes.Equal(got.RootsPEM(), root.RootsPEM()) {
		t.Fatal("plugged root not used")
	}
	// A broken cacerts is an error naming the Secret, never replaced.
	bad := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: PluggedSecret, Namespace: "mesh"},
		Data:       map[string][]byte{"ca-cert.pem": []byte("junk")},
	})
	_, _, err = LoadAuthority(ctx, bad, "mesh", ca.Config{}, nil)
	if err == nil || !strings.Contains(err.Error(), "mesh/cacerts") {
		t.Fatalf("err = %v, want one naming mesh/cacerts", err)
	}
	if _, err := bad.CoreV1().Secrets("mesh").Get(ctx, SelfSignedSecret, metav1.GetOptions{}); err == nil {
		t.Fatal("a self-signed root was made although cacerts exists")
	}
}

func TestPublisher(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := func(name string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	client := fake.NewClientset(ns("default"), ns("shop"), ns("kube-system"),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RootConfigMap, Namespace: "shop"}, Data: map[string]string{RootConfigMapKey: "stale"}})
	p, err := NewPublisher(client, []byte("ROOT"), nil)
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	want := func(ns string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, RootConfigMap, metav1.GetOptions{})
			if err == nil && cm.Data[RootConfigMapKey] == "ROOT" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s: configmap %v, %v", ns, cm, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	want("default")
	want("shop") // stale content put back
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns("late"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("late")
	if err := client.CoreV1().ConfigMaps("default").Delete(ctx, RootConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("default") // deleted: made again
	if _, err := client.CoreV1().ConfigMaps("kube-system").Get(ctx, RootConfigMap, metav1.GetOptions{}); err == nil {
		t.Error("published into kube-system")
	}
}
