package xdsclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// The tests run the real istiod-lite xDS server (a test-only import) on a
// loopback port over TLS 1.3, with a serving certificate from a CA made
// here; only its Authenticator is a stand-in for TokenReview.

const (
	serverName = "istiod.istio-system.svc"
	goodToken  = "good-token"
	ztunnelID  = "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
	waitFor    = 10 * time.Second
)

var testNode = Node{
	IPs:          []netip.Addr{netip.MustParseAddr("10.0.0.1")},
	PodName:      "ztunnel-abcde",
	PodNamespace: "istio-system",
	NodeName:     "node-a",
}

const testNodeID = "ztunnel~10.0.0.1~ztunnel-abcde.istio-system~istio-system.svc.cluster.local"

// testCA is an in-memory CA and its root written as root-cert.pem.
type testCA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	rootFile string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, rootFile: filepath.Join(t.TempDir(), "root-cert.pem")}
	if err := os.WriteFile(ca.rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// serving issues a server certificate for dnsName.
func (ca *testCA) serving(t *testing.T, dnsName string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{dnsName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tokenAuth accepts "authorization: Bearer good-token".
type tokenAuth struct{}

func (tokenAuth) Authenticate(ctx context.Context) (xds.Proxy, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if v == "Bearer "+goodToken {
			return xds.Proxy{Identity: ztunnelID, Node: "node-a"}, nil
		}
	}
	return xds.Proxy{}, errors.New("no valid bearer token")
}

// testServer is istiod-lite's xDS server on a loopback TLS port. It can be
// stopped and started again, with a new store, on the same address.
type testServer struct {
	t     *testing.T
	ca    *testCA
	addr  string
	store *xds.Store
	srv   *xds.Server

	gs     *grpc.Server
	served chan struct{}
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	s := &testServer{t: t, ca: newTestCA(t), addr: "127.0.0.1:0"}
	s.start(xds.NewStore(nil))
	t.Cleanup(s.stop)
	return s
}

// start serves store on s.addr (the same port after a stop).
func (s *testServer) start(store *xds.Store) {
	s.t.Helper()
	srv, err := xds.NewServer(xds.Config{Store: store, Authenticator: tokenAuth{}, Debounce: 5 * time.Millisecond})
	if err != nil {
		s.t.Fatal(err)
	}
	var lis net.Listener
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		lis, err = net.Listen("tcp", s.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	s.store, s.srv = store, srv
	s.gs = grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{s.ca.serving(s.t, serverName)},
		MinVersion:   tls.VersionTLS13,
	})))
	srv.Register(s.gs)
	s.served = make(chan struct{})
	go func(gs *grpc.Server, done chan struct{}) {
		defer close(done)
		_ = gs.Serve(lis)
	}(s.gs, s.served)
}

// stop stops the server at once, ending every stream.
func (s *testServer) stop() {
	if s.gs == nil {
		return
	}
	s.gs.Stop()
	<-s.served
	s.gs = nil
}

func (s *testServer) set(typeURL string, m map[string]proto.Message) {
	s.t.Helper()
	if err := s.store.Set(typeURL, m); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testServer) update(typeURL string, ups map[string]proto.Message, removals ...string) {
	s.t.Helper()
	if err := s.store.Update(typeURL, ups, removals); err != nil {
		s.t.Fatal(err)
	}
}

// version is the store's version of a resource.
func (s *testServer) version(typeURL, name string) string {
	r, ok := s.store.Get(typeURL, name)
	if !ok {
		s.t.Fatalf("%s %s not in the store", typeURL, name)
	}
	return r.Version
}

// typeStatus is the server's view of the only stream's type, if any.
func (s *testServer) typeStatus(typeURL string) (xds.TypeStatus, bool) {
	for _, st := range s.srv.Streams() {
		for _, ts := range st.Types {
			if ts.TypeURL == typeURL {
				return ts, true
			}
		}
	}
	return xds.TypeStatus{}, false
}

// world stores three workloads and a service, and one policy.
func (s *testServer) world() {
	s.t.Helper()
	s.set(xds.AddressType, map[string]proto.Message{
		uidOf(1):   workload(uidOf(1), "10.1.0.1", 1),
		uidOf(2):   workload(uidOf(2), "10.1.0.2", 1),
		uidOf(3):   workload(uidOf(3), "10.1.0.3", 1),
		appService: service("default", "app", "10.96.0.10"),
	})
	s.set(xds.AuthorizationType, map[string]proto.Message{"default/allow-web": policy("allow-web")})
}

const appService = "default/app.default.svc.cluster.local"

func uidOf(i int) string { return fmt.Sprintf("cluster1//Pod/default/pod-%d", i) }

// workload is an ambient Address of a pod, named by its uid as Istio names
// workloads; rev is its canonical revision, so a new rev is new content.
func workload(uid, ip string, rev any) *workloadapi.Address {
	a := netip.MustParseAddr(ip).As4()
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid:               uid,
		Name:              uid,
		Namespace:         "default",
		Addresses:         [][]byte{a[:]},
		ServiceAccount:    "default",
		Node:              "node-a",
		TunnelProtocol:    workloadapi.TunnelProtocol_HBONE,
		CanonicalName:     "app",
		CanonicalRevision: fmt.Sprint(rev),
	}}}
}

func service(ns, name, vip string) *workloadapi.Address {
	a := netip.MustParseAddr(vip).As4()
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
		Name:      name,
		Namespace: ns,
		Hostname:  name + "." + ns + ".svc.cluster.local",
		Addresses: []*workloadapi.NetworkAddress{{Address: a[:]}},
		Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}},
	}}}
}

func policy(name string) *security.Authorization {
	return &security.Authorization{Name: name, Namespace: "default", Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW}
}

// call is one handler call, names sorted.
type call struct {
	Upserts  []string
	Removals []string
}

// recorder is a handler that keeps what a proxy would keep (name →
// version) and reports each call. fail, if set, decides the handler's
// error from the call.
type recorder struct {
	t     *testing.T
	calls chan call
	fail  func(ups []Resource, removals []string) error

	mu    sync.Mutex
	state map[string]string
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{t: t, calls: make(chan call, 100), state: map[string]string{}}
}

func (r *recorder) handle(ups []Resource, removals []string) error {
	c := call{Removals: slices.Sorted(slices.Values(removals))}
	for _, u := range ups {
		c.Upserts = append(c.Upserts, u.Name)
	}
	slices.Sort(c.Upserts)
	defer func() { r.calls <- c }()
	if r.fail != nil {
		if err := r.fail(ups, removals); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range ups {
		r.state[u.Name] = u.Version
	}
	for _, n := range removals {
		delete(r.state, n)
	}
	return nil
}

// next waits for the next handler call.
func (r *recorder) next() call {
	r.t.Helper()
	select {
	case c := <-r.calls:
		return c
	case <-time.After(waitFor):
		r.t.Fatal("handler not called")
	}
	return call{}
}

func (r *recorder) snapshot() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.state))
	for k, v := range r.state {
		out[k] = v
	}
	return out
}

// token is a TokenSource whose token the test may change.
type token struct{ v atomic.Value }

func newToken(s string) *token {
	t := &token{}
	t.v.Store(s)
	return t
}

func (t *token) source(context.Context) (string, error) { return t.v.Load().(string), nil }

// newClient returns a client of s with fast backoff, after mod changed
// its Config.
func newClient(t *testing.T, s *testServer, mod func(*Config)) (*Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Address:      s.addr,
		ServerName:   serverName,
		RootCertFile: s.ca.rootFile,
		Token:        newToken(goodToken).source,
		Node:         testNode,
		Backoff:      Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, ResetAfter: time.Hour},
		Logger:       testLogger(t),
		Registerer:   reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

// run runs c until the test ends, then checks that Run returned.
func run(t *testing.T, c *Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitFor):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitSynced(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Synced():
	case <-time.After(waitFor):
		t.Fatalf("not synced; status %+v", c.Status())
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func typeStatus(c *Client, typeURL string) TypeStatus {
	for _, ts := range c.Status().Types {
		if ts.TypeURL == typeURL {
			return ts
		}
	}
	return TypeStatus{}
}

// metric is the value of a counter or gauge whose labels include want.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// settleGoroutines polls until at most n goroutines run.
func settleGoroutines(t *testing.T, n int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = runtime.NumGoroutine(); got <= n {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Errorf("%d goroutines, want at most %d:\n%s", got, n, buf[:runtime.Stack(buf, true)])
}
