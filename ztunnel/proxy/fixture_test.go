package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var (
	ipA = netip.MustParseAddr("10.253.0.1")
	ipB = netip.MustParseAddr("10.253.0.2")
	idA = hbone.Identity{TrustDomain: "cluster.local", Namespace: "ns-a", ServiceAccount: "sa-a"}
	idB = hbone.Identity{TrustDomain: "cluster.local", Namespace: "ns-b", ServiceAccount: "sa-b"}
)

const (
	portEcho     = 8080 // echo app in B, reached through HBONE
	portPass     = 9090 // echo app in B, the resolver says passthrough
	portDead     = 8081 // nothing listens in B
	portExcluded = 9999 // excluded from B's inbound capture (benchmark baseline)
)

// testResolver routes A→B over HBONE (port 9090: passthrough) and decides
// inbound connections with the inbound hook (default: allow, plaintext only
// when permissive).
type testResolver struct {
	mu      sync.Mutex
	strict  bool
	inbound func(InboundConn) (Decision, error)
}

func (r *testResolver) Outbound(_ context.Context, src Pod, dst netip.AddrPort) (Upstream, error) {
	switch {
	case dst.Addr() == ipB && dst.Port() == portPass:
		return Upstream{Passthrough: true}, nil
	case dst.Addr() == ipB:
		return Upstream{
			NextHop: netip.AddrPortFrom(ipB, capture.DefaultHBONEPort), Identity: idB,
			Workload: WorkloadInfo{Name: "b", Namespace: "ns-b", Identity: idB}, Service: "b.ns-b.svc.cluster.local",
		}, nil
	}
	return Upstream{}, errors.New("no route")
}

func (r *testResolver) Inbound(_ context.Context, c InboundConn) (Decision, error) {
	r.mu.Lock()
	strict, hook := r.strict, r.inbound
	r.mu.Unlock()
	if hook != nil {
		return hook(c)
	}
	src := WorkloadInfo{}
	if c.Source.Addr() == ipA {
		src = WorkloadInfo{Name: "a", Namespace: "ns-a"}
	}
	if c.Plaintext && strict {
		return Decision{Policy: "STRICT", Source: src}, nil
	}
	return Decision{Allow: true, Source: src}, nil
}

func (r *testResolver) set(strict bool, hook func(InboundConn) (Decision, error)) {
	r.mu.Lock()
	r.strict, r.inbound = strict, hook
	r.mu.Unlock()
}

// fixture: pods A (10.253.0.1) and B (10.253.0.2) in their own network
// namespaces joined by a veth pair, both captured and served by one Proxy
// (as if on one node), echo apps in B.
type fixture struct {
	nsA, nsB string
	podA     Pod
	podB     Pod
	resolver *testResolver
	reg      *prometheus.Registry
	logs     *syncBuffer
	proxy    *Proxy
	echo     *echoServer
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	requireRoot(t)
	f := &fixture{nsA: newNetNS(t), nsB: newNetNS(t), resolver: &testResolver{}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	for _, ns := range []string{f.nsA, f.nsB} {
		inNS(t, ns, "ip", "link", "set", "lo", "up")
	}
	inNS(t, f.nsA, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", f.nsB)
	inNS(t, f.nsA, "ip", "addr", "add", ipA.String()+"/24", "dev", "eth0")
	inNS(t, f.nsB, "ip", "addr", "add", ipB.String()+"/24", "dev", "eth0")
	inNS(t, f.nsA, "ip", "link", "set", "eth0", "up")
	inNS(t, f.nsB, "ip", "link", "set", "eth0", "up")
	if err := capture.Apply(f.nsA, capture.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := capture.Apply(f.nsB, capture.Config{ExcludeInboundPorts: []uint16{portExcluded}}); err != nil {
		t.Fatal(err)
	}
	f.echo = startEcho(t, f.nsB, portEcho, portPass, portExcluded)

	ca := newTestCA(t)
	ca.issue(t, idA)
	ca.issue(t, idB)
	m, err := NewMetrics(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Resolver: f.resolver, Certificates: ca, Metrics: m,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		AccessLog:    slog.New(slog.NewJSONHandler(f.logs, nil)),
		DrainTimeout: 200 * time.Millisecond, ConnectTimeout: 3 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	baseline := runtime.NumGoroutine()
	f.proxy, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.proxy.Close()
		checkNoLeak(t, baseline)
	})
	f.podA = Pod{UID: "uid-a", Name: "a-0", Workload: "a", Namespace: "ns-a", Identity: idA, IPs: []netip.Addr{ipA}, NetNS: f.nsA}
	f.podB = Pod{UID: "uid-b", Name: "b-0", Workload: "b", Namespace: "ns-b", Identity: idB, IPs: []netip.Addr{ipB}, NetNS: f.nsB}
	for _, p := range []Pod{f.podA, f.podB} {
		if err := f.proxy.AddPod(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// checkNoLeak waits until the number of goroutines is back to baseline.
func checkNoLeak(t testing.TB, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %d goroutines, %d before the proxy started\n%s",
				runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dial connects from namespace ns like an application would (no mark).
func dial(t testing.TB, ns string, dst netip.AddrPort, opts *net.Dialer) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := capture.DialInNetNS(ctx, ns, opts, "tcp4", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// refused reports whether a connection from ns to dst is closed on the
// client without data: the dial itself may already see the reset when the
// proxy refuses fast.
func refused(t testing.TB, ns string, dst netip.AddrPort, payload string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := capture.DialInNetNS(ctx, ns, nil, "tcp4", dst.String())
	if err != nil {
		return true
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if payload != "" {
		_, _ = io.WriteString(c, payload)
	}
	_, err = c.Read(make([]byte, 8))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// echoServer echoes (with half-close) on several ports inside a namespace
// and reports the client address of every connection.
type echoServer struct {
	remotes chan netip.AddrPort
}

func startEcho(t testing.TB, ns string, ports ...uint16) *echoServer {
	t.Helper()
	e := &echoServer{remotes: make(chan netip.AddrPort, 64)}
	var wg sync.WaitGroup
	var lns []net.Listener
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	for _, port := range ports {
		ln, err := capture.ListenInNetNS(ns, "tcp", netip.AddrPortFrom(netip.IPv4Unspecified(), port).String())
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				select {
				case e.remotes <- addrPort(c.RemoteAddr()):
				default:
				}
				wg.Go(func() {
					defer func() {
						mu.Lock()
						delete(conns, c)
						mu.Unlock()
						c.Close()
					}()
					_, _ = io.Copy(c, c)
					_ = c.(*net.TCPConn).CloseWrite()
					_, _ = io.Copy(io.Discard, c)
				})
			}
		})
	}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return e
}

func (e *echoServer) next(t testing.TB) netip.AddrPort {
	t.Helper()
	select {
	case a := <-e.remotes:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("the app saw no connection within 5s")
		return netip.AddrPort{}
	}
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// counter sums the samples of metric whose labels include want.
func counter(t testing.TB, reg *prometheus.Registry, metric string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, want) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// eventually polls cond until it holds or 5s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer collects JSON access-log lines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log records whose fields include want.
func (b *syncBuffer) lines(want map[string]string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(b.buf.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		ok := true
		for k, v := range want {
			if s, _ := rec[k].(string); s != v {
				ok = false
			}
		}
		if ok {
			out = append(out, rec)
		}
	}
	return out
}
