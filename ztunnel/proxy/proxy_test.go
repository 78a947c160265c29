package proxy

import (
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/google/go-cmp/cmp"
)

const (
	opened   = "istio_tcp_connections_opened_total"
	closed   = "istio_tcp_connections_closed_total"
	received = "istio_tcp_received_bytes_total"
	sent     = "istio_tcp_sent_bytes_total"
)

// An app in A dialling B:8080 in plain TCP reaches B's app through A's
// outbound listener, an HBONE tunnel and B's HBONE listener; B's app sees
// A's address; both sides list, count and log the connection with both
// principals.
func TestOutboundToInboundHBONE(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), nil)
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if got := f.echo.next(t); got.Addr() != ipA {
		t.Errorf("the app saw the connection from %v, want A's address %v", got, ipA)
	}

	// While the connection is open: listed on both sides, bytes counted.
	// The counters move right after each read or write, so poll.
	eventually(t, "5 bytes each way on both sides", func() bool {
		conns := f.proxy.Connections()
		return len(conns) == 2 && conns[0].BytesReceived == 5 && conns[1].BytesReceived == 5 &&
			conns[0].BytesSent == 5 && conns[1].BytesSent == 5
	})
	conns := f.proxy.Connections()
	var dirs []string
	for _, ci := range conns {
		dirs = append(dirs, ci.Direction)
		if ci.SrcIdentity != idA.String() || ci.DstIdentity != idB.String() || ci.Security != SecurityMutualTLS {
			t.Errorf("%s connection: identities %q → %q, security %q; want %s → %s over mutual_tls",
				ci.Direction, ci.SrcIdentity, ci.DstIdentity, ci.Security, idA, idB)
		}
		if ci.Dst != netip.AddrPortFrom(ipB, portEcho) || ci.Src.Addr() != ipA {
			t.Errorf("%s connection: %v → %v, want A → %v", ci.Direction, ci.Src, ci.Dst, netip.AddrPortFrom(ipB, portEcho))
		}
	}
	slices.Sort(dirs)
	if diff := cmp.Diff([]string{"inbound", "outbound"}, dirs); diff != "" {
		t.Errorf("open connections (-want +got):\n%s", diff)
	}
	for _, rep := range []string{ReporterSource, ReporterDestination} {
		l := map[string]string{"reporter": rep}
		if got := counter(t, f.reg, received, l); got != 5 {
			t.Errorf("%s{reporter=%s} = %v while open, want 5", received, rep, got)
		}
		if got := counter(t, f.reg, sent, l); got != 5 {
			t.Errorf("%s{reporter=%s} = %v while open, want 5", sent, rep, got)
		}
	}

	// Half-close passes through both proxies.
	_ = c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close read %q, %v; want EOF", rest, err)
	}
	c.Close()

	want := map[string]string{
		"source_workload": "a", "source_workload_namespace": "ns-a", "source_principal": idA.String(),
		"destination_workload": "b", "destination_workload_namespace": "ns-b", "destination_principal": idB.String(),
		"request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "mutual_tls",
	}
	for _, rep := range []string{ReporterSource, ReporterDestination} {
		l := map[string]string{"reporter": rep}
		for k, v := range want {
			l[k] = v
		}
		eventually(t, "closed counter of reporter "+rep, func() bool { return counter(t, f.reg, closed, l) == 1 })
		if got := counter(t, f.reg, opened, l); got != 1 {
			t.Errorf("%s%v = %v, want 1", opened, l, got)
		}
	}
	if got := counter(t, f.reg, closed, map[string]string{"reporter": "source", "destination_service": "b.ns-b.svc.cluster.local"}); got != 1 {
		t.Errorf("destination_service missing on the source side")
	}
	if n := len(f.proxy.Connections()); n != 0 {
		t.Errorf("%d connections still listed after close", n)
	}
	for _, dir := range []string{"outbound", "inbound"} {
		lines := f.logs.lines(map[string]string{"msg": "connection complete", "direction": dir})
		if len(lines) != 1 {
			t.Fatalf("%d access-log lines for %s, want 1: %s", len(lines), dir, f.logs.buf.String())
		}
		l := lines[0]
		if l["src.identity"] != idA.String() || l["dst.identity"] != idB.String() || l["bytes_sent"] != 5.0 || l["bytes_recv"] != 5.0 {
			t.Errorf("%s access log = %v", dir, l)
		}
	}
}

// Every TCP metric carries exactly Istio's labels.
func TestMetricLabels(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), nil)
	if _, err := roundTrip(c, "x"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	eventually(t, "closed counters", func() bool { return counter(t, f.reg, closed, nil) == 2 })
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"connection_security_policy", "destination_principal", "destination_service",
		"destination_workload", "destination_workload_namespace", "reporter", "request_protocol",
		"response_flags", "source_principal", "source_workload", "source_workload_namespace"}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		for _, m := range mf.GetMetric() {
			var got []string
			for _, lp := range m.GetLabel() {
				got = append(got, lp.GetName())
			}
			slices.Sort(got)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s labels (-want +got):\n%s", mf.GetName(), diff)
			}
		}
	}
	if diff := cmp.Diff([]string{closed, opened, received, sent}, names); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// A policy deny at the destination closes the client's connection; the
// app never sees it; DENY on both sides.
func TestInboundDenied(t *testing.T) {
	f := newFixture(t, nil)
	askedCh := make(chan InboundConn, 1)
	f.resolver.set(false, func(c InboundConn) (Decision, error) {
		select {
		case askedCh <- c:
		default:
		}
		return Decision{Policy: "ns-b/deny-a"}, nil
	})
	if !refused(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), "hello") {
		t.Fatal("a denied connection was not closed")
	}
	asked := <-askedCh
	if asked.SourceIdentity != idA || asked.Source.Addr() != ipA || asked.Destination != netip.AddrPortFrom(ipB, portEcho) || asked.Plaintext {
		t.Errorf("resolver asked %+v", asked)
	}
	eventually(t, "DENY at the destination", func() bool {
		return counter(t, f.reg, closed, map[string]string{"reporter": "destination", "response_flags": "DENY", "source_principal": idA.String()}) == 1
	})
	eventually(t, "DENY at the source", func() bool {
		return counter(t, f.reg, closed, map[string]string{"reporter": "source", "response_flags": "DENY"}) == 1
	})
	select {
	case a := <-f.echo.remotes:
		t.Errorf("the app saw a connection from %v", a)
	default:
	}
	lines := f.logs.lines(map[string]string{"direction": "inbound", "policy": "ns-b/deny-a"})
	if len(lines) != 1 || !strings.Contains(lines[0]["error"].(string), "denied") {
		t.Errorf("inbound access log: %v", lines)
	}
}

// A tunnel to a port where nothing listens: B answers 503 after its dial
// failed, the client's connection is closed, CONNECT on both sides.
func TestDeadApp(t *testing.T) {
	f := newFixture(t, nil)
	if !refused(t, f.nsA, netip.AddrPortFrom(ipB, portDead), "") {
		t.Fatal("a connection to a dead app was not closed")
	}
	for _, rep := range []string{"source", "destination"} {
		eventually(t, "CONNECT at "+rep, func() bool {
			return counter(t, f.reg, closed, map[string]string{"reporter": rep, "response_flags": "CONNECT"}) == 1
		})
	}
	lines := f.logs.lines(map[string]string{"direction": "outbound"})
	if len(lines) != 1 || !strings.Contains(lines[0]["error"].(string), "503") {
		t.Errorf("outbound access log: %v", lines)
	}
}

// Plaintext from A (capture removed there) arrives at B's 15006: let in
// when B is permissive, refused when strict.
func TestInboundPlaintext(t *testing.T) {
	f := newFixture(t, nil)
	if err := capture.Remove(f.nsA); err != nil {
		t.Fatal(err)
	}
	t.Run("permissive", func(t *testing.T) {
		c := dial(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), nil)
		if got, err := roundTrip(c, "plain"); err != nil || got != "plain" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		if got := f.echo.next(t); got.Addr() != ipA {
			t.Errorf("the app saw %v, want A's address", got)
		}
		c.Close()
		eventually(t, "plaintext connection closed", func() bool {
			return counter(t, f.reg, closed, map[string]string{"reporter": "destination", "response_flags": "-",
				"connection_security_policy": "unknown", "source_principal": "unknown", "source_workload": "a"}) == 1
		})
		if got := counter(t, f.reg, closed, map[string]string{"reporter": "source"}); got != 0 {
			t.Errorf("a source-side connection was counted: capture on A is off")
		}
	})
	t.Run("strict", func(t *testing.T) {
		f.resolver.set(true, nil)
		if !refused(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), "plain") {
			t.Fatal("plaintext to a strict pod was not closed")
		}
		eventually(t, "plaintext denied", func() bool {
			return counter(t, f.reg, closed, map[string]string{"reporter": "destination", "response_flags": "DENY",
				"connection_security_policy": "unknown"}) == 1
		})
	})
}

// A passthrough destination is reached in plain TCP from A's address (and
// lands on B's plaintext listener, since B is captured).
func TestPassthrough(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.nsA, netip.AddrPortFrom(ipB, portPass), nil)
	if got, err := roundTrip(c, "pass"); err != nil || got != "pass" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if got := f.echo.next(t); got.Addr() != ipA {
		t.Errorf("the app saw %v, want A's address", got)
	}
	c.Close()
	for _, rep := range []string{"source", "destination"} {
		eventually(t, "passthrough closed at "+rep, func() bool {
			return counter(t, f.reg, closed, map[string]string{"reporter": rep, "connection_security_policy": "unknown", "response_flags": "-"}) == 1
		})
	}
}

// RemovePod closes B's listeners at once; an open connection goes on for
// the drain timeout and is then closed.
func TestRemovePod(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.DrainTimeout = 500 * time.Millisecond })
	c := dial(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), nil)
	if _, err := roundTrip(c, "before"); err != nil {
		t.Fatal(err)
	}
	if !f.proxy.RemovePod(f.podB.UID) {
		t.Fatal("RemovePod: pod unknown")
	}
	if got, err := roundTrip(c, "draining"); err != nil || got != "draining" {
		t.Fatalf("open connection during the drain: %q, %v", got, err)
	}
	// B's HBONE listener is gone: a marked (uncaptured) dial is refused.
	marked := &net.Dialer{Control: capture.SocketOptions{Mark: capture.DefaultMark}.Control, Timeout: 2 * time.Second}
	if hc, err := capture.DialInNetNS(t.Context(), f.nsA, marked, "tcp4", netip.AddrPortFrom(ipB, 15008).String()); err == nil {
		hc.Close()
		t.Error("B's HBONE listener still accepts after RemovePod")
	}
	// After the drain the open connection is closed.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && strings.Contains(err.Error(), "timeout") {
		t.Fatalf("connection still open after the drain: %v", err)
	}
	if f.proxy.RemovePod(f.podB.UID) {
		t.Error("second RemovePod found the pod")
	}
}

// Adding a known pod again keeps serving it, without a gap.
func TestAddPodAgain(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), nil)
	if _, err := roundTrip(c, "one"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Pod{f.podB, f.podA} {
		if err := f.proxy.AddPod(t.Context(), p); err != nil {
			t.Fatalf("AddPod again: %v", err)
		}
	}
	if got, err := roundTrip(c, "two"); err != nil || got != "two" {
		t.Fatalf("open connection after AddPod again: %q, %v", got, err)
	}
	c2 := dial(t, f.nsA, netip.AddrPortFrom(ipB, portEcho), nil)
	if got, err := roundTrip(c2, "new"); err != nil || got != "new" {
		t.Fatalf("new connection after AddPod again: %q, %v", got, err)
	}
	if n := len(f.proxy.Pods()); n != 2 {
		t.Errorf("%d pods, want 2", n)
	}
}
