package ca

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSignCSR(t *testing.T) {
	a, err := NewSelfSigned(Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ecKey := newKey(t)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // testing the refusal
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badSig := newCSR(t, ecKey, appURI)
	{
		b, _ := pem.Decode(badSig)
		b.Bytes[len(b.Bytes)-1] ^= 0xff
		badSig = pem.EncodeToMemory(b)
	}
	withDNS := func() []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"cart.shop.svc"}}, ecKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	withIP := func() []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, ecKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()

	cases := []struct {
		name    string
		csr     []byte
		wantErr error // nil: issued
	}{
		{"ECDSA with matching SAN", newCSR(t, ecKey, appURI), nil},
		{"ECDSA without SAN", newCSR(t, ecKey), nil},
		{"RSA 2048", newCSR(t, rsa2048, appURI), nil},
		{"empty", nil, ErrBadCSR},
		{"not PEM", []byte("not a csr"), ErrBadCSR},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), ErrBadCSR},
		{"truncated DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x82, 0x01}}), ErrBadCSR},
		{"bad signature", badSig, ErrBadCSR},
		{"RSA 1024", newCSR(t, rsa1024, appURI), ErrBadCSR},
		{"Ed25519", newCSR(t, edKey, appURI), ErrBadCSR},
		{"another identity's SAN", newCSR(t, ecKey, "spiffe://cluster.local/ns/shop/sa/payments"), ErrIdentityMismatch},
		{"another trust domain", newCSR(t, ecKey, "spiffe://evil.example/ns/shop/sa/cart"), ErrIdentityMismatch},
		{"own and another SAN", newCSR(t, ecKey, appURI, "spiffe://cluster.local/ns/shop/sa/payments"), ErrIdentityMismatch},
		{"DNS SAN", withDNS, ErrIdentityMismatch},
		{"IP SAN", withIP, ErrIdentityMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := a.Sign(context.Background(), tc.csr, app, 0)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Sign error = %v, want %v", err, tc.wantErr)
				}
				if chain != nil {
					t.Fatal("refused, but a chain was returned")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf := verifyResponse(t, chain, a.Roots(), a.RootsPEM())
			checkLeaf(t, leaf, appURI)
		})
	}
}

// checkLeaf checks the workload-certificate profile Istio issues.
func checkLeaf(t *testing.T, leaf *x509.Certificate, wantURI string) {
	t.Helper()
	if diff := cmp.Diff([]string{wantURI}, uris(leaf)); diff != "" {
		t.Errorf("URI SANs (-want +got):\n%s", diff)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.String() != "" {
		t.Errorf("leaf has subject %q or other names %v %v %v", leaf.Subject, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Errorf("KeyUsage %v, want %v", leaf.KeyUsage, want)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage); diff != "" {
		t.Errorf("ExtKeyUsage (-want +got):\n%s", diff)
	}
	for _, e := range leaf.Extensions {
		if e.Id.Equal([]int{2, 5, 29, 17}) && !e.Critical {
			t.Error("SAN extension not critical under an empty subject")
		}
	}
}

func TestSignLifetime(t *testing.T) {
	now := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	csr := newCSR(t, newKey(t))

	cases := []struct {
		name    string
		cfg     Config
		ttl     time.Duration
		want    time.Duration // NotAfter - now
		wantErr error
	}{
		{"default 24h", Config{}, 0, 24 * time.Hour, nil},
		{"negative means default", Config{}, -time.Hour, 24 * time.Hour, nil},
		{"configured default", Config{DefaultTTL: 12 * time.Hour}, 0, 12 * time.Hour, nil},
		{"requested", Config{}, time.Hour, time.Hour, nil},
		{"at the max", Config{MaxTTL: 48 * time.Hour}, 48 * time.Hour, 48 * time.Hour, nil},
		{"above the max", Config{MaxTTL: 48 * time.Hour}, 49 * time.Hour, 0, ErrBadTTL},
		{"above the default max", Config{}, 91 * 24 * time.Hour, 0, ErrBadTTL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Now = clock
			a, err := NewSelfSigned(tc.cfg, now)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := a.Sign(context.Background(), csr, app, tc.ttl)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Sign error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			leaf := parseLeaf(t, chain)
			if got := leaf.NotAfter.Sub(now); got != tc.want {
				t.Errorf("lifetime %s, want %s", got, tc.want)
			}
			if got := now.Sub(leaf.NotBefore); got != clockSkew {
				t.Errorf("NotBefore %s before now, want %s", got, clockSkew)
			}
		})
	}
}

func TestSignNeverOutlivesSigningCert(t *testing.T) {
	p := newPluggedCA(t)
	now := p.inter.NotAfter.Add(-time.Hour)
	a, err := FromCACerts(p.files, Config{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(context.Background(), newCSR(t, newKey(t)), app, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseLeaf(t, chain).NotAfter; !got.Equal(p.inter.NotAfter) {
		t.Errorf("NotAfter %s, want the intermediate's %s", got, p.inter.NotAfter)
	}
}

func TestSignCanceled(t *testing.T) {
	a, err := NewSelfSigned(Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Sign(ctx, newCSR(t, newKey(t)), app, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sign error = %v, want context.Canceled", err)
	}
}

func parseLeaf(t testing.TB, chain []string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(chain[0]))
	if b == nil {
		t.Fatal("leaf is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// BenchmarkSign measures one workload certificate: CSR parse and signature
// check, then an ECDSA P-256 signature by the CA.
func BenchmarkSign(b *testing.B) {
	for _, kind := range []string{"ecdsa-p256-csr", "rsa-2048-csr"} {
		b.Run(kind, func(b *testing.B) {
			a, err := NewSelfSigned(Config{}, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			var key crypto.Signer = newKey(b)
			if kind == "rsa-2048-csr" {
				if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
					b.Fatal(err)
				}
			}
			csr := newCSR(b, key, appURI)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Sign(ctx, csr, app, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
