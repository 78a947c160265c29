package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ambientlite/mesh/ztunnel/certs"
	"github.com/ambientlite/mesh/ztunnel/nodeagent/zds"
)

// After a restart pods come back before any certificate was fetched: the
// roots must come from the root file, or outbound tunnels cannot verify
// their peers (a bug the ztunnel e2e restart case found).
func TestRootsBeforeAnyCertificate(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	m := certs.New(nil, nil)
	defer m.Close()
	if (meshCerts{Manager: m, rootFile: file}).Roots() == nil {
		t.Error("no roots from the root file")
	}
	if (meshCerts{Manager: m, rootFile: file + ".missing"}).Roots() != nil {
		t.Error("roots without a root file or a certificate")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"extra"}, {"--node-name=n", "--pod-name=p", "--instance-ip=not-an-ip"}} {
		var stderr strings.Builder
		err := Run(t.Context(), args, &stderr, &stderr)
		if err == nil || !strings.Contains(err.Error(), "usage") || !strings.Contains(stderr.String(), "Usage of ztunnel") {
			t.Errorf("Run(%q) = %v; stderr %q", args, err, stderr.String())
		}
	}
}

func TestWorkloadName(t *testing.T) {
	for pod, want := range map[string]string{"reviews-v1-649b86f4f-glknb": "reviews-v1", "app": "app", "a-b": "a-b"} {
		if got := workloadName(pod); got != want {
			t.Errorf("workloadName(%q) = %q, want %q", pod, got, want)
		}
	}
}

// A pod handed over before the first config arrived is not served (its
// capture rules keep it closed): the hand-off refuses it, and the node
// agent retries. Without the gate this would reach the (nil) proxy.
func TestHandoffWaitsForConfig(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	h := &handoff{synced: make(chan struct{}), pods: map[string]*heldPod{}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = h.add(ctx, zds.Request{Type: zds.TypePodAdded, Pod: zds.Pod{UID: "u", Name: "p", Namespace: "ns"}, NetNS: f})
	if err == nil || len(h.pods) != 0 {
		t.Fatalf("pod accepted before config: err %v, pods %d", err, len(h.pods))
	}
}

// TestDaemonSetGone: the mesh is leaving the node only when the DaemonSet
// is gone or being deleted; a running DaemonSet (a restart) or an API
// error keeps the CNI plugin.
func TestDaemonSetGone(t *testing.T) {
	now := metav1.Now()
	ds := func(deleting bool) *appsv1.DaemonSet {
		d := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Namespace: "istio-system", Finalizers: []string{"foregroundDeletion"}}}
		if deleting {
			d.DeletionTimestamp = &now
		}
		return d
	}
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		kc   *kubefake.Clientset
		want bool
	}{
		{"running", kubefake.NewClientset(ds(false)), false},
		{"being deleted", kubefake.NewClientset(ds(true)), true},
		{"gone", kubefake.NewClientset(), true},
	} {
		if got := daemonSetGone(tc.kc, "istio-system", "ztunnel", log)(t.Context()); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	forbidden := kubefake.NewClientset(ds(true))
	forbidden.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "ztunnel", errors.New("no"))
	})
	if daemonSetGone(forbidden, "istio-system", "ztunnel", log)(t.Context()) {
		t.Error("an API error counted as removal")
	}
}
