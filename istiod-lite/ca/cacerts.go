package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// FromCACerts loads an Authority from Istio's cacerts Secret layout:
// ca-cert.pem (the signing certificate), ca-key.pem (its key), root-cert.pem
// (the trust roots) and the optional cert-chain.pem (certificates between the
// two). It also loads what SecretData wrote, so it is how a restart keeps its
// root.
//
// It checks that the key matches the certificate, that the certificate is a
// CA and that it chains through cert-chain.pem to a root in root-cert.pem at
// cfg's current time; each error names the Secret key at fault.
func FromCACerts(files map[string][]byte, cfg Config) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	certs, err := pemCerts(files, CACertFile, true)
	if err != nil {
		return nil, err
	}
	signing := certs[0]
	if !signing.BasicConstraintsValid || !signing.IsCA {
		return nil, fmt.Errorf("cacerts: %s: certificate %q is not a CA (basic constraints CA:FALSE); it cannot sign workload certificates",
			CACertFile, signing.Subject)
	}
	if signing.KeyUsage != 0 && signing.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("cacerts: %s: certificate %q lacks the keyCertSign key usage", CACertFile, signing.Subject)
	}

	signer, err := parseKey(files[CAKeyFile])
	if err != nil {
		return nil, err
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signing.PublicKey) {
		return nil, fmt.Errorf("cacerts: %s: key does not match the certificate in %s", CAKeyFile, CACertFile)
	}

	roots, err := pemCerts(files, RootCertFile, true)
	if err != nil {
		return nil, err
	}
	chainCerts, err := pemCerts(files, CertChainFile, false)
	if err != nil {
		return nil, err
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range append(certs[1:], chainCerts...) {
		inter.AddCert(c)
	}
	chains, err := signing.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   cfg.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("cacerts: %s does not chain through %s to a root in %s: %w",
			CACertFile, CertChainFile, RootCertFile, err)
	}

	// The response chain is the path that verified, minus the root: the
	// root travels on its own as the last element, as Istio sends it.
	path := chains[0]
	chain := make([]string, 0, len(path)-1)
	for _, c := range path[:len(path)-1] {
		chain = append(chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}

	return &Authority{
		cfg:      cfg,
		signer:   signer,
		cert:     signing,
		certPEM:  clone(files[CACertFile]),
		keyPEM:   clone(files[CAKeyFile]),
		chainPEM: clone(files[CertChainFile]),
		rootPEM:  clone(files[RootCertFile]),
		chain:    chain,
		roots:    rootPool,
	}, nil
}

// pemCerts parses every CERTIFICATE block of files[key].
func pemCerts(files map[string][]byte, key string, required bool) ([]*x509.Certificate, error) {
	data := files[key]
	if len(data) == 0 {
		if required {
			return nil, fmt.Errorf("cacerts: %s: missing or empty", key)
		}
		return nil, nil
	}
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("cacerts: %s: unexpected PEM block %q, want CERTIFICATE", key, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("cacerts: %s: certificate %d: %w", key, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cacerts: %s: no PEM certificate found", key)
	}
	return out, nil
}

// parseKey parses ca-key.pem: SEC1 (EC PRIVATE KEY), PKCS#1 (RSA PRIVATE
// KEY) or PKCS#8 (PRIVATE KEY).
func parseKey(data []byte) (crypto.Signer, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("cacerts: %s: missing or empty", CAKeyFile)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("cacerts: %s: no PEM block found", CAKeyFile)
	}
	var key any
	var err error
	switch b.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("cacerts: %s: unexpected PEM block %q, want EC PRIVATE KEY, RSA PRIVATE KEY or PRIVATE KEY", CAKeyFile, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("cacerts: %s: %w", CAKeyFile, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("cacerts: %s: key type %T cannot sign", CAKeyFile, key)
	}
	return s, nil
}
