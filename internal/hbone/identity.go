package hbone

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Identity is a workload's SPIFFE identity in Istio's form,
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// The zero value means "no identity".
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

const spiffeScheme = "spiffe://"

// ParseIdentity parses "spiffe://<td>/ns/<ns>/sa/<sa>". Every part must be
// non-empty and free of '/'; nothing may follow the service account.
func ParseIdentity(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return Identity{}, fmt.Errorf("hbone: identity %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" ||
		parts[0] == "" || parts[2] == "" || parts[4] == "" {
		return Identity{}, fmt.Errorf("hbone: identity %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	return Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}

// String returns the SPIFFE URI, or "" for the zero Identity.
func (id Identity) String() string {
	if id.IsZero() {
		return ""
	}
	return spiffeScheme + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// IsZero reports whether id is the zero Identity.
func (id Identity) IsZero() bool { return id == Identity{} }

// PeerIdentity returns the SPIFFE identity in the URI SAN of the peer's leaf
// certificate. It does not verify the chain: use it on a connection whose
// handshake already did (every connection this package hands out).
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("hbone: peer presented no certificate")
	}
	return certIdentity(cs.PeerCertificates[0])
}

// certIdentity returns the one SPIFFE URI SAN of cert.
func certIdentity(cert *x509.Certificate) (Identity, error) {
	var found []string
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u.String())
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, errors.New("hbone: peer certificate has no SPIFFE URI SAN")
	case 1:
		return ParseIdentity(found[0])
	default:
		return Identity{}, fmt.Errorf("hbone: peer certificate has %d SPIFFE URI SANs, want one", len(found))
	}
}

// verifyChain checks that certs (leaf first) chain to roots for usage and
// returns the leaf's SPIFFE identity.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (Identity, error) {
	if len(certs) == 0 {
		return Identity{}, errors.New("hbone: peer presented no certificate")
	}
	if roots == nil {
		return Identity{}, errors.New("hbone: no trust roots configured")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return Identity{}, fmt.Errorf("hbone: peer certificate not trusted: %w", err)
	}
	return certIdentity(certs[0])
}
