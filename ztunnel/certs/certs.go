// Package certs holds ztunnel's workload certificates: one per identity of
// the pods enrolled on its node, asked for from the CA by impersonation
// (ztunnel's own token, the pod's identity in the request metadata), shared
// by every pod of that identity, renewed at half-life and dropped when the
// last such pod leaves.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
)

// ErrNotHeld is returned for an identity no enrolled pod has.
var ErrNotHeld = errors.New("no enrolled pod on this node has that identity")

// Manager holds one renewing certificate source per identity in use. The
// zero value is not usable; use New.
type Manager struct {
	fetcher meshcert.Fetcher
	log     *slog.Logger

	mu      sync.Mutex
	entries map[hbone.Identity]*entry
	roots   *x509.CertPool // of the newest certificate fetched
	wg      sync.WaitGroup
	closed  bool
}

type entry struct {
	src    *meshcert.Source
	cancel context.CancelFunc
	refs   int
	since  time.Time
}

// New returns a Manager that fetches with f (normally a *meshcert.Client
// configured with Impersonate).
func New(f meshcert.Fetcher, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{fetcher: f, log: log, entries: map[hbone.Identity]*entry{}}
}

// Acquire notes one more pod with identity id and starts fetching its
// certificate if it is the first. It does not wait for the certificate.
func (m *Manager) Acquire(id hbone.Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("certificate manager closed")
	}
	if e := m.entries[id]; e != nil {
		e.refs++
		return nil
	}
	src := &meshcert.Source{Fetcher: m.fetcher, Identity: id, Logger: m.log.With("identity", id.String())}
	if err := src.Validate(); err != nil {
		return fmt.Errorf("certificate for %s: %w", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.entries[id] = &entry{src: src, cancel: cancel, refs: 1, since: time.Now()}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = src.Run(ctx)
	}()
	return nil
}

// Release notes that a pod with identity id left; the certificate is
// dropped with the last one.
func (m *Manager) Release(id hbone.Identity) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return
	}
	if e.refs--; e.refs <= 0 {
		e.cancel()
		delete(m.entries, id)
	}
}

// Certificate returns id's current certificate, waiting for the first fetch
// until ctx ends. It has the shape internal/hbone's Dialer asks for.
func (m *Manager) Certificate(ctx context.Context, id hbone.Identity) (*tls.Certificate, error) {
	m.mu.Lock()
	e := m.entries[id]
	m.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("certificate for %s: %w", id, ErrNotHeld)
	}
	c, err := e.src.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", id, err)
	}
	m.mu.Lock()
	m.roots = c.Roots
	m.mu.Unlock()
	return e.src.Certificate(ctx, id)
}

// ServerTLS returns the TLS server configuration of identity id (its
// certificate, client certificates required and verified against the mesh
// roots), for the HBONE server of a pod with that identity.
func (m *Manager) ServerTLS(id hbone.Identity) (*tls.Config, error) {
	m.mu.Lock()
	e := m.entries[id]
	m.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("certificate for %s: %w", id, ErrNotHeld)
	}
	return e.src.ServerTLS(), nil
}

// Roots returns the mesh roots of the newest certificate fetched, or nil
// before any.
func (m *Manager) Roots() *x509.CertPool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.roots == nil {
		for _, e := range m.entries {
			if c := e.src.Current(); c != nil {
				return c.Roots
			}
		}
	}
	return m.roots
}

// Info describes one held certificate, for the admin endpoint.
type Info struct {
	Identity  string    `json:"identity"`
	Pods      int       `json:"pods"`
	State     string    `json:"state"` // "pending", "valid", "expired"
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	RenewAt   time.Time `json:"renewAt,omitzero"`
	Error     string    `json:"error,omitempty"`
}

// Dump lists the held certificates, sorted by identity.
func (m *Manager) Dump() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]Info, 0, len(m.entries))
	for id, e := range m.entries {
		in := Info{Identity: id.String(), Pods: e.refs, State: "pending"}
		if c := e.src.Current(); c != nil {
			in.NotBefore, in.NotAfter, in.RenewAt = c.NotBefore(), c.NotAfter(), c.RenewAt()
			in.State = "valid"
			if now.After(in.NotAfter) {
				in.State = "expired"
			}
		}
		if err := e.src.Err(); err != nil {
			in.Error = err.Error()
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Identity, b.Identity) })
	return out
}

// Close stops every renewal and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for id, e := range m.entries {
		e.cancel()
		delete(m.entries, id)
	}
	m.mu.Unlock()
	m.wg.Wait()
}
