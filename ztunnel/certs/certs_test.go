package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
)

// testCA issues real leaves for whatever identity is asked, as the mesh CA
// does for ztunnel's impersonation requests, and counts them.
type testCA struct {
	key     *ecdsa.PrivateKey
	root    *x509.Certificate
	pool    *x509.CertPool
	fetches atomic.Int32
	mu      sync.Mutex
	fail    bool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &testCA{key: key, root: root, pool: pool}
}

func (ca *testCA) Fetch(ctx context.Context, id hbone.Identity) (*meshcert.Certificate, error) {
	ca.fetches.Add(1)
	ca.mu.Lock()
	fail := ca.fail
	ca.mu.Unlock()
	if fail {
		return nil, errors.New("CA unavailable")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(24 * time.Hour), URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return &meshcert.Certificate{Identity: id, TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, Roots: ca.pool}, nil
}

func TestManagerSharesAndDropsPerIdentity(t *testing.T) {
	before := runtime.NumGoroutine()
	ca := newTestCA(t)
	m := New(ca, nil)
	cart := hbone.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
	pay := hbone.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "pay"}
	for _, id := range []hbone.Identity{cart, cart, pay} {
		if err := m.Acquire(id); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := m.Certificate(ctx, cart)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("leaf SAN %s", got)
	}
	if _, err := m.Certificate(ctx, pay); err != nil {
		t.Fatal(err)
	}
	if n := ca.fetches.Load(); n != 2 {
		t.Errorf("%d fetches for two identities (one acquired twice), want 2", n)
	}
	if m.Roots() == nil {
		t.Error("no roots after a fetch")
	}
	dump := m.Dump()
	if len(dump) != 2 || dump[0].Identity != cart.String() || dump[0].Pods != 2 || dump[0].State != "valid" {
		t.Errorf("dump: %+v", dump)
	}
	if _, err := m.ServerTLS(cart); err != nil {
		t.Error(err)
	}

	m.Release(cart)
	if _, err := m.Certificate(ctx, cart); err != nil {
		t.Errorf("released by one of two pods: %v", err)
	}
	m.Release(cart)
	if _, err := m.Certificate(ctx, cart); !errors.Is(err, ErrNotHeld) {
		t.Errorf("after the last pod left: %v, want ErrNotHeld", err)
	}
	m.Close()
	if err := m.Acquire(pay); err == nil {
		t.Error("Acquire after Close succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

func TestCertificateWaitsForTheCA(t *testing.T) {
	ca := newTestCA(t)
	ca.fail = true
	m := New(ca, nil)
	defer m.Close()
	id := hbone.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
	if err := m.Acquire(id); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := m.Certificate(ctx, id); err == nil {
		t.Fatal("certificate while the CA fails")
	}
	if d := m.Dump(); len(d) != 1 || d[0].State != "pending" || d[0].Error == "" {
		t.Errorf("dump while failing: %+v", d)
	}
	ca.mu.Lock()
	ca.fail = false
	ca.mu.Unlock()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Certificate(ctx, id); err != nil {
		t.Fatalf("after the CA recovered: %v", err)
	}
}
