package meshcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Defaults of Source.
const (
	DefaultRetryMin = time.Second
	DefaultRetryMax = 30 * time.Second
)

// Fetcher gets a new certificate for an identity. *Client is one.
type Fetcher interface {
	Fetch(ctx context.Context, id hbone.Identity) (*Certificate, error)
}

// ErrNoCertificate is returned (wrapped) by a Source that holds no usable
// certificate: none fetched yet, or the last one expired.
var ErrNoCertificate = errors.New("no certificate")

// Source holds the certificate of one identity and keeps it fresh. Run
// fetches it (retrying with backoff until it succeeds), then renews it at
// half-life; a renewal that fails is retried with backoff while the old
// certificate is still served, until it expires. Fetcher and Identity are
// required; every other field has a documented default. Fields must not
// change once Run has started.
type Source struct {
	// Fetcher gets certificates, normally a *Client. Required.
	Fetcher Fetcher
	// Identity is the identity whose certificate the Source holds. Required.
	Identity hbone.Identity
	// Clock schedules renewals and retries and judges expiry. Default: the
	// system clock.
	Clock Clock
	// Logger gets one line per certificate issued (Info) and per failed
	// attempt (Warn; Error once the held certificate has expired).
	// Default: discard.
	Logger *slog.Logger
	// RetryMin and RetryMax bound the backoff between failed attempts: it
	// starts at RetryMin, doubles up to RetryMax, and is jittered by ±20 %.
	// Defaults DefaultRetryMin (1 s) and DefaultRetryMax (30 s).
	RetryMin, RetryMax time.Duration

	initOnce sync.Once
	first    chan struct{} // closed at the first certificate
	running  atomic.Bool

	mu      sync.Mutex
	cur     *Certificate
	lastErr error // of the last attempt; nil after a success
}

func (s *Source) init() { s.initOnce.Do(func() { s.first = make(chan struct{}) }) }

// Validate reports a configuration Run would refuse.
func (s *Source) Validate() error {
	switch {
	case s.Fetcher == nil:
		return errors.New("meshcert: Source.Fetcher is required")
	case s.Identity.IsZero():
		return errors.New("meshcert: Source.Identity is required")
	case s.RetryMin < 0 || s.RetryMax < 0 || s.RetryMax > 0 && s.RetryMax < s.RetryMin:
		return fmt.Errorf("meshcert: retry backoff %v..%v: want 0 <= RetryMin <= RetryMax", s.RetryMin, s.RetryMax)
	}
	return nil
}

// Run fetches the certificate and renews it until ctx is done, then returns
// nil. It returns an error at once only if the Source is misconfigured or
// already running.
func (s *Source) Run(ctx context.Context) error {
	s.init()
	if err := s.Validate(); err != nil {
		return err
	}
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("meshcert: Source.Run called twice")
	}
	clock := clockOrSystem(s.Clock)
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retryMin, retryMax := s.RetryMin, s.RetryMax
	if retryMin == 0 {
		retryMin = DefaultRetryMin
	}
	if retryMax == 0 {
		retryMax = max(DefaultRetryMax, retryMin)
	}

	var (
		wait     time.Duration // before the next attempt; the first is at once
		backoff  time.Duration
		failures int
	)
	for {
		if wait > 0 {
			select {
			case <-clock.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
		cert, err := s.Fetcher.Fetch(ctx, s.Identity)
		if ctx.Err() != nil {
			return nil
		}
		now := clock.Now()
		if err != nil {
			failures++
			backoff = min(max(2*backoff, retryMin), retryMax)
			wait = jitter(backoff)
			s.mu.Lock()
			s.lastErr = err
			held := s.cur
			s.mu.Unlock()
			attrs := []any{"identity", s.Identity.String(), "attempt", failures, "retryIn", wait.Round(time.Millisecond).String(), "err", err}
			switch {
			case held == nil:
				log.Warn("cannot get certificate", attrs...)
			case now.Before(held.NotAfter()):
				log.Warn("cannot renew certificate; still serving the current one", append(attrs, "notAfter", held.NotAfter())...)
			default:
				log.Error("cannot renew certificate; the current one has expired", append(attrs, "notAfter", held.NotAfter())...)
			}
			continue
		}
		s.mu.Lock()
		renewal := s.cur != nil
		s.cur, s.lastErr = cert, nil
		s.mu.Unlock()
		if !renewal {
			close(s.first)
		}
		failures, backoff = 0, 0
		wait = cert.RenewAt().Sub(now)
		if wait < retryMin {
			// A certificate already at half-life (short TTL, skewed
			// clocks) must not make us spin.
			wait = retryMin
		}
		msg := "certificate issued"
		if renewal {
			msg = "certificate renewed"
		}
		log.Info(msg, "identity", s.Identity.String(), "serial", cert.TLS.Leaf.SerialNumber.Text(16),
			"notAfter", cert.NotAfter(), "renewAt", cert.RenewAt())
	}
}

// jitter spreads d over ±20 % so that many clients do not retry in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Wait blocks until the Source holds its first certificate and returns it,
// or returns ctx's error.
func (s *Source) Wait(ctx context.Context) (*Certificate, error) {
	s.init()
	select {
	case <-s.first:
		return s.Current(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Current returns the certificate held (possibly expired, if renewal keeps
// failing), or nil before the first fetch succeeded.
func (s *Source) Current() *Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Err returns the error of the last attempt, or nil if it succeeded (or none
// was made yet).
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// usable returns the held certificate if it is valid now, or an error
// wrapping ErrNoCertificate that says why not.
func (s *Source) usable() (*Certificate, error) {
	s.mu.Lock()
	cur, lastErr := s.cur, s.lastErr
	s.mu.Unlock()
	switch {
	case cur == nil && lastErr != nil:
		return nil, fmt.Errorf("meshcert: %w for %s yet: %w", ErrNoCertificate, s.Identity, lastErr)
	case cur == nil:
		return nil, fmt.Errorf("meshcert: %w for %s yet", ErrNoCertificate, s.Identity)
	case !clockOrSystem(s.Clock).Now().Before(cur.NotAfter()):
		err := fmt.Errorf("meshcert: %w: the certificate for %s expired at %s", ErrNoCertificate, s.Identity,
			cur.NotAfter().UTC().Format(time.RFC3339))
		if lastErr != nil {
			err = fmt.Errorf("%w; renewal failed: %w", err, lastErr)
		}
		return nil, err
	}
	return cur, nil
}

// Certificate returns the current certificate for id, in the shape of
// hbone.Dialer.Certificate. It fails for another identity and when the
// Source holds no valid certificate.
func (s *Source) Certificate(_ context.Context, id hbone.Identity) (*tls.Certificate, error) {
	if id != s.Identity {
		return nil, fmt.Errorf("meshcert: %w for %s: this source holds %s", ErrNoCertificate, id, s.Identity)
	}
	cur, err := s.usable()
	if err != nil {
		return nil, err
	}
	tc := cur.TLS
	return &tc, nil
}

// Roots returns the mesh roots the current certificate was verified
// against, or nil before the first certificate. For hbone.Dialer.Roots,
// which is fixed when the dialer is made; ServerTLS follows changes.
func (s *Source) Roots() *x509.CertPool {
	if cur := s.Current(); cur != nil {
		return cur.Roots
	}
	return nil
}

// ServerTLS returns a server TLS configuration for hbone.Server.TLS: every
// handshake gets the current certificate and requires a client certificate
// verified against the current roots (hbone adds TLS 1.3, ALPN h2 and the
// trust-domain check). Handshakes fail while the Source holds no valid
// certificate.
func (s *Source) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cur, err := s.usable()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cur.TLS},
				ClientCAs:    cur.Roots,
				ClientAuth:   tls.RequireAndVerifyClientCert,
			}, nil
		},
	}
}
