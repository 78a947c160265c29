package meshcert

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambientlite/mesh/internal/hbone"
)

// countingFetcher counts the fetches that returned.
type countingFetcher struct {
	Fetcher
	n atomic.Int64
}

func (f *countingFetcher) Fetch(ctx context.Context, id hbone.Identity) (*Certificate, error) {
	defer f.n.Add(1)
	return f.Fetcher.Fetch(ctx, id)
}

// startSource runs a Source for the waypoint identity against a CA on a fake
// clock and waits for its first certificate.
func startSource(t *testing.T) (*Source, *fakeClock, *countingFetcher) {
	t.Helper()
	clk := newFakeClock(time.Now())
	tc := startCA(t, clk.Now)
	f := &countingFetcher{Fetcher: tc.client(t, waypointToken, func(c *Config) { c.Clock = clk })}
	src := &Source{Fetcher: f, Identity: waypointID, Clock: clk, Logger: testLogger(t)}
	runSource(t, src)
	if _, err := src.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	return src, clk, f
}

// runSource runs src.Run until the test ends.
func runSource(t *testing.T, src *Source) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestSourceRenewsAtHalfLife(t *testing.T) {
	src, clk, f := startSource(t)
	first := src.Current()

	at := clk.nextTimer(t)
	if !at.Equal(first.RenewAt()) {
		t.Fatalf("renewal scheduled at %v, want the half-life %v", at, first.RenewAt())
	}
	clk.set(at.Add(-time.Second))
	if got := f.n.Load(); got != 1 || src.Current() != first {
		t.Fatalf("before the half-life: %d fetches, certificate changed %v; want 1 and the first", got, src.Current() != first)
	}

	clk.set(at)
	waitFor(t, "the renewed certificate", func() bool { return src.Current() != first })
	second := src.Current()
	if second.TLS.Leaf.SerialNumber.Cmp(first.TLS.Leaf.SerialNumber) == 0 {
		t.Error("renewed certificate has the first one's serial")
	}
	if !second.NotAfter().After(first.NotAfter()) {
		t.Errorf("renewed certificate expires %v, not after the first's %v", second.NotAfter(), first.NotAfter())
	}
	if second.Identity != waypointID {
		t.Errorf("renewed identity %v", second.Identity)
	}
	got, err := src.Certificate(context.Background(), waypointID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Leaf != second.TLS.Leaf {
		t.Error("Certificate does not return the renewed certificate")
	}
	if at := clk.nextTimer(t); !at.Equal(second.RenewAt()) {
		t.Errorf("next renewal at %v, want %v", at, second.RenewAt())
	}
	if err := src.Err(); err != nil {
		t.Errorf("Err() = %v after a success", err)
	}
}

func TestSourceKeepsCertWhileRenewalFails(t *testing.T) {
	src, clk, f := startSource(t)
	first := src.Current()
	renewAt := clk.nextTimer(t)

	writeFile(t, tokenFile(f.Fetcher.(*Client)), "revoked")
	clk.set(renewAt)
	waitFor(t, "the failed renewal", func() bool { return src.Err() != nil })
	if code := status.Code(src.Err()); code != codes.Unauthenticated {
		t.Errorf("Err() = %v, want Unauthenticated", src.Err())
	}
	if src.Current() != first {
		t.Fatal("the held certificate changed after a failed renewal")
	}
	got, err := src.Certificate(context.Background(), waypointID)
	if err != nil || got.Leaf != first.TLS.Leaf {
		t.Fatalf("Certificate() = %v, %v; want the first certificate", got, err)
	}
	// The retry comes after RetryMin (1 s) ± 20 %, not at once and not at
	// the next half-life.
	retry := clk.nextTimer(t)
	if d := retry.Sub(renewAt); d < 800*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("retry %v after the failure, want 1s ± 20%%", d)
	}

	// Past expiry, the old certificate is no longer handed out.
	clk.set(first.NotAfter())
	if _, err := src.Certificate(context.Background(), waypointID); !errors.Is(err, ErrNoCertificate) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after expiry Certificate() error = %v, want ErrNoCertificate, expired", err)
	}

	// Once the CA accepts us again, a retry succeeds.
	writeFile(t, tokenFile(f.Fetcher.(*Client)), waypointToken)
	n := f.n.Load()
	waitFor(t, "a successful retry", func() bool {
		if p := clk.pending(); len(p) > 0 {
			clk.set(p[0])
		}
		return src.Current() != first
	})
	if f.n.Load() <= n {
		t.Error("no fetch after the token was restored")
	}
	if _, err := src.Certificate(context.Background(), waypointID); err != nil {
		t.Errorf("after the renewal: %v", err)
	}
}

func TestSourceRetriesFirstFetch(t *testing.T) {
	clk := newFakeClock(time.Now())
	tc := startCA(t, clk.Now)
	cl := tc.client(t, "not-yet", func(c *Config) { c.Clock = clk })
	src := &Source{Fetcher: cl, Identity: waypointID, Clock: clk, Logger: testLogger(t)}

	if _, err := src.Certificate(context.Background(), waypointID); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("before Run: %v, want ErrNoCertificate", err)
	}
	runSource(t, src)
	waitFor(t, "the first failure", func() bool { return src.Err() != nil })
	if _, err := src.Certificate(context.Background(), waypointID); !errors.Is(err, ErrNoCertificate) || status.Code(err) != codes.Unauthenticated {
		t.Errorf("before the first certificate: %v, want ErrNoCertificate wrapping Unauthenticated", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := src.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait without a certificate: %v", err)
	}

	// Backoff doubles: 1s, 2s, 4s (± 20 %) between failures.
	last := clk.Now()
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		at := clk.nextTimer(t)
		if d := at.Sub(last); d < want*8/10 || d > want*12/10 {
			t.Errorf("retry %d after %v, want %v ± 20%%", i+1, d, want)
		}
		if i == 2 {
			writeFile(t, tokenFile(cl), waypointToken)
		}
		last = at
		clk.set(at)
		if i < 2 {
			waitFor(t, "the next retry", func() bool { p := clk.pending(); return len(p) > 0 && p[0].After(at) })
		}
	}
	cert, err := src.Wait(context.Background())
	if err != nil || cert == nil {
		t.Fatalf("Wait: %v, %v", cert, err)
	}
}

func TestSourceRefusesMisuse(t *testing.T) {
	tc := startCA(t, nil)
	src := &Source{Fetcher: tc.client(t, waypointToken, nil), Identity: waypointID}
	if err := (&Source{Identity: waypointID}).Run(context.Background()); err == nil {
		t.Error("Run without a Fetcher succeeded")
	}
	if err := (&Source{Fetcher: src.Fetcher}).Run(context.Background()); err == nil {
		t.Error("Run without an Identity succeeded")
	}
	runSource(t, src)
	if _, err := src.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := src.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
	if _, err := src.Certificate(context.Background(), cartID); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("Certificate for another identity: %v, want ErrNoCertificate", err)
	}
}

// TestSourceServesHBONE: a Source's ServerTLS and Certificate are what an
// hbone Server and Dialer take, and they work together across a real tunnel.
func TestSourceServesHBONE(t *testing.T) {
	tc := startCA(t, nil)
	server := &Source{Fetcher: tc.client(t, waypointToken, nil), Identity: waypointID}
	runSource(t, server)
	clientCA := tc.client(t, ztunnelToken, func(c *Config) { c.Impersonate = true })
	client := &Source{Fetcher: clientCA, Identity: cartID}
	runSource(t, client)
	ctx := context.Background()
	if _, err := server.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	runHBONEEcho(t, server, client)
}
