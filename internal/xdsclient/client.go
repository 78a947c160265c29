package xdsclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// wildcardName is the explicit wildcard subscription of delta xDS.
const wildcardName = "*"

// Client is a delta ADS client. Register the types it should fetch with
// Watch and WatchNamed, then call Run. Every other method is safe for
// concurrent use, also while Run runs.
type Client struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	node    *core.Node
	rand    func() float64 // jitter source; nil is math/rand/v2

	running atomic.Bool
	wake    chan struct{} // subscriptions changed; capacity 1
	synced  chan struct{} // closed once every wildcard type has been ACKed

	mu      sync.Mutex
	started bool // Run was called: the set of types is fixed
	types   map[string]*watch
	status  Status // Types and Synced are filled in by Status()
	isSync  bool
}

// watch is one type: its handler, its subscription and what is held.
// handler and wildcard never change after registration; names and held
// are guarded by Client.mu, and held is written only by Run's goroutine.
type watch struct {
	typeURL  string
	handler  Handler
	wildcard bool
	names    map[string]bool   // wanted names of a named type
	held     map[string]string // name → version applied by the handler
	status   TypeStatus        // counters and last ACK/NACK
}

// New checks cfg and returns a Client. It does not connect: Run does.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: m,
		node:    cfg.Node.Proto(),
		wake:    make(chan struct{}, 1),
		synced:  make(chan struct{}),
		types:   map[string]*watch{},
		status:  Status{Address: cfg.Address, State: StateStopped},
	}, nil
}

// Watch subscribes to every resource of typeURL (a wildcard subscription,
// as ztunnel subscribes to istio.workload.Address and
// istio.security.Authorization) and hands its changes to h. It must be
// called before Run.
func (c *Client) Watch(typeURL string, h Handler) error {
	return c.register(typeURL, h, true, nil)
}

// WatchNamed subscribes to the named resources of typeURL only (on-demand
// mode): names now, and those added later with Subscribe. With no names
// the type is subscribed to nothing until Subscribe. It must be called
// before Run.
func (c *Client) WatchNamed(typeURL string, h Handler, names ...string) error {
	if err := checkNames(names); err != nil {
		return err
	}
	return c.register(typeURL, h, false, names)
}

func (c *Client) register(typeURL string, h Handler, wildcard bool, names []string) error {
	if typeURL == "" || h == nil {
		return errors.New("xdsclient: Watch needs a type URL and a handler")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("xdsclient: cannot watch %s: Run has started; watch every type before Run", typeURL)
	}
	if c.types[typeURL] != nil {
		return fmt.Errorf("xdsclient: %s is already watched", typeURL)
	}
	w := &watch{typeURL: typeURL, handler: h, wildcard: wildcard, names: map[string]bool{}, held: map[string]string{}}
	for _, n := range names {
		w.names[n] = true
	}
	c.types[typeURL] = w
	return nil
}

// Subscribe adds names to the subscription of a type watched with
// WatchNamed. The server sends them (or, for a name it does not have, a
// removal) on the current stream, or after the next connect.
func (c *Client) Subscribe(typeURL string, names ...string) error {
	return c.changeNames(typeURL, names, true)
}

// Unsubscribe removes names from the subscription of a type watched with
// WatchNamed. The handler is called (on Run's goroutine) with the held
// ones as removals, since the server will not send removals for
// resources no longer subscribed.
func (c *Client) Unsubscribe(typeURL string, names ...string) error {
	return c.changeNames(typeURL, names, false)
}

func (c *Client) changeNames(typeURL string, names []string, add bool) error {
	if err := checkNames(names); err != nil {
		return err
	}
	c.mu.Lock()
	w := c.types[typeURL]
	switch {
	case w == nil:
		c.mu.Unlock()
		return fmt.Errorf("xdsclient: %s is not watched; call WatchNamed first", typeURL)
	case w.wildcard:
		c.mu.Unlock()
		return fmt.Errorf("xdsclient: %s is a wildcard subscription, which already covers every name; use WatchNamed for named subscriptions", typeURL)
	}
	for _, n := range names {
		if add {
			w.names[n] = true
		} else {
			delete(w.names, n)
		}
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

func checkNames(names []string) error {
	for _, n := range names {
		if n == "" || n == wildcardName {
			return fmt.Errorf("xdsclient: invalid resource name %q", n)
		}
	}
	return nil
}

// Synced is closed once a response of every wildcard type has been ACKed
// (at once if there is no wildcard type). ztunnel's readiness waits for
// this. It stays closed across disconnects.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Versions returns the resources of typeURL the client holds: name →
// version, as it will send them in initial_resource_versions.
func (c *Client) Versions(typeURL string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.types[typeURL]; w != nil {
		return maps.Clone(w.held)
	}
	return nil
}

// Status returns the client's state, for an admin endpoint.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Connected = s.State == StateConnected
	s.Synced = c.isSync
	s.Types = make([]TypeStatus, 0, len(c.types))
	for _, w := range c.types {
		ts := w.status
		ts.TypeURL = w.typeURL
		ts.Wildcard = w.wildcard
		ts.Resources = len(w.held)
		if !w.wildcard {
			ts.Subscribed = slices.Sorted(maps.Keys(w.names))
		}
		s.Types = append(s.Types, ts)
	}
	slices.SortFunc(s.Types, func(a, b TypeStatus) int { return cmp.Compare(a.TypeURL, b.TypeURL) })
	return s
}

// Run connects to the control plane and keeps a stream open until ctx
// ends, then returns nil. Between attempts it waits as Config.Backoff
// says. A disconnect never clears what the handlers hold: the proxy keeps
// serving its last configuration, and the next stream asks only for what
// changed. Run returns an error at once if no type is watched or Run is
// already running; it may be called again after it returned.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	n := len(c.types)
	c.mu.Unlock()
	if n == 0 {
		return errors.New("xdsclient: no type is watched; call Watch or WatchNamed before Run")
	}
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xdsclient: Run is already running")
	}
	defer c.running.Store(false)
	c.mu.Lock()
	c.started = true
	c.checkSyncedLocked()
	c.mu.Unlock()
	defer c.setState(StateStopped, time.Time{})

	bo := newBackoff(c.cfg.Backoff, c.rand)
	for {
		res := c.session(ctx)
		if ctx.Err() != nil {
			c.metrics.connected.Set(0)
			return nil
		}
		if !res.connectedAt.IsZero() && time.Since(res.connectedAt) >= c.cfg.Backoff.ResetAfter {
			bo.reset()
		}
		d := bo.delay()
		c.ended(res, d)
		if !c.sleep(ctx, d) {
			return nil
		}
	}
}

// sleep waits d, applying subscription changes meanwhile. It reports
// false if ctx ended first.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-c.wake:
			c.reconcile(nil)
		}
	}
}

func (c *Client) setState(s State, next time.Time) {
	c.mu.Lock()
	c.status.State = s
	c.status.NextAttempt = next
	c.mu.Unlock()
}

// checkSyncedLocked closes synced once every wildcard type is synced.
func (c *Client) checkSyncedLocked() {
	if c.isSync {
		return
	}
	for _, w := range c.types {
		if w.wildcard && !w.status.Synced {
			return
		}
	}
	c.isSync = true
	close(c.synced)
}
