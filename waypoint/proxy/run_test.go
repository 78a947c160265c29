package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/istiod-lite/ca"
)

// runWaypoint runs Run in-process with args and returns its logs and a stop
// function that cancels it and returns its error (once; the test's cleanup
// calls it too).
func runWaypoint(t *testing.T, args ...string) (*logSink, func() error) {
	t.Helper()
	logs := &logSink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, io.Discard, logs) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("Run did not return 20s after its context ended")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("waypoint logs:\n%s", logs.buf.String())
		}
	})
	return logs, stop
}

func TestRunCarriesTunnels(t *testing.T) {
	checkNoLeaks(t)
	tc := startCA(t)
	echo := startEcho(t)
	tokenFile := filepath.Join(tc.dir, "istio-token")
	writeFile(t, tokenFile, "not-accepted-yet")

	logs, stop := runWaypoint(t, append(tc.waypointArgs(tokenFile),
		"--pod-name", "waypoint-7d9f-abcde", "--gateway-name", "waypoint",
		"--allow-loopback-destinations", "--drain-grace", "15s", "--log-level", "debug",
	)...)
	readyURL := "http://" + logs.addr(t, "status") + "/healthz/ready"
	metricsURL := "http://" + logs.addr(t, "metrics") + "/metrics"

	// Not ready while the CA refuses the token, and the reason says so.
	waitFor(t, "readiness naming the CA's refusal", func() bool {
		code, body := get(t, readyURL)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no certificate yet") &&
			strings.Contains(body, "Unauthenticated")
	})
	writeFile(t, tokenFile, waypointToken) // retried after about 1 s
	hboneAddr := logs.addr(t, "hbone")
	waitFor(t, "readiness 200", func() bool { code, _ := get(t, readyURL); return code == http.StatusOK })

	// A mesh client reaches the echo server through the waypoint.
	clientCert := tc.certificate(t, clientToken, clientID)
	d := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &clientCert.TLS, nil },
		Roots:       tc.authority.Roots(),
	}
	defer d.Close()
	target := hbone.Target{
		Address: hboneAddr, Authority: echo, Source: clientID, Destination: waypointID,
		ClientAddr: netip.MustParseAddrPort("10.1.2.3:45678"),
	}
	ctx := context.Background()
	st, err := d.DialContext(ctx, target)
	if err != nil {
		t.Fatalf("tunnel through the waypoint: %v", err)
	}
	const msg = "hello, waypoint\n"
	io.WriteString(st, msg)
	st.CloseWrite()
	got, err := io.ReadAll(st)
	st.Close()
	if err != nil || string(got) != msg {
		t.Fatalf("echo through the waypoint: %q, %v; want %q", got, err, msg)
	}

	// One access-log line for it, and the TCP metrics.
	logs.waitLog(t, "tunnel closed", map[string]any{
		"peer": clientID.String(), "dst": echo, "src": "10.1.2.3:45678", "status": 200.0,
		"received": float64(len(msg)), "sent": float64(len(msg)),
	})
	for _, want := range []string{
		`istio_tcp_connections_opened_total{reporter="waypoint"} 1`,
		`istio_tcp_connections_closed_total{reporter="waypoint"} 1`,
		fmt.Sprintf(`istio_tcp_received_bytes_total{reporter="waypoint"} %d`, len(msg)),
		fmt.Sprintf(`istio_tcp_sent_bytes_total{reporter="waypoint"} %d`, len(msg)),
		`waypoint_hbone_requests_total{response_code="200"} 1`,
	} {
		waitFor(t, want, func() bool { _, body := get(t, metricsURL); return strings.Contains(body, want) })
	}

	// A client whose certificate is from another CA is refused at the
	// handshake.
	other, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignCertificate(t, other, clientID)
	untrusted := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return foreign, nil },
		Roots:       tc.authority.Roots(),
	}
	defer untrusted.Close()
	if _, err := untrusted.DialContext(ctx, target); err == nil {
		t.Fatal("a client with another CA's certificate got a tunnel")
	} else if ce := (*hbone.ConnError)(nil); !errors.As(err, &ce) {
		t.Errorf("untrusted client: %v, want a connection (handshake) error", err)
	}

	// Drain: on cancel the waypoint turns unready and stops accepting
	// connections, an open tunnel keeps working, and Run returns when it
	// closes, well before the grace period.
	long, err := d.DialContext(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	waitFor(t, "readiness to say draining", func() bool {
		code, body := get(t, readyURL)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	io.WriteString(long, "still here\n")
	buf := make([]byte, len("still here\n"))
	if _, err := io.ReadFull(long, buf); err != nil || string(buf) != "still here\n" {
		t.Errorf("open tunnel during the drain: %q, %v", buf, err)
	}
	fresh := &hbone.Dialer{Certificate: d.Certificate, Roots: d.Roots}
	defer fresh.Close()
	if _, err := fresh.DialContext(ctx, target); err == nil {
		t.Error("a new connection was accepted during the drain")
	}
	start := time.Now()
	long.Close()
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %v after the last tunnel closed, want well before the 15s grace", d)
	}
	logs.waitLog(t, "stopped", map[string]any{"tunnelsCut": 0.0})
}

// TestRunCutsTunnelsAfterGrace: a tunnel still open when the grace period
// ends is cut, and Run returns.
func TestRunCutsTunnelsAfterGrace(t *testing.T) {
	checkNoLeaks(t)
	tc := startCA(t)
	echo := startEcho(t)
	tokenFile := filepath.Join(tc.dir, "istio-token")
	writeFile(t, tokenFile, waypointToken)
	logs, stop := runWaypoint(t, append(tc.waypointArgs(tokenFile),
		"--allow-loopback-destinations", "--drain-grace", "200ms",
	)...)
	hboneAddr := logs.addr(t, "hbone")
	clientCert := tc.certificate(t, clientToken, clientID)
	d := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &clientCert.TLS, nil },
		Roots:       tc.authority.Roots(),
	}
	defer d.Close()
	st, err := d.DialContext(context.Background(), hbone.Target{Address: hboneAddr, Authority: echo, Source: clientID, Destination: waypointID})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs.waitLog(t, "stopped", map[string]any{"tunnelsCut": 1.0})
	if _, err := io.ReadAll(st); err == nil {
		t.Error("the tunnel ended cleanly; want it cut")
	}
}

// TestRunRefusesLoopbackByDefault: without --allow-loopback-destinations a
// tunnel to the waypoint's own loopback is answered 400.
func TestRunRefusesLoopbackByDefault(t *testing.T) {
	tc := startCA(t)
	echo := startEcho(t)
	tokenFile := filepath.Join(tc.dir, "istio-token")
	writeFile(t, tokenFile, waypointToken)
	logs, _ := runWaypoint(t, tc.waypointArgs(tokenFile)...)
	hboneAddr := logs.addr(t, "hbone")
	clientCert := tc.certificate(t, clientToken, clientID)
	d := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &clientCert.TLS, nil },
		Roots:       tc.authority.Roots(),
	}
	defer d.Close()
	_, err := d.DialContext(context.Background(), hbone.Target{Address: hboneAddr, Authority: echo, Source: clientID, Destination: waypointID})
	var se *hbone.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Fatalf("tunnel to loopback: %v, want 400", err)
	}
	logs.waitLog(t, "tunnel closed", map[string]any{"status": 400.0, "dst": echo})
}

func TestCheckAuthority(t *testing.T) {
	for _, c := range []struct {
		authority     string
		allowLoopback bool
		ok            bool
	}{
		{"10.96.0.10:80", false, true},
		{"[fd00::1]:8080", false, true},
		{"127.0.0.1:15000", false, false},
		{"127.0.0.1:15000", true, true},
		{"[::1]:80", false, false},
		{"[::ffff:127.0.0.1]:80", false, false},
		{"0.0.0.0:80", true, false},
		{"224.0.0.1:80", true, false},
		{"255.255.255.255:80", true, false},
		{"10.0.0.1:0", true, false},
	} {
		err := checkAuthority(c.allowLoopback)(c.authority)
		if (err == nil) != c.ok {
			t.Errorf("checkAuthority(allowLoopback=%v)(%q) = %v, want ok=%v", c.allowLoopback, c.authority, err, c.ok)
		}
	}
}
