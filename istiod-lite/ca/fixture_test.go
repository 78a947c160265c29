package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// Helpers shared by the tests: keys, CSRs, hand-made CA hierarchies, and a
// chain checker that does what a ztunnel does with a CreateCertificate
// response (last element = roots, the rest = leaf then intermediates).

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCSR returns a PEM CSR signed by key with the given URI SANs.
func newCSR(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// makeCert signs tmpl with parent/parentKey (self-signed when parent is nil)
// and returns the certificate and its PEM.
func makeCert(t testing.TB, tmpl, parent *x509.Certificate, pub any, parentKey crypto.Signer) (*x509.Certificate, []byte) {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func caTemplate(name string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"example"}, CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func keyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// pluggedCA is an offline root and an intermediate, laid out as a user's
// cacerts Secret made with Istio's tools/certs (cert-chain.pem is the
// intermediate followed by the root).
type pluggedCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	files             map[string][]byte
}

func newPluggedCA(t testing.TB) *pluggedCA {
	t.Helper()
	p := &pluggedCA{rootKey: newKey(t), interKey: newKey(t)}
	var rootPEM, interPEM []byte
	p.root, rootPEM = makeCert(t, caTemplate("root"), nil, p.rootKey.Public(), p.rootKey)
	p.inter, interPEM = makeCert(t, caTemplate("cluster-1 intermediate"), p.root, p.interKey.Public(), p.rootKey)
	p.files = map[string][]byte{
		CACertFile:    interPEM,
		CAKeyFile:     keyPEM(t, p.interKey),
		RootCertFile:  rootPEM,
		CertChainFile: append(append([]byte{}, interPEM...), rootPEM...),
	}
	return p
}

// verifyResponse checks a CreateCertificate chain the way a client uses it
// and returns the leaf: the last element are the roots (and must be exactly
// wantRootsPEM), the first the leaf, between them intermediates; the leaf must
// verify against roots for client and server auth.
func verifyResponse(t testing.TB, chain []string, roots *x509.CertPool, wantRootsPEM []byte) *x509.Certificate {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("chain has %d elements, want leaf ... root", len(chain))
	}
	if got := chain[len(chain)-1]; got != string(wantRootsPEM) {
		t.Fatalf("last element is not root-cert.pem:\n%s", got)
	}
	var certs []*x509.Certificate
	for i, p := range chain[:len(chain)-1] {
		b, rest := pem.Decode([]byte(p))
		if b == nil || len(rest) != 0 {
			t.Fatalf("element %d is not exactly one PEM certificate", i)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("element %d: %v", i, err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("leaf does not verify to the root for %v: %v", usage, err)
		}
	}
	return certs[0]
}

func uris(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}
