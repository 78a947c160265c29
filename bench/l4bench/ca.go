package l4bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
)

// certFiles are the PEM files of one run's throw-away mesh CA: the root, and
// per workload one file holding the leaf certificate followed by its
// PKCS#8 key (the layout HAProxy's crt, stunnel's cert and Go's
// tls.LoadX509KeyPair all read).
type certFiles struct {
	CA     string
	Client string // the client pod's identity
	Server string // the server pod's identity
}

// writeCerts creates an ECDSA P-256 root and one leaf per identity, as
// istiod-lite's CA issues them (one SPIFFE URI SAN, no DNS name, serverAuth
// and clientAuth), valid for a day, and writes them under dir.
func writeCerts(dir string, client, server hbone.Identity) (certFiles, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certFiles{}, err
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{client.TrustDomain}, CommonName: "l4bench root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return certFiles{}, fmt.Errorf("create root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return certFiles{}, err
	}
	files := certFiles{
		CA:     filepath.Join(dir, "ca.pem"),
		Client: filepath.Join(dir, "client.pem"),
		Server: filepath.Join(dir, "server.pem"),
	}
	if err := os.WriteFile(files.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), 0o600); err != nil {
		return certFiles{}, err
	}
	for _, leaf := range []struct {
		id   hbone.Identity
		path string
	}{{client, files.Client}, {server, files.Server}} {
		b, err := issueLeaf(root, rootKey, leaf.id, now)
		if err != nil {
			return certFiles{}, fmt.Errorf("issue %s: %w", leaf.id, err)
		}
		if err := os.WriteFile(leaf.path, b, 0o600); err != nil {
			return certFiles{}, err
		}
	}
	return files, nil
}

// issueLeaf returns the PEM of a leaf for id followed by its key.
func issueLeaf(root *x509.Certificate, rootKey *ecdsa.PrivateKey, id hbone.Identity, now time.Time) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}
