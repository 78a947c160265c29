package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
