package images

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// TestSelfSigned: the pair parses, the key matches the certificate, the
// certificate verifies as itself for its name, and every build makes the
// same bytes.
func TestSelfSigned(t *testing.T) {
	p, err := selfSigned("echo")
	if err != nil {
		t.Fatal(err)
	}
	cert := parseSelfSigned(t, p, "echo")
	if cert.NotBefore != selfSignedNotBefore || cert.NotAfter != selfSignedNotAfter {
		t.Errorf("validity %v to %v, want %v to %v", cert.NotBefore, cert.NotAfter, selfSignedNotBefore, selfSignedNotAfter)
	}

	again, err := selfSigned("echo")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.cert, p.cert) || !bytes.Equal(again.key, p.key) {
		t.Error("two calls made different pairs: the image would not be deterministic")
	}
	other, err := selfSigned("other")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.key, p.key) {
		t.Error("two names share a key")
	}

	files := selfSignedFiles("/cert.crt", "/cert.key", "echo")
	if len(files) != 2 || files[0].Path != "/cert.crt" || files[1].Path != "/cert.key" {
		t.Fatalf("files %+v, want /cert.crt and /cert.key", files)
	}
	for i, want := range [][]byte{p.cert, p.key} {
		got, err := files[i].Contents()
		if err != nil || !bytes.Equal(got, want) || files[i].perm() != 0o644 {
			t.Errorf("%s: contents %v, mode %v; want selfSigned's, 0644", files[i].Path, err, files[i].perm())
		}
	}
}

// parseSelfSigned checks p is an ECDSA P-256 certificate for dnsName, signed
// by itself and matching p's key, and returns it.
func parseSelfSigned(t *testing.T, p selfSignedPair, dnsName string) *x509.Certificate {
	t.Helper()
	if _, err := tls.X509KeyPair(p.cert, p.key); err != nil {
		t.Fatalf("certificate and key do not make a TLS pair: %v", err)
	}
	block, _ := pem.Decode(p.cert)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("certificate is not PEM: %q", p.cert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", cert.PublicKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: dnsName, Roots: roots}); err != nil {
		t.Errorf("certificate does not verify for %s against itself: %v", dnsName, err)
	}
	if block, _ := pem.Decode(p.key); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key is not a PEM PKCS #8 key")
	}
	return cert
}
