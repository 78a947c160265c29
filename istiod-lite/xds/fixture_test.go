package xds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
)

const (
	goodToken  = "good-token"
	ztunnelID  = "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
	testNodeID = "ztunnel~10.0.0.1~ztunnel-abcde.istio-system~istio-system.svc.cluster.local"
	waitFor    = 10 * time.Second
)

// tokenAuth accepts "authorization: Bearer good-token", as the real
// authenticator will accept a reviewed service-account token.
type tokenAuth struct{}

func (tokenAuth) Authenticate(ctx context.Context) (Proxy, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if v == "Bearer "+goodToken {
			return Proxy{Identity: ztunnelID, Node: "node-a"}, nil
		}
	}
	return Proxy{}, errors.New("no valid bearer token")
}

type fixture struct {
	t     *testing.T
	srv   *Server
	store *Store
	reg   *prometheus.Registry
	addr  string
}

// newFixture serves a Server on a loopback port. Cleanup stops it and
// checks that no stream goroutine outlives it.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, store: NewStore(nil), reg: prometheus.NewRegistry()}
	cfg.Store = f.store
	if cfg.Authenticator == nil {
		cfg.Authenticator = tokenAuth{}
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 20 * time.Millisecond
	}
	cfg.Registerer = f.reg
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	gs := grpc.NewServer()
	srv.Register(gs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
		checkNoLeaks(t)
	})
	return f
}

// checkNoLeaks polls until no goroutine runs this package's server code
// or a gRPC transport.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	suspects := []string{"xds.(*stream)", "xds.(*Server)", "google.golang.org/grpc/internal/transport"}
	var leaked []string
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = leaked[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, s := range suspects {
				if strings.Contains(g, s) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return
		}
	}
	t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
}

// client is a delta ADS client as ztunnel behaves: it reads responses into
// a channel and answers them when the test says so.
type client struct {
	t      *testing.T
	conn   *grpc.ClientConn
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	resps  chan *discovery.DeltaDiscoveryResponse
	done   chan error // the Recv error that ended the stream
}

func (f *fixture) dial(token string) *client {
	f.t.Helper()
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		conn.Close()
		f.t.Fatal(err)
	}
	c := &client{t: f.t, conn: conn, stream: stream, cancel: cancel,
		resps: make(chan *discovery.DeltaDiscoveryResponse, 100), done: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.done <- err
				return
			}
			c.resps <- r
		}
	}()
	f.t.Cleanup(c.close)
	return c
}

func (c *client) close() {
	c.cancel()
	c.conn.Close()
}

func (c *client) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// subscribe sends a type's first request, as ztunnel does: node set,
// wildcard unless names are given.
func (c *client) subscribe(typeURL string, names []string, initial map[string]string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl:                 typeURL,
		Node:                    &core.Node{Id: testNodeID},
		ResourceNamesSubscribe:  names,
		InitialResourceVersions: initial,
	})
}

func (c *client) recv() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case err := <-c.done:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(waitFor):
		c.t.Fatal("no response")
	}
	return nil
}

// noResponse fails if a response is already queued.
func (c *client) noResponse() {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: %s", summary(r))
	default:
	}
}

func (c *client) ack(r *discovery.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
}

func (c *client) nack(r *discovery.DeltaDiscoveryResponse, msg string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: msg}})
}

// summary is a response as "name@version" list plus removals, for diffs.
type respSummary struct {
	Resources []string // names
	Removed   []string
}

func summary(r *discovery.DeltaDiscoveryResponse) respSummary {
	var s respSummary
	for _, res := range r.Resources {
		s.Resources = append(s.Resources, res.Name)
	}
	s.Removed = r.RemovedResources
	return s
}

// versions maps a response's resources to their versions.
func versions(r *discovery.DeltaDiscoveryResponse) map[string]string {
	m := map[string]string{}
	for _, res := range r.Resources {
		m[res.Name] = res.Version
	}
	return m
}

// workload is an ambient Address of a pod, named by its uid as Istio
// names workloads (pilot/pkg/model/service.go workloadResourceName).
func workload(uid, ip string, gen int) *workloadapi.Address {
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
		CanonicalRevision: fmt.Sprint(gen),
		Services: map[string]*workloadapi.PortList{
			"default/app.default.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}},
			"default/web.default.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 443, TargetPort: 8443}}},
		},
	}}}
}

// service is an ambient Address of a Service, named namespace/hostname.
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

func uidOf(i int) string { return fmt.Sprintf("cluster1//Pod/default/pod-%d", i) }

func (f *fixture) set(typeURL string, m map[string]proto.Message) {
	f.t.Helper()
	if err := f.store.Set(typeURL, m); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) update(typeURL string, ups map[string]proto.Message, removals ...string) {
	f.t.Helper()
	if err := f.store.Update(typeURL, ups, removals); err != nil {
		f.t.Fatal(err)
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

func (f *fixture) typeStatus(typeURL string) (TypeStatus, bool) {
	for _, s := range f.srv.Streams() {
		for _, ts := range s.Types {
			if ts.TypeURL == typeURL {
				return ts, true
			}
		}
	}
	return TypeStatus{}, false
}

// metric is the value of a gathered counter or gauge with the given
// label value ("" for none); a histogram gives its sample count.
func (f *fixture) metric(name, label string) float64 {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
