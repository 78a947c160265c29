package meshcert

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Certificate is a workload certificate with its key, as issued and checked.
type Certificate struct {
	// Identity is the SPIFFE identity the leaf carries.
	Identity hbone.Identity
	// TLS holds the leaf first, then the intermediates up to (not
	// including) the root, the private key, and the parsed leaf (TLS.Leaf).
	TLS tls.Certificate
	// Roots are the mesh roots the leaf was verified against, as read from
	// the root file at the time of the fetch.
	Roots *x509.CertPool
}

// NotBefore is when the leaf becomes valid (the CA backdates it for clock skew).
func (c *Certificate) NotBefore() time.Time { return c.TLS.Leaf.NotBefore }

// NotAfter is when the leaf expires.
func (c *Certificate) NotAfter() time.Time { return c.TLS.Leaf.NotAfter }

// RenewAt is the leaf's half-life, when a Source renews it.
func (c *Certificate) RenewAt() time.Time {
	nb, na := c.NotBefore(), c.NotAfter()
	return nb.Add(na.Sub(nb) / 2)
}

// checkResponse turns a CreateCertificate chain into a Certificate. The chain
// is the leaf first and the roots last (as Istio sends it, one element of
// possibly several certificates); every certificate after the leaf may serve
// as an intermediate, but only roots (the mesh roots from our own file) anchor
// trust. The intermediates kept are those of the verified path.
func (c *Client) checkResponse(chain []string, key *ecdsa.PrivateKey, id hbone.Identity, roots *x509.CertPool) (*Certificate, error) {
	var certs []*x509.Certificate
	for i, p := range chain {
		cs, err := parsePEMCerts([]byte(p))
		if err == nil && len(cs) == 0 {
			err = errors.New("no PEM certificate")
		}
		if err != nil {
			return nil, fmt.Errorf("response element %d: %w", i, err)
		}
		certs = append(certs, cs...)
	}
	if len(certs) == 0 {
		return nil, errors.New("the response has no certificate")
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("the leaf certificate is not for the key of the request")
	}
	if err := checkSAN(leaf, id); err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	var path []*x509.Certificate
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		chains, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			CurrentTime:   c.cfg.Clock.Now(),
			KeyUsages:     []x509.ExtKeyUsage{usage},
		})
		if err != nil {
			return nil, fmt.Errorf("the leaf does not chain to the mesh roots in %s (for %s): %w",
				c.cfg.RootCertFile, usageName(usage), err)
		}
		path = chains[0]
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, pc := range path[:len(path)-1] { // the root stays out
		tc.Certificate = append(tc.Certificate, pc.Raw)
	}
	return &Certificate{Identity: id, TLS: tc, Roots: roots}, nil
}

// checkSAN requires the leaf to name exactly id, and nothing else.
func checkSAN(leaf *x509.Certificate, id hbone.Identity) error {
	want := id.String()
	var got []string
	for _, u := range leaf.URIs {
		got = append(got, u.String())
	}
	if len(got) != 1 || got[0] != want {
		return fmt.Errorf("the leaf's URI SANs are %q, want exactly [%s]", got, want)
	}
	if n := len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.EmailAddresses); n > 0 {
		return fmt.Errorf("the leaf has %d DNS, IP or e-mail SANs besides %s, want none", n, want)
	}
	return nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "server auth"
	}
	return "client auth"
}

// parsePEMCerts parses every CERTIFICATE block of b; other blocks are an
// error, as is anything that is not PEM.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
