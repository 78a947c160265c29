package meshcert

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/istiod-lite/ca"
)

// The tests run the real istiod-lite CA (test-only import) over real gRPC on
// loopback TLS; only its two Kubernetes-facing interfaces are fakes: tokens
// map to callers, and a fixed table says which pod runs where.

const (
	caServerName   = "istiod.istio-system.svc"
	waypointToken  = "waypoint-token"
	ztunnelToken   = "ztunnel-token"
	waypointNS     = "shop"
	waypointSA     = "waypoint"
	onNodePodNS    = "shop"
	onNodePodSA    = "cart"
	ztunnelNode    = "node-a"
	otherNodePodSA = "billing"
)

var (
	waypointID = hbone.Identity{TrustDomain: "cluster.local", Namespace: waypointNS, ServiceAccount: waypointSA}
	cartID     = hbone.Identity{TrustDomain: "cluster.local", Namespace: onNodePodNS, ServiceAccount: onNodePodSA}
	billingID  = hbone.Identity{TrustDomain: "cluster.local", Namespace: onNodePodNS, ServiceAccount: otherNodePodSA}
)

// tokenAuth stands for TokenReview: the bearer token names the caller.
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

// pods stands for the pod index: node → identities scheduled there.
type pods map[string][]ca.Identity

func (p pods) IdentityRunsOnNode(_ context.Context, id ca.Identity, node string) (bool, error) {
	for _, have := range p[node] {
		if have == id {
			return true, nil
		}
	}
	return false, nil
}

// testCA is a running CA and the files a client of it reads.
type testCA struct {
	authority *ca.Authority
	addr      string
	dir       string
	rootFile  string
}

// startCA serves CreateCertificate on a loopback TLS listener with a serving
// certificate for istiod.istio-system.svc from the CA itself, on clock now
// (nil: the system clock), and writes root-cert.pem.
func startCA(t *testing.T, now func() time.Time) *testCA {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	a, err := ca.NewSelfSigned(ca.Config{Now: now}, now())
	if err != nil {
		t.Fatal(err)
	}
	serving, err := a.ServingCertificate([]string{caServerName}, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.NewServer(ca.ServerConfig{
		Authority: a,
		Authenticator: tokenAuth{
			waypointToken: {Identity: ca.Identity{Namespace: waypointNS, ServiceAccount: waypointSA}},
			ztunnelToken:  {Identity: ca.DefaultNodeAccount, Node: ztunnelNode},
		},
		NodeChecker: pods{ztunnelNode: {{Namespace: onNodePodNS, ServiceAccount: onNodePodSA}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serving},
		MinVersion:   tls.VersionTLS13,
	})))
	srv.Register(g)
	go g.Serve(lis) //nolint:errcheck // returns on Stop
	t.Cleanup(g.Stop)

	tc := &testCA{authority: a, addr: lis.Addr().String(), dir: t.TempDir()}
	tc.rootFile = filepath.Join(tc.dir, "root-cert.pem")
	writeFile(t, tc.rootFile, string(a.RootsPEM()))
	return tc
}

// client returns a Client of the CA that sends token (written to a file of
// its own, which the test may rewrite: tokenFile), after mod changed its
// Config.
func (tc *testCA) client(t *testing.T, token string, mod func(*Config)) *Client {
	t.Helper()
	tokenFile, err := os.CreateTemp(tc.dir, "istio-token-")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile.Close()
	writeFile(t, tokenFile.Name(), token)
	cfg := Config{
		Address:      tc.addr,
		ServerName:   caServerName,
		RootCertFile: tc.rootFile,
		TokenFile:    tokenFile.Name(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tokenFile is the file c reads its token from.
func tokenFile(c *Client) string { return c.cfg.TokenFile }

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeClock is a Clock that moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch
}

// set moves the clock to now (never backwards) and fires the timers due.
func (c *fakeClock) set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.now) {
		c.now = now
	}
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(c.now) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- c.now
	}
	c.timers = kept
}

// pending returns the deadlines of the timers not fired yet.
func (c *fakeClock) pending() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, tm := range c.timers {
		out = append(out, tm.at)
	}
	return out
}

// nextTimer waits until a timer is pending and returns its deadline.
func (c *fakeClock) nextTimer(t *testing.T) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, "a pending timer", func() bool {
		p := c.pending()
		if len(p) > 0 {
			at = p[0]
		}
		return len(p) > 0
	})
	return at
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runHBONEEcho runs an hbone Server with server's certificate in front of a
// loopback echo and sends a line through a tunnel dialled with client's.
func runHBONEEcho(t *testing.T, server, client *Source) {
	t.Helper()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &hbone.Server{TLS: server.ServerTLS()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	d := &hbone.Dialer{Certificate: client.Certificate, Roots: client.Roots()}
	t.Cleanup(func() { d.Close() })
	st, err := d.DialContext(ctx, hbone.Target{
		Address:     ln.Addr().String(),
		Authority:   echo.Addr().String(),
		Source:      client.Identity,
		Destination: server.Identity,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const msg = "hello through the mesh\n"
	if _, err := io.WriteString(st, msg); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Errorf("echo = %q, want %q", got, msg)
	}
	if p := st.PeerIdentity(); p != server.Identity {
		t.Errorf("server identity %v, want %v", p, server.Identity)
	}
}
