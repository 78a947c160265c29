package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Errors of Sign that say what was wrong with the request; a Server maps
// them to gRPC codes. Anything else is the CA's own failure.
var (
	// ErrBadCSR: the CSR is malformed, badly signed, or has a key this CA
	// does not accept (only ECDSA P-256/P-384/P-521 and RSA ≥ 2048 bits).
	ErrBadCSR = errors.New("bad certificate signing request")
	// ErrBadTTL: the requested lifetime is longer than Config.MaxTTL.
	ErrBadTTL = errors.New("bad certificate lifetime")
	// ErrIdentityMismatch: the CSR asks for a subject alternative name other
	// than the identity being granted.
	ErrIdentityMismatch = errors.New("csr does not match the granted identity")
)

// maxCSRSize bounds the PEM we parse; a real CSR is well under 2 KiB.
const maxCSRSize = 64 << 10

// Sign issues a workload certificate for id, which the caller has already
// been granted (by an authenticated peer, never by the CSR alone), with the
// public key of csrPEM. ttl ≤ 0 means Config.DefaultTTL; a ttl above
// Config.MaxTTL is refused with ErrBadTTL. The lifetime never outlasts the
// signing certificate.
//
// The CSR's signature must verify; its subject alternative names, if it has
// any, must be exactly id's SPIFFE URI (ErrIdentityMismatch otherwise). Its
// subject is ignored: the leaf has an empty subject and one URI SAN
// (critical), KeyUsage DigitalSignature|KeyEncipherment and ExtKeyUsage
// ServerAuth+ClientAuth, as Istio's leaves have.
//
// The result is the chain as CreateCertificate returns it, one PEM
// certificate per element: the leaf, the intermediates up to the root, and
// root-cert.pem as the last element.
func (a *Authority) Sign(ctx context.Context, csrPEM []byte, id Identity, ttl time.Duration) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !id.valid() {
		return nil, fmt.Errorf("ca: cannot issue for identity %q: namespace and service account must be non-empty and free of '/'", id)
	}
	switch {
	case ttl <= 0:
		ttl = a.cfg.DefaultTTL
	case ttl > a.cfg.MaxTTL:
		return nil, fmt.Errorf("%w: requested %s, at most %s", ErrBadTTL, ttl, a.cfg.MaxTTL)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	uri := a.SPIFFEID(id)
	if err := checkSANs(csr, uri); err != nil {
		return nil, err
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("ca: identity %q: %w", uri, err)
	}
	leaf, err := a.issue(&x509.Certificate{
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, csr.PublicKey, ttl)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(a.chain)+2)
	out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf})))
	out = append(out, a.chain...)
	return append(out, string(a.rootPEM)), nil
}

// ServingCertificate issues a TLS server certificate for dnsNames with a
// fresh ECDSA P-256 key, for istiod-lite's own gRPC endpoints. The returned
// certificate carries the chain up to, not including, the root.
func (a *Authority) ServingCertificate(dnsNames []string, ttl time.Duration) (tls.Certificate, error) {
	if len(dnsNames) == 0 {
		return tls.Certificate{}, errors.New("ca: serving certificate needs at least one DNS name")
	}
	if ttl <= 0 {
		ttl = a.cfg.DefaultTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: generate serving key: %w", err)
	}
	der, err := a.issue(&x509.Certificate{
		DNSNames:    dnsNames,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key.Public(), ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	tc := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	for _, p := range a.chain {
		b, _ := pem.Decode([]byte(p))
		tc.Certificate = append(tc.Certificate, b.Bytes)
	}
	tc.Leaf, err = x509.ParseCertificate(der)
	return tc, err
}

// issue fills in serial, validity and CA-ness of tmpl and signs it.
func (a *Authority) issue(tmpl *x509.Certificate, pub any, ttl time.Duration) ([]byte, error) {
	now := a.cfg.Now()
	if !now.Before(a.cert.NotAfter) {
		return nil, fmt.Errorf("ca: signing certificate expired at %s; replace %s", a.cert.NotAfter.Format(time.RFC3339), CACertFile)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	return der, nil
}

// parseCSR decodes one PEM CSR, checks its signature and its key.
func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) > maxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadCSR, len(csrPEM), maxCSRSize)
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrBadCSR)
	}
	if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE REQUEST", ErrBadCSR, b.Type)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted, want P-256", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits, want at least 2048", ErrBadCSR, n)
		}
	default:
		return nil, fmt.Errorf("%w: key type %T not accepted, want ECDSA or RSA", ErrBadCSR, csr.PublicKey)
	}
	return csr, nil
}

// checkSANs refuses a CSR that names anything but uri.
func checkSANs(csr *x509.CertificateRequest, uri string) error {
	for _, u := range csr.URIs {
		if u.String() != uri {
			return fmt.Errorf("%w: csr asks for %q, granted %q", ErrIdentityMismatch, u, uri)
		}
	}
	if n := len(csr.DNSNames) + len(csr.EmailAddresses) + len(csr.IPAddresses); n > 0 {
		return fmt.Errorf("%w: csr asks for DNS, email or IP names %v %v %v; a workload certificate carries only %q",
			ErrIdentityMismatch, csr.DNSNames, csr.EmailAddresses, csr.IPAddresses, uri)
	}
	return nil
}
