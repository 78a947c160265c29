package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	app      = Identity{Namespace: "shop", ServiceAccount: "cart"}
	appURI   = "spiffe://cluster.local/ns/shop/sa/cart"
	ztunnel  = DefaultNodeAccount
	otherApp = Identity{Namespace: "shop", ServiceAccount: "payments"}
)

func TestSelfSignedRoot(t *testing.T) {
	now := time.Now()
	a, err := NewSelfSigned(Config{}, now)
	if err != nil {
		t.Fatal(err)
	}
	root := a.cert
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root is not a signing CA: IsCA=%v KeyUsage=%v", root.IsCA, root.KeyUsage)
	}
	if diff := cmp.Diff([]string{"cluster.local"}, root.Subject.Organization); diff != "" {
		t.Errorf("root subject O (-want +got):\n%s", diff)
	}
	if root.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("root key %v, want ECDSA", root.PublicKeyAlgorithm)
	}
	if want := now.Add(RootTTL).Truncate(time.Second); !root.NotAfter.Equal(want) {
		t.Errorf("root NotAfter %s, want %s (ten years)", root.NotAfter, want)
	}
	data := a.SecretData()
	if !bytes.Equal(data[CACertFile], data[RootCertFile]) {
		t.Error("self-signed: ca-cert.pem and root-cert.pem differ")
	}
	if _, ok := data[CertChainFile]; ok {
		t.Error("self-signed: cert-chain.pem written, want none")
	}
}

func TestRoundTripKeepsRoot(t *testing.T) {
	for name, newAuthority := range map[string]func(t *testing.T) *Authority{
		"self-signed": func(t *testing.T) *Authority {
			a, err := NewSelfSigned(Config{}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		"plugged-in": func(t *testing.T) *Authority {
			a, err := FromCACerts(newPluggedCA(t).files, Config{})
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
	} {
		t.Run(name, func(t *testing.T) {
			first := newAuthority(t)
			originalRoots := first.Roots()
			originalRootsPEM := first.RootsPEM()

			// "Restart": persist, load into a new Authority, sign.
			data := first.SecretData()
			restarted, err := FromCACerts(data, Config{})
			if err != nil {
				t.Fatalf("reload: %v", err)
			}
			if diff := cmp.Diff(data, restarted.SecretData()); diff != "" {
				t.Errorf("SecretData changed across a reload (-before +after):\n%s", diff)
			}
			chain, err := restarted.Sign(context.Background(), newCSR(t, newKey(t), appURI), app, 0)
			if err != nil {
				t.Fatal(err)
			}
			leaf := verifyResponse(t, chain, originalRoots, originalRootsPEM)
			if diff := cmp.Diff([]string{appURI}, uris(leaf)); diff != "" {
				t.Errorf("URI SANs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromCACertsPluggedChain(t *testing.T) {
	p := newPluggedCA(t)
	a, err := FromCACerts(p.files, Config{})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(context.Background(), newCSR(t, newKey(t)), app, 0)
	if err != nil {
		t.Fatal(err)
	}
	// leaf, intermediate, root-cert.pem: the root from cert-chain.pem is not
	// repeated in the middle.
	if len(chain) != 3 {
		t.Fatalf("chain has %d elements, want 3 (leaf, intermediate, root)", len(chain))
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.root)
	leaf := verifyResponse(t, chain, pool, p.files[RootCertFile])
	if !bytes.Equal(leaf.RawIssuer, p.inter.RawSubject) {
		t.Error("leaf not issued by the intermediate")
	}

	// cert-chain.pem is optional when ca-cert.pem is signed by the root.
	files := clonedFiles(p.files)
	delete(files, CertChainFile)
	if _, err := FromCACerts(files, Config{}); err != nil {
		t.Errorf("without cert-chain.pem: %v", err)
	}
}

func TestFromCACertsErrors(t *testing.T) {
	p := newPluggedCA(t)
	other := newPluggedCA(t)
	leafKey := newKey(t)
	_, leafPEM := makeCert(t, &x509.Certificate{Subject: caTemplate("not a ca").Subject, BasicConstraintsValid: true},
		p.inter, leafKey.Public(), p.interKey)

	cases := []struct {
		name    string
		edit    func(map[string][]byte)
		wantErr []string // substrings
	}{
		{"missing ca-cert.pem", func(f map[string][]byte) { delete(f, CACertFile) }, []string{"ca-cert.pem", "missing"}},
		{"missing ca-key.pem", func(f map[string][]byte) { delete(f, CAKeyFile) }, []string{"ca-key.pem", "missing"}},
		{"missing root-cert.pem", func(f map[string][]byte) { delete(f, RootCertFile) }, []string{"root-cert.pem", "missing"}},
		{"garbage ca-cert.pem", func(f map[string][]byte) { f[CACertFile] = []byte("hello") }, []string{"ca-cert.pem", "no PEM"}},
		{"key in ca-cert.pem", func(f map[string][]byte) { f[CACertFile] = f[CAKeyFile] }, []string{"ca-cert.pem", "PRIVATE KEY"}},
		{"mismatched key", func(f map[string][]byte) { f[CAKeyFile] = keyPEM(t, other.interKey) },
			[]string{"ca-key.pem", "does not match", "ca-cert.pem"}},
		{"non-CA cert", func(f map[string][]byte) {
			f[CACertFile] = leafPEM
			f[CAKeyFile] = keyPEM(t, leafKey)
		}, []string{"ca-cert.pem", "not a CA"}},
		{"chain not to root", func(f map[string][]byte) {
			f[RootCertFile] = other.files[RootCertFile]
			f[CertChainFile] = f[CACertFile]
		}, []string{"ca-cert.pem does not chain", "root-cert.pem"}},
		{"bad cert-chain.pem", func(f map[string][]byte) {
			f[CertChainFile] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		},
			[]string{"cert-chain.pem"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := clonedFiles(p.files)
			tc.edit(files)
			_, err := FromCACerts(files, Config{})
			if err == nil {
				t.Fatal("loaded, want an error")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := map[string]struct {
		cfg     Config
		wantErr bool
	}{
		"zero value":            {Config{}, false},
		"custom":                {Config{TrustDomain: "example.org", DefaultTTL: time.Hour, MaxTTL: 2 * time.Hour}, false},
		"default above max":     {Config{MaxTTL: time.Hour}, true},
		"negative ttl":          {Config{DefaultTTL: -time.Hour}, true},
		"slash in trust domain": {Config{TrustDomain: "a/b"}, true},
	}
	for name, tc := range cases {
		if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
			t.Errorf("%s: Validate() = %v, want error %v", name, err, tc.wantErr)
		}
	}
}

func clonedFiles(in map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range in {
		out[k] = clone(v)
	}
	return out
}
