package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
	"github.com/ambientlite/mesh/istiod-lite/ca"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// The waypoint runs in-process against the real istiod-lite CA and config
// server (test-only imports) served over gRPC on loopback TLS, as istiod
// serves both on 15012; their Authenticators are the one fake, mapping
// bearer tokens to service accounts as TokenReview would.

const (
	caServerName  = "istiod.istio-system.svc"
	waypointToken = "waypoint-token"
	clientToken   = "client-token"
	otherToken    = "other-token"
	backendToken  = "backend-token"
)

var (
	waypointID = hbone.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "waypoint"}
	clientID   = hbone.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "frontend"}
	// otherID is a client in another namespace (consumer routes).
	otherID = hbone.Identity{TrustDomain: "cluster.local", Namespace: "other", ServiceAccount: "client"}
	// backendID is the identity of every backend workload behind the test
	// ztunnel.
	backendID = hbone.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "reviews"}
)

type tokenAuth map[string]ca.Caller

func (m tokenAuth) Authenticate(ctx context.Context) (ca.Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if c, ok := m[strings.TrimPrefix(v, "Bearer ")]; ok {
			return c, nil
		}
	}
	return ca.Caller{}, errors.New("token not recognised")
}

// xdsAuth is tokenAuth for the config server.
type xdsAuth map[string]ca.Caller

func (m xdsAuth) Authenticate(ctx context.Context) (xds.Proxy, error) {
	c, err := tokenAuth(m).Authenticate(ctx)
	if err != nil {
		return xds.Proxy{}, err
	}
	return xds.Proxy{Identity: hbone.Identity{TrustDomain: "cluster.local", Namespace: c.Identity.Namespace, ServiceAccount: c.Identity.ServiceAccount}.String()}, nil
}

// testCA is a CA serving CreateCertificate and a config server serving
// delta ADS (from store) on loopback, with root-cert.pem written to dir.
type testCA struct {
	authority *ca.Authority
	store     *xds.Store
	addr      string
	dir       string
	rootFile  string
}

func startCA(t testing.TB) *testCA {
	t.Helper()
	a, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	serving, err := a.ServingCertificate([]string{caServerName}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	callers := tokenAuth{
		waypointToken: {Identity: ca.Identity{Namespace: waypointID.Namespace, ServiceAccount: waypointID.ServiceAccount}},
		clientToken:   {Identity: ca.Identity{Namespace: clientID.Namespace, ServiceAccount: clientID.ServiceAccount}},
		otherToken:    {Identity: ca.Identity{Namespace: otherID.Namespace, ServiceAccount: otherID.ServiceAccount}},
		backendToken:  {Identity: ca.Identity{Namespace: backendID.Namespace, ServiceAccount: backendID.ServiceAccount}},
	}
	srv, err := ca.NewServer(ca.ServerConfig{Authority: a, Authenticator: callers})
	if err != nil {
		t.Fatal(err)
	}
	store := xds.NewStore(nil)
	xsrv, err := xds.NewServer(xds.Config{Store: store, Authenticator: xdsAuth(callers), Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS13})))
	srv.Register(g)
	xsrv.Register(g)
	go g.Serve(lis) //nolint:errcheck // returns on Stop
	t.Cleanup(g.Stop)
	tc := &testCA{authority: a, store: store, addr: lis.Addr().String(), dir: t.TempDir()}
	tc.rootFile = filepath.Join(tc.dir, "root-cert.pem")
	writeFile(t, tc.rootFile, string(a.RootsPEM()))
	return tc
}

// waypointArgs are the flags that point a waypoint at tc, with its token
// in tokenFile and every listener on a loopback port.
func (tc *testCA) waypointArgs(tokenFile string) []string {
	return []string{
		"--pod-namespace", waypointID.Namespace, "--service-account", waypointID.ServiceAccount,
		"--ca-address", tc.addr, "--ca-server-name", caServerName,
		"--xds-address", tc.addr, "--xds-server-name", caServerName,
		"--token-file", tokenFile, "--root-cert-file", tc.rootFile,
		"--hbone-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--status-addr", "127.0.0.1:0",
	}
}

// certificate fetches a certificate for the identity of token through
// meshcert, as another workload would.
func (tc *testCA) certificate(t testing.TB, token string, id hbone.Identity) *meshcert.Certificate {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, token)
	c, err := meshcert.NewClient(meshcert.Config{Address: tc.addr, ServerName: caServerName, RootCertFile: tc.rootFile, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cert, err := c.Fetch(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writeFile(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startEcho runs a loopback TCP echo server that half-closes after EOF.
func startEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	return ln.Addr().String()
}

// logSink collects the waypoint's JSON log lines.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the records logged so far.
func (l *logSink) lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// find returns the first record with message msg whose attributes include
// every key/value of attrs (numbers compared as float64), or nil.
func (l *logSink) find(msg string, attrs map[string]any) map[string]any {
next:
	for _, rec := range l.lines() {
		if rec["msg"] != msg {
			continue
		}
		for k, v := range attrs {
			if rec[k] != v {
				continue next
			}
		}
		return rec
	}
	return nil
}

// waitLog waits for a record as find describes it.
func (l *logSink) waitLog(t testing.TB, msg string, attrs map[string]any) map[string]any {
	t.Helper()
	var rec map[string]any
	waitFor(t, "log "+msg, func() bool { rec = l.find(msg, attrs); return rec != nil })
	return rec
}

// addr returns the address the waypoint logged for a listener.
func (l *logSink) addr(t testing.TB, listener string) string {
	t.Helper()
	return l.waitLog(t, "listening", map[string]any{"listener": listener})["addr"].(string)
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get returns the status and body of GET url.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// checkNoLeaks fails the test if goroutines started during it still run
// shortly after its cleanups (registered later, so run earlier).
func checkNoLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d running, %d before the test\n%s", runtime.NumGoroutine(), before, buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// foreignCertificate is a certificate for id from another CA than the
// mesh's.
func foreignCertificate(t testing.TB, other *ca.Authority, id hbone.Identity) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id.String())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	chain, err := other.Sign(context.Background(), csr, ca.Identity{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(chain[0]))
	return &tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}
}
