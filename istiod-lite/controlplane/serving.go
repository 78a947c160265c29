package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/ambientlite/mesh/istiod-lite/ca"
)

// servingCert is the control plane's own TLS certificate, issued by the mesh
// CA for the Service's DNS names and renewed at half-life.
type servingCert struct {
	authority *ca.Authority
	dnsNames  []string
	ttl       time.Duration
	now       func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func newServingCert(a *ca.Authority, dnsNames []string, ttl time.Duration) (*servingCert, error) {
	s := &servingCert{authority: a, dnsNames: dnsNames, ttl: ttl, now: time.Now}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *servingCert) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.cert != nil && now.Before(s.renewAt) {
		return s.cert, nil
	}
	c, err := s.authority.ServingCertificate(s.dnsNames, s.ttl)
	if err != nil {
		if s.cert != nil {
			return s.cert, nil // keep serving the old one until it works
		}
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	c.Leaf = leaf
	s.cert = &c
	s.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return s.cert, nil
}

// tlsConfig serves the certificate to clients that verify it against the
// mesh roots (istio-ca-root-cert). Client certificates are not asked for:
// callers are authenticated by their service-account token.
func (s *servingCert) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.get()
		},
	}
}
