package images

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// selfSignedFiles returns two image files, a PEM certificate at certPath
// and its PEM (PKCS #8) private key at keyPath, of a self-signed ECDSA P-256
// certificate for dnsName, for a test server that needs some TLS identity
// (such as Istio's echo server on its --tls ports).
//
// The pair is made when the image is built, and made the same on every
// build: the key is derived from dnsName, and the signature is RFC 6979's
// deterministic ECDSA. So the image's digest still depends on its inputs
// alone, and no key is checked into the repository. The key is therefore no
// secret: anyone can derive it. Both files are mode 0644, so that a
// container running as any user can read them.
func selfSignedFiles(certPath, keyPath, dnsName string) []File {
	pair := sync.OnceValues(func() (selfSignedPair, error) { return selfSigned(dnsName) })
	return []File{
		{Path: certPath, Contents: func() ([]byte, error) { p, err := pair(); return p.cert, err }},
		{Path: keyPath, Contents: func() ([]byte, error) { p, err := pair(); return p.key, err }},
	}
}

// selfSignedPair is a PEM certificate and its PEM private key.
type selfSignedPair struct{ cert, key []byte }

// Validity of the self-signed certificates: fixed, so that the certificate
// is the same on every build, and wide enough never to matter.
var (
	selfSignedNotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	selfSignedNotAfter  = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// selfSigned makes the certificate and key of [selfSignedFiles].
func selfSigned(dnsName string) (selfSignedPair, error) {
	// A P-256 scalar derived from the name; a hash is below the group
	// order but for a chance of about 2^-32, which ParseRawPrivateKey
	// would report.
	seed := sha256.Sum256([]byte("ambientlite e2e/images self-signed test key, not a secret: " + dnsName))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed[:])
	if err != nil {
		return selfSignedPair{}, fmt.Errorf("self-signed key for %s: %w", dnsName, err)
	}
	serial := new(big.Int).SetBytes(seed[:16])
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: dnsName},
		DNSNames:              []string{dnsName},
		NotBefore:             selfSignedNotBefore,
		NotAfter:              selfSignedNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	// A nil random source makes ECDSA signatures deterministic (RFC 6979);
	// with the serial number set, CreateCertificate reads no randomness.
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return selfSignedPair{}, fmt.Errorf("self-signed certificate for %s: %w", dnsName, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return selfSignedPair{}, fmt.Errorf("self-signed key for %s: %w", dnsName, err)
	}
	return selfSignedPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}
