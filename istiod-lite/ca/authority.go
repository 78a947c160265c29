package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Keys of Istio's cacerts Secret (and of our own persisted CA Secret, which
// uses the same layout so that either can be handed to the other).
const (
	// CACertFile holds the signing certificate: the root itself for a
	// self-signed CA, an intermediate for a plugged-in one.
	CACertFile = "ca-cert.pem"
	// CAKeyFile holds the signing certificate's private key (SEC1, PKCS#1 or
	// PKCS#8 PEM).
	CAKeyFile = "ca-key.pem"
	// RootCertFile holds the trust root(s) the signing certificate chains to.
	RootCertFile = "root-cert.pem"
	// CertChainFile holds the certificates between ca-cert.pem and the root.
	// It is optional; Istio's tooling writes ca-cert.pem followed by the root.
	CertChainFile = "cert-chain.pem"
)

const (
	// DefaultTrustDomain is Istio's default trust domain.
	DefaultTrustDomain = "cluster.local"
	// DefaultTTL is the lifetime of a workload certificate whose request names
	// none (Istio's DEFAULT_WORKLOAD_CERT_TTL).
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest lifetime a request may ask for (Istio's
	// MAX_WORKLOAD_CERT_TTL).
	DefaultMaxTTL = 90 * 24 * time.Hour
	// RootTTL is the lifetime of a self-signed root (Istio's
	// CITADEL_SELF_SIGNED_CA_CERT_TTL).
	RootTTL = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a node whose clock runs a little
	// behind ours accepts a fresh certificate (Istio uses the same 2 minutes).
	clockSkew = 2 * time.Minute
)

// Config says what an Authority issues. The zero value is Istio's defaults.
type Config struct {
	// TrustDomain of every identity issued. Default "cluster.local".
	TrustDomain string
	// DefaultTTL is the lifetime when a request asks for none (0 or
	// negative, as in Istio). Default 24h.
	DefaultTTL time.Duration
	// MaxTTL is the longest lifetime a request may ask for; a longer request
	// is refused, not shortened, as Istio does. Default 90 days.
	MaxTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case len(c.TrustDomain) > 255 || strings.ContainsAny(c.TrustDomain, "/:@ "):
		return fmt.Errorf("ca: trust domain %q: want a DNS-like name such as cluster.local", c.TrustDomain)
	case c.DefaultTTL < 0 || c.MaxTTL < 0:
		return errors.New("ca: DefaultTTL and MaxTTL must not be negative")
	case c.DefaultTTL > c.MaxTTL:
		return fmt.Errorf("ca: DefaultTTL %s is longer than MaxTTL %s", c.DefaultTTL, c.MaxTTL)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.DefaultTTL == 0 {
		c.DefaultTTL = DefaultTTL
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Authority signs workload certificates. It is immutable and safe for
// concurrent use.
type Authority struct {
	cfg Config

	signer crypto.Signer
	cert   *x509.Certificate // the signing certificate

	// Exactly what SecretData returns, so a restart reloads the same bytes.
	certPEM, keyPEM, chainPEM, rootPEM []byte

	// chain is what follows the leaf in a response: the signing certificate
	// and the certificates up to, not including, the root, one PEM each. It is
	// empty when the signing certificate is the root.
	chain []string
	roots *x509.CertPool
}

// NewSelfSigned makes an Authority with a new self-signed root: ECDSA P-256,
// valid for ten years from now, subject O=<trust domain> as Istio's
// self-signed root has. Persist SecretData and load it with FromCACerts on
// the next start, or every restart will change the mesh's trust root.
func NewSelfSigned(cfg Config, now time.Time) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{cfg.TrustDomain}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: create root certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode root key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	return FromCACerts(map[string][]byte{
		CACertFile:   certPEM,
		CAKeyFile:    keyPEM,
		RootCertFile: certPEM,
	}, cfg)
}

// SecretData returns the Authority's key material in the cacerts layout
// (ca-cert.pem, ca-key.pem, root-cert.pem and, when it was given,
// cert-chain.pem), ready to be stored as a Secret's data and handed back to
// FromCACerts. The map and its slices are fresh copies.
func (a *Authority) SecretData() map[string][]byte {
	m := map[string][]byte{
		CACertFile:   clone(a.certPEM),
		CAKeyFile:    clone(a.keyPEM),
		RootCertFile: clone(a.rootPEM),
	}
	if len(a.chainPEM) > 0 {
		m[CertChainFile] = clone(a.chainPEM)
	}
	return m
}

// RootsPEM returns root-cert.pem: what workloads trust, and what istiod-lite
// publishes in ConfigMap istio-ca-root-cert.
func (a *Authority) RootsPEM() []byte { return clone(a.rootPEM) }

// Roots returns the trust roots as a pool.
func (a *Authority) Roots() *x509.CertPool { return a.roots.Clone() }

// TrustDomain returns the trust domain of the identities this Authority issues.
func (a *Authority) TrustDomain() string { return a.cfg.TrustDomain }

// SPIFFEID returns id's SPIFFE URI in this Authority's trust domain.
func (a *Authority) SPIFFEID(id Identity) string { return spiffeURI(a.cfg.TrustDomain, id) }

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("ca: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
