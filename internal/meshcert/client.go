package meshcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Defaults of Config.
const (
	// DefaultTokenFile is where Istio mounts the projected service-account
	// token with audience istio-ca.
	DefaultTokenFile = "/var/run/secrets/tokens/istio-token"
	// DefaultRootCertFile is where Istio mounts root-cert.pem of the
	// istio-ca-root-cert ConfigMap.
	DefaultRootCertFile = "/var/run/secrets/istio/root-cert.pem"
	// DefaultTTL is the lifetime asked for (DESIGN.md: 24 h leaf certificates).
	DefaultTTL = 24 * time.Hour
	// DefaultTimeout bounds one CreateCertificate call.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxReconnectDelay caps gRPC's backoff between attempts to
	// reach the CA (gRPC's own default is 120 s).
	DefaultMaxReconnectDelay = 30 * time.Second
)

// ImpersonatedIdentityKey is the request metadata field naming the identity a
// node agent asks a certificate for, as Istio's ztunnel sends it and Istio's
// CA reads it (istio.io/istio/pkg/security.ImpersonatedIdentity): a string
// value, the SPIFFE URI.
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// Config says where the CA is and how to authenticate to it. Address is
// required; every other field has the documented default when zero.
type Config struct {
	// Address of the certificate service, host:port, such as
	// istiod.istio-system.svc:15012. Required.
	Address string
	// ServerName is the name the CA's serving certificate must carry.
	// Default: the host of Address.
	ServerName string
	// RootCertFile holds the mesh roots (PEM), the CA's serving certificate
	// and every issued certificate are verified against. It is read on
	// every connection and every fetch, so an updated ConfigMap is picked
	// up. Default DefaultRootCertFile.
	RootCertFile string
	// TokenFile holds the service-account token sent as
	// "authorization: Bearer <token>". It is read on every call, so a
	// rotated projected token is picked up. Default DefaultTokenFile.
	TokenFile string
	// TTL is the certificate lifetime asked for; the CA may refuse one
	// above its maximum. Default DefaultTTL (24 h).
	TTL time.Duration
	// Impersonate sends the identity asked for in the request metadata
	// (ImpersonatedIdentityKey), as ztunnel does for the pods on its node;
	// the CA grants it only to node accounts. False: nothing is sent, the
	// CA issues the identity of the token, and Fetch fails unless that is
	// the identity asked for. Istio's CA refuses any ImpersonatedIdentity
	// from other callers, even their own, so leave it false for a workload's
	// own certificate. Default false.
	Impersonate bool
	// Timeout bounds one CreateCertificate call (on top of the caller's
	// context). Default DefaultTimeout.
	Timeout time.Duration
	// MaxReconnectDelay caps gRPC's backoff between attempts to connect to
	// the CA. Default DefaultMaxReconnectDelay.
	MaxReconnectDelay time.Duration
	// Clock judges the validity of certificates. Default: the system clock.
	Clock Clock
}

// Validate reports a configuration NewClient would refuse.
func (c Config) Validate() error {
	var errs []error
	host, port, err := net.SplitHostPort(c.Address)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil || host == "" {
		errs = append(errs, fmt.Errorf("meshcert: CA address %q: want host:port, such as istiod.istio-system.svc:15012", c.Address))
	}
	if c.TTL < 0 || c.TTL > 0 && c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("meshcert: TTL %v: want at least 1s (or 0 for %v)", c.TTL, DefaultTTL))
	}
	if c.Timeout < 0 || c.MaxReconnectDelay < 0 {
		errs = append(errs, errors.New("meshcert: Timeout and MaxReconnectDelay must not be negative"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	if c.RootCertFile == "" {
		c.RootCertFile = DefaultRootCertFile
	}
	if c.TokenFile == "" {
		c.TokenFile = DefaultTokenFile
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxReconnectDelay == 0 {
		c.MaxReconnectDelay = DefaultMaxReconnectDelay
	}
	c.Clock = clockOrSystem(c.Clock)
	return c
}

// Client calls the CA's CreateCertificate. It is safe for concurrent use and
// keeps one gRPC connection, opened at the first call and re-opened as
// needed; Close releases it.
type Client struct {
	cfg  Config
	conn *grpc.ClientConn
	rpc  pb.IstioCertificateServiceClient
}

// NewClient checks cfg and prepares a client. It does not connect: the first
// Fetch does, and reports a CA it cannot reach or trust.
func NewClient(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: cfg.ServerName,
		// Verification is done in VerifyConnection against roots read from
		// RootCertFile at each handshake (the file changes when the mesh
		// roots do), with an error that says which file and name.
		InsecureSkipVerify: true,
		VerifyConnection:   c.verifyServer,
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = cfg.MaxReconnectDelay
	conn, err := grpc.NewClient(cfg.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: cfg.Timeout}),
	)
	if err != nil {
		return nil, fmt.Errorf("meshcert: CA address %q: %w", cfg.Address, err)
	}
	c.conn = conn
	c.rpc = pb.NewIstioCertificateServiceClient(conn)
	return c, nil
}

// Close closes the connection to the CA. Fetch fails afterwards.
func (c *Client) Close() error { return c.conn.Close() }

// verifyServer checks the CA's serving certificate against the mesh roots and
// the server name, as crypto/tls would, with the roots of the moment.
func (c *Client) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("meshcert: the CA presented no certificate")
	}
	roots, err := c.roots()
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       c.cfg.ServerName,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   c.cfg.Clock.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("meshcert: the CA's certificate is not trusted for %q by the mesh roots in %s: %w",
			c.cfg.ServerName, c.cfg.RootCertFile, err)
	}
	return nil
}

// roots reads the mesh roots from RootCertFile.
func (c *Client) roots() (*x509.CertPool, error) {
	b, err := os.ReadFile(c.cfg.RootCertFile)
	if err != nil {
		return nil, fmt.Errorf("meshcert: mesh roots: %w", err)
	}
	certs, err := parsePEMCerts(b)
	if err == nil && len(certs) == 0 {
		err = errors.New("no PEM certificate in it")
	}
	if err != nil {
		return nil, fmt.Errorf("meshcert: mesh roots %s: %w", c.cfg.RootCertFile, err)
	}
	pool := x509.NewCertPool()
	for _, r := range certs {
		pool.AddCert(r)
	}
	return pool, nil
}

// token reads the service-account token from TokenFile.
func (c *Client) token() (string, error) {
	b, err := os.ReadFile(c.cfg.TokenFile)
	if err != nil {
		return "", fmt.Errorf("meshcert: service-account token: %w", err)
	}
	tok := string(bytes.TrimSpace(b))
	if tok == "" {
		return "", fmt.Errorf("meshcert: service-account token file %s is empty", c.cfg.TokenFile)
	}
	return tok, nil
}

// Fetch asks the CA for a new certificate for id and checks it: the leaf
// carries exactly id as its URI SAN, matches the new key, and chains to the
// mesh roots for both server and client authentication. Errors from the CA
// wrap the gRPC status (status.Code works on them).
func (c *Client) Fetch(ctx context.Context, id hbone.Identity) (*Certificate, error) {
	if _, err := hbone.ParseIdentity(id.String()); err != nil {
		return nil, fmt.Errorf("meshcert: cannot ask for identity %+v: %w", id, err)
	}
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	roots, err := c.roots()
	if err != nil {
		return nil, err
	}
	key, csr, err := newCSR(id)
	if err != nil {
		return nil, err
	}
	req := &pb.IstioCertificateRequest{
		Csr:              string(csr),
		ValidityDuration: int64(c.cfg.TTL / time.Second),
	}
	if c.cfg.Impersonate {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			ImpersonatedIdentityKey: structpb.NewStringValue(id.String()),
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	resp, err := c.rpc.CreateCertificate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("meshcert: CreateCertificate for %s at %s: %w%s", id, c.cfg.Address, err, c.hint(err))
	}
	cert, err := c.checkResponse(resp.GetCertChain(), key, id, roots)
	if err != nil {
		return nil, fmt.Errorf("meshcert: certificate for %s from %s: %w", id, c.cfg.Address, err)
	}
	return cert, nil
}

// hint says what to check for the usual refusals.
func (c *Client) hint(err error) string {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return fmt.Sprintf(" (the CA did not accept the token in %s: it must be a current projected service-account token with the audience the CA expects, istio-ca)", c.cfg.TokenFile)
	case codes.PermissionDenied:
		if c.cfg.Impersonate {
			return " (the caller may not have that identity: only a node account may ask for the identities of pods on its node)"
		}
		return " (the token's service account is not the identity asked for)"
	case codes.Unavailable:
		return " (the CA cannot be reached or trusted; retry later or check the address, its certificate and the mesh roots)"
	}
	return ""
}

// newCSR makes an ECDSA P-256 key and a PEM CSR with id as its only SAN.
func newCSR(id hbone.Identity) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("meshcert: generate key: %w", err)
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, nil, fmt.Errorf("meshcert: identity %s: %w", id, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("meshcert: create CSR: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
