package l7bench

import (
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
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/ambientlite/mesh/bench/l4bench"
	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/istiod-lite/ca"
	"github.com/ambientlite/mesh/istiod-lite/xds"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// controlPlane is istiod-lite's CA and delta ADS server, in the bench's
// process, on one gRPC server with TLS as istiod serves 15012: the
// waypoint fetches its certificate from it and both ztunnels and the
// waypoint take their configuration from it. Callers are told apart by
// bearer token (tokenAuth stands in for Kubernetes' TokenReview).
type controlPlane struct {
	authority *ca.Authority
	store     *xds.Store
	grpc      *grpc.Server
	// hostAddr is its listener on the host's loopback (for the ztunnels,
	// which run in the host namespace).
	hostAddr string
	files    meshFiles
}

// meshFiles are the files the processes read: the mesh root, tokens, and
// certificate-and-key files for the processes that do not ask the CA
// themselves (the ztunnels and the HAProxy peers), issued by the same CA.
type meshFiles struct {
	Root          string // root-cert.pem
	WaypointToken string
	ZtunnelToken  string
	// Client, Reviews and Waypoint hold a leaf of that identity followed by
	// its key (the layout HAProxy's crt and tls.LoadX509KeyPair read).
	Client, Reviews, Waypoint string
}

// tokens maps the bearer tokens to the callers they stand for.
var tokens = map[string]hbone.Identity{
	"l7bench-waypoint": waypointID,
	"l7bench-ztunnel":  ztunnelID,
}

// startControlPlane creates the CA, stores res, writes the files to dir and
// serves on the host's loopback (hostAddr); serveIn adds a pod's.
func startControlPlane(ctx context.Context, dir string, res meshResources) (*controlPlane, error) {
	a, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		return nil, err
	}
	cp := &controlPlane{authority: a, store: xds.NewStore(nil)}
	for typeURL, byName := range res {
		if err := cp.store.Set(typeURL, byName); err != nil {
			return nil, fmt.Errorf("xds store: %w", err)
		}
	}
	if cp.files, err = writeMeshFiles(ctx, dir, a); err != nil {
		return nil, err
	}
	serving, err := a.ServingCertificate([]string{caServerName}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	caSrv, err := ca.NewServer(ca.ServerConfig{Authority: a, Authenticator: tokenAuth{}})
	if err != nil {
		return nil, err
	}
	xdsSrv, err := xds.NewServer(xds.Config{Store: cp.store, Authenticator: xdsAuth{}})
	if err != nil {
		return nil, err
	}
	// Keepalive as istiod-lite's (controlplane.Run): the clients ping every
	// 30 s, which gRPC's default policy (5 min) would answer with GOAWAY
	// "too_many_pings" and a reconnect in the middle of a measurement.
	cp.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS13})),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	caSrv.Register(cp.grpc)
	xdsSrv.Register(cp.grpc)

	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cp.hostAddr = hostLn.Addr().String()
	go func() { _ = cp.grpc.Serve(hostLn) }()
	return cp, nil
}

// serveIn serves on 127.0.0.1:portControl inside ns too, where the pod
// (the waypoint) reaches it as it would reach istiod.
func (cp *controlPlane) serveIn(ns *l4bench.NetNS) error {
	var ln net.Listener
	err := capture.WithNetNS(ns.Path, func() error {
		// A socket stays in the namespace it was created in.
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", portControl))
		return err
	})
	if err != nil {
		return fmt.Errorf("control plane listener in the waypoint pod: %w", err)
	}
	go func() { _ = cp.grpc.Serve(ln) }()
	return nil
}

// close stops serving and ends every stream.
func (cp *controlPlane) close() {
	if cp != nil && cp.grpc != nil {
		cp.grpc.Stop()
	}
}

func writeMeshFiles(ctx context.Context, dir string, a *ca.Authority) (meshFiles, error) {
	f := meshFiles{
		Root:          filepath.Join(dir, "root-cert.pem"),
		WaypointToken: filepath.Join(dir, "waypoint.token"),
		ZtunnelToken:  filepath.Join(dir, "ztunnel.token"),
		Client:        filepath.Join(dir, "client.pem"),
		Reviews:       filepath.Join(dir, "reviews.pem"),
		Waypoint:      filepath.Join(dir, "waypoint.pem"),
	}
	write := map[string][]byte{f.Root: a.RootsPEM()}
	for token, id := range tokens {
		switch id {
		case waypointID:
			write[f.WaypointToken] = []byte(token)
		case ztunnelID:
			write[f.ZtunnelToken] = []byte(token)
		}
	}
	for path, id := range map[string]hbone.Identity{f.Client: clientID, f.Reviews: reviewsID, f.Waypoint: waypointID} {
		b, err := issueFile(ctx, a, id)
		if err != nil {
			return meshFiles{}, fmt.Errorf("certificate for %s: %w", id, err)
		}
		write[path] = b
	}
	for path, b := range write {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return meshFiles{}, err
		}
	}
	return f, nil
}

// issueFile has the CA sign a fresh ECDSA P-256 key for id, as it signs a
// workload's CSR, and returns the leaf and the chain up to (not including)
// the root, then the key, in PEM.
func issueFile(ctx context.Context, a *ca.Authority, id hbone.Identity) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	chain, err := a.Sign(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
		ca.Identity{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := []byte(strings.Join(chain[:len(chain)-1], ""))
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}

// tokenAuth authenticates the control plane's callers by the bearer token
// of their stream, as istiod-lite does with a TokenReview.
type tokenAuth struct{}

func (tokenAuth) caller(ctx context.Context) (hbone.Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if id, ok := tokens[strings.TrimPrefix(v, "Bearer ")]; ok {
			return id, nil
		}
	}
	return hbone.Identity{}, errors.New("token not recognised")
}

// Authenticate is the CA's Authenticator.
func (t tokenAuth) Authenticate(ctx context.Context) (ca.Caller, error) {
	id, err := t.caller(ctx)
	return ca.Caller{Identity: ca.Identity{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}}, err
}

// xdsAuth is the xDS server's Authenticator.
type xdsAuth struct{ tokenAuth }

func (t xdsAuth) Authenticate(ctx context.Context) (xds.Proxy, error) {
	id, err := t.caller(ctx)
	return xds.Proxy{Identity: id.String()}, err
}
