package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// The L7 fixture: a mesh client (an hbone.Dialer with a client workload's
// certificate, as its ztunnel would dial) → the waypoint's data plane behind
// a real hbone.Server on loopback → HBONE with the waypoint's certificate →
// a test "ztunnel" (a real hbone.Server with the backends' identity, which
// dials the authority) → backends: real HTTP/1.1+h2c and gRPC servers on
// 127.0.0.1. Workloads and services are real istio.workload.Address
// messages in a ztunnel/state.Store whose HBONE port is the test ztunnel's;
// routes are real ServiceRoutes compiled by waypoint/router.

// clientAddr is the original client the test's CONNECTs name (forwarded).
var clientAddr = netip.MustParseAddrPort("10.244.0.10:43210")

type l7Fixture struct {
	t      testing.TB
	tc     *testCA
	store  *state.Store
	routes *routeTable
	m      *metrics
	dp     *dataPlane
	logs   *logSink
	// waypointAddr is the waypoint's HBONE listener; ztunnelPort the test
	// ztunnel's.
	waypointAddr string
	ztunnelPort  uint16
	// upstreamPeers are the identities the test ztunnel saw (the
	// waypoint's, if it dialled with its own).
	upstreamPeers sync.Map
	// failDials > 0 makes the test ztunnel fail that many dials to
	// backends (it answers 503, as a ztunnel whose pod is gone).
	failDials atomic.Int64
	// ztDials counts the tunnels the test ztunnel dialled for.
	ztDials atomic.Int64
	dialers map[hbone.Identity]*hbone.Dialer
}

// newL7 starts the fixture; tweak, if set, adjusts the data plane's
// config before it starts.
func newL7(t testing.TB, tweak func(*dataPlaneConfig)) *l7Fixture {
	t.Helper()
	checkNoLeaks(t)
	f := &l7Fixture{t: t, tc: startCA(t), logs: &logSink{}, m: newMetrics(), dialers: map[hbone.Identity]*hbone.Dialer{}}
	roots := f.tc.authority.Roots()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("waypoint logs:\n%s", f.logs.buf.String())
		}
	})

	// The backends' ztunnel.
	backendCert := f.tc.certificate(t, backendToken, backendID)
	zt := &hbone.Server{
		TLS: &tls.Config{Certificates: []tls.Certificate{backendCert.TLS}, ClientCAs: roots},
		Authorize: func(_ context.Context, r *hbone.Request) error {
			f.upstreamPeers.Store(r.Peer, true)
			return nil
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			f.ztDials.Add(1)
			if f.failDials.Add(-1) >= 0 {
				return nil, errors.New("test: dial refused")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	f.ztunnelPort = serveHBONE(t, zt)

	// The waypoint.
	log := slogTo(f.logs)
	f.store = state.New(state.Config{HBONEPort: f.ztunnelPort})
	f.routes = newRouteTable(log, f.m)
	wpCert := f.tc.certificate(t, waypointToken, waypointID)
	dialer := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &wpCert.TLS, nil },
		Roots:       roots,
	}
	cfg := dataPlaneConfig{
		Identity: waypointID, Dialer: dialer, Store: f.store, Routes: f.routes, Metrics: f.m,
		Log: log, AllowLoopback: true,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	dp, err := newDataPlane(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.dp = dp
	srv := &hbone.Server{
		TLS:            &tls.Config{Certificates: []tls.Certificate{wpCert.TLS}, ClientCAs: roots},
		Authorize:      dp.admitTunnel,
		Handle:         dp.handleTunnel,
		OnTunnelClose:  dp.tunnelClosed,
		CheckAuthority: checkAuthority(true),
	}
	port := serveHBONE(t, srv)
	f.waypointAddr = fmt.Sprintf("127.0.0.1:%d", port)
	// Registered after serveHBONE's cleanup, so run before it: the data
	// plane closes first, then the servers stop.
	t.Cleanup(func() {
		for _, d := range f.dialers {
			d.Close()
		}
		dialer.Close()
		dp.close()
	})
	return f
}

// serveHBONE serves srv on a loopback port until the test ends.
func serveHBONE(t testing.TB, srv *hbone.Server) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("HBONE server: %v", err)
		}
	})
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// dialer returns a client dialer for id's certificate.
func (f *l7Fixture) dialer(id hbone.Identity) *hbone.Dialer {
	if d := f.dialers[id]; d != nil {
		return d
	}
	token := map[hbone.Identity]string{clientID: clientToken, otherID: otherToken}[id]
	cert := f.tc.certificate(f.t, token, id)
	d := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &cert.TLS, nil },
		Roots:       f.tc.authority.Roots(),
	}
	f.dialers[id] = d
	return d
}

// tunnel opens a tunnel from the client id to the waypoint for dst.
func (f *l7Fixture) tunnel(ctx context.Context, id hbone.Identity, dst string) (*hbone.Stream, error) {
	return f.dialer(id).DialContext(ctx, hbone.Target{
		Address: f.waypointAddr, Authority: dst, Source: id, Destination: waypointID, ClientAddr: clientAddr,
	})
}

// client is an HTTP client of id whose every connection is a tunnel to the
// waypoint for dst (a service VIP:port), as a ztunnel carries an app's
// connections; h2 speaks HTTP/2 with prior knowledge.
func (f *l7Fixture) client(id hbone.Identity, dst string, h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return f.tunnel(ctx, id, dst) },
		DisableCompression: true,
	}
	tr.Protocols = new(http.Protocols)
	if h2 {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	f.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// grpcConn is a gRPC client connection of clientID through the waypoint to
// dst.
func (f *l7Fixture) grpcConn(dst string) *grpc.ClientConn {
	cc, err := grpc.NewClient("passthrough:///"+dst,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return f.tunnel(ctx, clientID, dst) }),
	)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cc.Close() })
	return cc
}

// addresses applies Address resources to the store, as the xDS client would.
func (f *l7Fixture) addresses(as ...*workloadapi.Address) {
	f.t.Helper()
	var ups []xdsclient.TypedResource[*workloadapi.Address]
	for _, a := range as {
		name := a.GetWorkload().GetUid()
		if s := a.GetService(); s != nil {
			name = s.GetNamespace() + "/" + s.GetHostname()
		}
		ups = append(ups, xdsclient.TypedResource[*workloadapi.Address]{Name: name, Version: "1", Message: a})
	}
	if err := f.store.ApplyAddresses(ups, nil); err != nil {
		f.t.Fatalf("ApplyAddresses: %v", err)
	}
}

// applyRoutes applies ServiceRoutes as one xDS response and returns the
// handler's verdict (nil: ACK).
func (f *l7Fixture) applyRoutes(removed []string, srs ...*routeapi.ServiceRoutes) error {
	var ups []xdsclient.TypedResource[*routeapi.ServiceRoutes]
	for _, sr := range srs {
		ups = append(ups, xdsclient.TypedResource[*routeapi.ServiceRoutes]{Name: sr.ResourceName(), Version: "1", Message: sr})
	}
	return f.routes.apply(ups, removed)
}

// routesOrSkip applies routes, skipping the test while waypoint/router is
// still the contract stub (its functions panic "not implemented yet").
func (f *l7Fixture) routesOrSkip(srs ...*routeapi.ServiceRoutes) {
	f.t.Helper()
	skipWithoutRouter(f.t)
	if err := f.applyRoutes(nil, srs...); err != nil {
		f.t.Fatalf("routes rejected: %v", err)
	}
}

// skipWithoutRouter skips a test that needs waypoint/router's behaviour
// while it is the contract stub.
func skipWithoutRouter(t testing.TB) {
	t.Helper()
	if routerMissing() {
		t.Skip("waypoint/router is not implemented yet")
	}
}

// backend is a real HTTP server (HTTP/1.1 and h2c) on 127.0.0.1 that
// answers every request with what it received, as JSON, and X-Backend.
type backend struct {
	name string
	port uint16
	seen chan seenRequest // every request, if the test reads them
	hits atomic.Int64
	// status, if set, picks the status of request n (1, 2, ...); 0 is 200.
	status func(n int64) int
	// delay, if set, is waited before answering.
	delay time.Duration
}

// seenRequest is what a backend received.
type seenRequest struct {
	Backend  string
	Method   string
	Path     string
	RawQuery string
	Host     string
	Proto    string
	Header   http.Header
	Body     string // "(<n> bytes)" beyond 4 KiB
}

func startBackend(t testing.TB, name string, opts ...func(*backend)) *backend {
	t.Helper()
	b := &backend{name: name, seen: make(chan seenRequest, 1000)}
	for _, o := range opts {
		o(b)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.port = uint16(ln.Addr().(*net.TCPAddr).Port)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: b, Protocols: &protos, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := b.hits.Add(1)
	if r.Header.Get("Upgrade") == "echo" {
		// A protocol switch: 101, then the connection echoes.
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "echo")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.Flush()
		io.Copy(c, rw)
		return
	}
	body, _ := io.ReadAll(r.Body)
	sr := seenRequest{Backend: b.name, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host,
		Proto: r.Proto, Header: r.Header, Body: string(body)}
	if len(body) > 4096 {
		sr.Body = fmt.Sprintf("(%d bytes)", len(body))
	}
	select {
	case b.seen <- sr:
	default:
	}
	if b.delay > 0 {
		select {
		case <-time.After(b.delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("X-Backend", b.name)
	w.Header().Set("Content-Type", "application/json")
	if b.status != nil {
		if s := b.status(n); s != 0 {
			w.WriteHeader(s)
		}
	}
	json.NewEncoder(w).Encode(sr)
}

// grpcBackend is a real gRPC server on 127.0.0.1 answering any method with
// "<name>:<request>" and header metadata naming itself, the method and the
// x-added request metadata it got.
func startGRPCBackend(t testing.TB, name string) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		md, _ := metadata.FromIncomingContext(stream.Context())
		in := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		stream.SetHeader(metadata.Pairs("x-backend", name, "x-method", method, "x-seen-added", strings.Join(md.Get("x-added"), ",")))
		return stream.SendMsg(wrapperspb.String(name + ":" + in.GetValue()))
	}))
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// grpcSay calls /<service>/<method> with msg and returns the reply, the
// header metadata and the error.
func grpcSay(ctx context.Context, cc *grpc.ClientConn, service, method, msg string, md ...string) (string, metadata.MD, error) {
	var hdr metadata.MD
	out := new(wrapperspb.StringValue)
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	err := cc.Invoke(ctx, "/"+service+"/"+method, wrapperspb.String(msg), out, grpc.Header(&hdr))
	return out.GetValue(), hdr, err
}

// Address builders: the shop namespace's services and workloads as istiod
// sends them. Every workload is on 127.0.0.1 with the backends' identity;
// its port mapping points a service port at a backend's port.

func svcHost(name string) string { return name + ".shop.svc.cluster.local" }

// svc is Service shop/<name> with a VIP and service ports (the target port
// is per endpoint).
func svc(name, vip string, ports ...uint32) *workloadapi.Address {
	s := &workloadapi.Service{Name: name, Namespace: "shop", Hostname: svcHost(name), Canonical: true,
		Addresses: []*workloadapi.NetworkAddress{{Address: netip.MustParseAddr(vip).AsSlice()}}}
	for _, p := range ports {
		s.Ports = append(s.Ports, &workloadapi.Port{ServicePort: p})
	}
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
}

// endpoint is workload <name> (HBONE, service account reviews) serving
// service <service> port svcPort on the backend's port.
func endpoint(name, service string, svcPort uint32, targetPort uint16, opts ...func(*workloadapi.Workload)) *workloadapi.Address {
	w := &workloadapi.Workload{
		Uid: "Kubernetes//Pod/shop/" + name, Name: name, Namespace: "shop", WorkloadName: name,
		CanonicalName: name, CanonicalRevision: "v1",
		Addresses:      [][]byte{netip.MustParseAddr("127.0.0.1").AsSlice()},
		TunnelProtocol: workloadapi.TunnelProtocol_HBONE, ServiceAccount: backendID.ServiceAccount,
		Services: map[string]*workloadapi.PortList{"shop/" + svcHost(service): {Ports: []*workloadapi.Port{{ServicePort: svcPort, TargetPort: uint32(targetPort)}}}},
	}
	for _, o := range opts {
		o(w)
	}
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
}

// plaintext makes a workload one outside the mesh (reached over plain TCP).
func plaintext(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_NONE }

// clientWorkload is the workload of the test client (10.244.0.10).
func clientWorkload() *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: "Kubernetes//Pod/shop/frontend-0", Name: "frontend-0", Namespace: "shop", WorkloadName: "frontend",
		CanonicalName: "frontend", CanonicalRevision: "v1", ServiceAccount: clientID.ServiceAccount,
		Addresses: [][]byte{clientAddr.Addr().AsSlice()}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
	}}}
}

// Route builders.

func routes(name, vip string, ports ...*routeapi.PortRoutes) *routeapi.ServiceRoutes {
	return &routeapi.ServiceRoutes{Name: name, Namespace: "shop", Hostname: svcHost(name), Addresses: []string{vip}, Ports: ports}
}

func httpPort(port uint32, producer *routeapi.RuleSet, consumers ...*routeapi.RuleSet) *routeapi.PortRoutes {
	return &routeapi.PortRoutes{Port: port, Name: "http", Protocol: routeapi.Protocol_PROTOCOL_HTTP, Producer: producer, Consumers: consumers}
}

// ruleSet is a rule set whose matches are paired with rules: matches[i]
// selects rules[i].
func ruleSet(matches []*routeapi.Match, rules ...*routeapi.Rule) *routeapi.RuleSet {
	for i, m := range matches {
		m.Rule = uint32(i)
	}
	return &routeapi.RuleSet{Matches: matches, Rules: rules}
}

func prefix(p string) *routeapi.Match {
	return &routeapi.Match{Path: &routeapi.PathMatch{Kind: &routeapi.PathMatch_Prefix{Prefix: p}}}
}

func regexPath(p string) *routeapi.Match {
	return &routeapi.Match{Path: &routeapi.PathMatch{Kind: &routeapi.PathMatch_Regex{Regex: p}}}
}

func dest(name string, port uint32, proto routeapi.Protocol) *routeapi.Destination {
	return &routeapi.Destination{Name: name, Namespace: "shop", Hostname: svcHost(name), Port: port, Protocol: proto}
}

func to(name string, weight uint32, filters ...*routeapi.Filter) *routeapi.Backend {
	return &routeapi.Backend{Weight: weight, Target: &routeapi.Backend_Destination{Destination: dest(name, 80, routeapi.Protocol_PROTOCOL_HTTP)}, Filters: filters}
}

func invalid(why string, weight uint32) *routeapi.Backend {
	return &routeapi.Backend{Weight: weight, Target: &routeapi.Backend_Invalid{Invalid: why}}
}

func forward(name string, backends ...*routeapi.Backend) *routeapi.Rule {
	return &routeapi.Rule{Origin: &routeapi.Origin{Kind: "HTTPRoute", Namespace: "shop", Name: name},
		Action: &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: backends}}}
}

func withFilters(r *routeapi.Rule, fs ...*routeapi.Filter) *routeapi.Rule {
	r.Filters = append(r.Filters, fs...)
	return r
}

func headerMod(set, add [][2]string, remove ...string) *routeapi.HeaderModifier {
	hm := &routeapi.HeaderModifier{Remove: remove}
	for _, h := range set {
		hm.Set = append(hm.Set, &routeapi.Header{Name: h[0], Value: h[1]})
	}
	for _, h := range add {
		hm.Add = append(hm.Add, &routeapi.Header{Name: h[0], Value: h[1]})
	}
	return hm
}

func reqHeaderFilter(hm *routeapi.HeaderModifier) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_RequestHeaderModifier{RequestHeaderModifier: hm}}
}

func respHeaderFilter(hm *routeapi.HeaderModifier) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_ResponseHeaderModifier{ResponseHeaderModifier: hm}}
}

func mirrorTo(name string) *routeapi.Filter {
	return &routeapi.Filter{Kind: &routeapi.Filter_RequestMirror{RequestMirror: &routeapi.Mirror{
		Destination: dest(name, 80, routeapi.Protocol_PROTOCOL_HTTP), Numerator: 1, Denominator: 1}}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// do sends req with c and returns the response with its body read.
func do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func newReq(t testing.TB, method, url string, body io.Reader, headers ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// seen decodes a backend's echo.
func seen(t testing.TB, body string) seenRequest {
	t.Helper()
	var sr seenRequest
	if err := json.Unmarshal([]byte(body), &sr); err != nil {
		t.Fatalf("backend echo %q: %v", body, err)
	}
	return sr
}

// metricsText returns the waypoint's metrics in the text format.
func (f *l7Fixture) metricsText() string {
	f.t.Helper()
	rec := &bodyRecorder{h: http.Header{}}
	req, _ := http.NewRequest("GET", "/metrics", nil)
	f.m.handler().ServeHTTP(rec, req)
	return rec.b.String()
}

type bodyRecorder struct {
	h http.Header
	b strings.Builder
}

func (r *bodyRecorder) Header() http.Header         { return r.h }
func (r *bodyRecorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *bodyRecorder) WriteHeader(int)             {}

// slogTo is a debug-level JSON logger writing to w.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
