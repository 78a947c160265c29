package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	pb "istio.io/api/security/v1alpha1"
)

// tokenAuthenticator stands for TokenReview: it maps the bearer token in the
// request's metadata to a caller.
type tokenAuthenticator map[string]Caller

func (m tokenAuthenticator) Authenticate(ctx context.Context) (Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if c, ok := m[strings.TrimPrefix(v, "Bearer ")]; ok {
			return c, nil
		}
	}
	return Caller{}, errors.New("token not recognised")
}

// podIndex stands for the index of scheduled pods: node → identities.
type podIndex struct {
	pods map[string][]Identity
	err  error
}

func (p podIndex) IdentityRunsOnNode(_ context.Context, id Identity, node string) (bool, error) {
	if p.err != nil {
		return false, p.err
	}
	for _, have := range p.pods[node] {
		if have == id {
			return true, nil
		}
	}
	return false, nil
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	ca     *Authority
	client pb.IstioCertificateServiceClient
	logs   *syncBuffer
	reg    *prometheus.Registry
}

// startServer runs the service on a loopback TLS listener, with a server
// certificate from the CA itself, and dials it trusting only the CA's root.
func startServer(t *testing.T, nodes NodeChecker) *testServer {
	t.Helper()
	a, err := NewSelfSigned(Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const serverName = "istiod.istio-system.svc"
	serving, err := a.ServingCertificate([]string{serverName}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{ca: a, logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	srv, err := NewServer(ServerConfig{
		Authority: a,
		Authenticator: tokenAuthenticator{
			"cart-token":    {Identity: app},
			"ztunnel-token": {Identity: ztunnel, Node: "node-a"},
			"nodeless-zt":   {Identity: ztunnel},
		},
		NodeChecker: nodes,
		Logger:      slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:  ts.reg,
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

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:    a.Roots(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ts.client = pb.NewIstioCertificateServiceClient(conn)
	return ts
}

// counter reads a counter from the registry; label "" means no labels.
func (ts *testServer) counter(t *testing.T, name, reason string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{reason=%q} not found", name, reason)
	return 0
}

func TestCreateCertificate(t *testing.T) {
	key := newKey(t)
	podURI := "spiffe://cluster.local/ns/shop/sa/payments"
	nodes := podIndex{pods: map[string][]Identity{"node-a": {otherApp}, "node-b": {{Namespace: "web", ServiceAccount: "front"}}}}

	cases := []struct {
		name     string
		token    string
		csr      []byte
		ttl      int64
		identity string // ImpersonatedIdentity metadata
		nodes    NodeChecker

		wantCode   codes.Code
		wantReason string        // refusals: reason label and log
		wantURI    string        // issued: the leaf's URI SAN
		wantTTL    time.Duration // issued: the leaf's lifetime
	}{
		{name: "own identity", token: "cart-token", csr: newCSR(t, key, appURI),
			wantURI: appURI, wantTTL: DefaultTTL},
		{name: "own identity, CSR without SAN, 1h", token: "cart-token", csr: newCSR(t, key), ttl: 3600,
			wantURI: appURI, wantTTL: time.Hour},
		{name: "own identity named as impersonated", token: "cart-token", csr: newCSR(t, key, appURI), identity: appURI,
			wantURI: appURI, wantTTL: DefaultTTL},
		{name: "ztunnel for a pod on its node", token: "ztunnel-token", csr: newCSR(t, key, podURI), identity: podURI, nodes: nodes,
			wantURI: podURI, wantTTL: DefaultTTL},
		{name: "ztunnel for a pod on another node", token: "ztunnel-token", csr: newCSR(t, key),
			identity: "spiffe://cluster.local/ns/web/sa/front", nodes: nodes,
			wantCode: codes.PermissionDenied, wantReason: reasonNotOnNode},
		{name: "ztunnel whose node is unknown", token: "nodeless-zt", csr: newCSR(t, key), identity: podURI, nodes: nodes,
			wantCode: codes.PermissionDenied, wantReason: reasonNotOnNode},
		{name: "ztunnel without a node checker", token: "ztunnel-token", csr: newCSR(t, key), identity: podURI,
			wantCode: codes.PermissionDenied, wantReason: reasonNotOnNode},
		{name: "ztunnel, pod index unavailable", token: "ztunnel-token", csr: newCSR(t, key), identity: podURI,
			nodes:    podIndex{err: errors.New("pod informer not synced")},
			wantCode: codes.Unavailable, wantReason: reasonNodeCheckFailed},
		{name: "ztunnel, other trust domain", token: "ztunnel-token", csr: newCSR(t, key),
			identity: "spiffe://evil.example/ns/shop/sa/payments", nodes: nodes,
			wantCode: codes.PermissionDenied, wantReason: reasonImpersonation},
		{name: "workload impersonating a neighbour", token: "cart-token", csr: newCSR(t, key), identity: podURI, nodes: nodes,
			wantCode: codes.PermissionDenied, wantReason: reasonImpersonation},
		{name: "CSR names another identity", token: "cart-token", csr: newCSR(t, key, podURI),
			wantCode: codes.PermissionDenied, wantReason: reasonCSRMismatch},
		{name: "malformed CSR", token: "cart-token", csr: []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"),
			wantCode: codes.InvalidArgument, wantReason: reasonBadCSR},
		{name: "TTL above the max", token: "cart-token", csr: newCSR(t, key), ttl: int64(DefaultMaxTTL/time.Second) + 1,
			wantCode: codes.InvalidArgument, wantReason: reasonBadTTL},
		{name: "TTL overflowing a duration", token: "cart-token", csr: newCSR(t, key), ttl: 1 << 62,
			wantCode: codes.InvalidArgument, wantReason: reasonBadTTL},
		{name: "no token", csr: newCSR(t, key),
			wantCode: codes.Unauthenticated, wantReason: reasonUnauthenticated},
		{name: "unknown token", token: "stolen", csr: newCSR(t, key),
			wantCode: codes.Unauthenticated, wantReason: reasonUnauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.nodes)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
			}
			req := &pb.IstioCertificateRequest{Csr: string(tc.csr), ValidityDuration: tc.ttl}
			if tc.identity != "" {
				req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
					ImpersonatedIdentityKey: structpb.NewStringValue(tc.identity),
				}}
			}
			start := time.Now()
			resp, err := ts.client.CreateCertificate(ctx, req)

			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tc.wantCode)
			}
			if tc.wantCode != codes.OK {
				if resp != nil {
					t.Error("refused, but a response was returned")
				}
				if n := ts.counter(t, "istiod_lite_ca_certificates_issued_total", ""); n != 0 {
					t.Errorf("issued counter %v after a refusal", n)
				}
				if n := ts.counter(t, "istiod_lite_ca_certificates_refused_total", tc.wantReason); n != 1 {
					t.Errorf("refused{reason=%q} = %v, want 1", tc.wantReason, n)
				}
				if logs := ts.logs.String(); !strings.Contains(logs, "certificate refused") || !strings.Contains(logs, "reason="+tc.wantReason) {
					t.Errorf("refusal not logged with its reason:\n%s", logs)
				}
				return
			}
			leaf := verifyResponse(t, resp.GetCertChain(), ts.ca.Roots(), ts.ca.RootsPEM())
			checkLeaf(t, leaf, tc.wantURI)
			if got := leaf.NotAfter.Sub(start); got < tc.wantTTL-2*time.Second || got > tc.wantTTL+time.Second {
				t.Errorf("lifetime %s, want %s", got, tc.wantTTL)
			}
			if len(resp.GetCertChain()) != 2 {
				t.Errorf("self-signed CA: chain has %d elements, want leaf and root", len(resp.GetCertChain()))
			}
			if n := ts.counter(t, "istiod_lite_ca_certificates_issued_total", ""); n != 1 {
				t.Errorf("issued counter %v, want 1", n)
			}
		})
	}
}

func TestNewServerConfig(t *testing.T) {
	a, err := NewSelfSigned(Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	auth := tokenAuthenticator{}
	for name, cfg := range map[string]ServerConfig{
		"no authority":     {Authenticator: auth},
		"no authenticator": {Authority: a},
		"bad node account": {Authority: a, Authenticator: auth, NodeAccounts: []Identity{{Namespace: "istio-system"}}},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("%s: NewServer succeeded, want an error", name)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := NewServer(ServerConfig{Authority: a, Authenticator: auth, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(ServerConfig{Authority: a, Authenticator: auth, Registerer: reg}); err == nil {
		t.Error("second Server on one registry: want a duplicate-registration error")
	}
}

// A custom node account replaces the default: ztunnel is then refused.
func TestCustomNodeAccounts(t *testing.T) {
	a, err := NewSelfSigned(Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	agent := Identity{Namespace: "kube-system", ServiceAccount: "node-agent"}
	srv, err := NewServer(ServerConfig{
		Authority:     a,
		Authenticator: tokenAuthenticator{"agent": {Identity: agent, Node: "n"}, "zt": {Identity: ztunnel, Node: "n"}},
		NodeChecker:   podIndex{pods: map[string][]Identity{"n": {otherApp}}},
		NodeAccounts:  []Identity{agent},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.IstioCertificateRequest{Csr: string(newCSR(t, newKey(t))), Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		ImpersonatedIdentityKey: structpb.NewStringValue(a.SPIFFEID(otherApp)),
	}}}
	for token, want := range map[string]codes.Code{"agent": codes.OK, "zt": codes.PermissionDenied} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
		if _, err := srv.CreateCertificate(ctx, req); status.Code(err) != want {
			t.Errorf("%s: %v, want %v", token, err, want)
		}
	}
}
