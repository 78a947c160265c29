package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// wildcardName is the explicit wildcard subscription.
const wildcardName = "*"

// stream is one delta ADS stream. Its run goroutine owns every field
// except those under mu, which Streams reads.
type stream struct {
	srv   *Server
	id    uint64
	proxy Proxy
	gs    discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	log   *slog.Logger

	watches  map[string]*watch
	gen      uint64                   // store generation of snap
	snap     map[string]*typeSnapshot // what pushes are computed from
	nonceSeq uint64

	// Debounce state: when the first and the last change of the burst
	// not yet pushed were seen.
	burstStart, burstLast time.Time

	mu          sync.Mutex
	nodeID      string
	connectedAt time.Time
	statuses    map[string]TypeStatus
}

// watch is a stream's subscription to one type and what the client has.
type watch struct {
	typeURL  string
	wildcard bool
	names    map[string]bool // explicit subscriptions
	// sent is what the client has or has refused: name → version of the
	// last response carrying it ("" = told it does not exist). Pushes send
	// only what differs from it, so a NACKed version is not sent again
	// until the content changes.
	sent map[string]string
	// acked is what the client has accepted (name → version).
	acked map[string]string

	inFlight    *inFlight
	dirty       bool      // the snapshot may differ from sent
	mustRespond bool      // answer even with nothing to send (initial request)
	changedAt   time.Time // first store change not yet pushed, for latency
}

type inFlight struct {
	nonce   string
	upserts map[string]string
	removed []string
}

func newStream(srv *Server, id uint64, proxy Proxy, gs discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) *stream {
	return &stream{
		srv:         srv,
		id:          id,
		proxy:       proxy,
		gs:          gs,
		log:         srv.log.With("stream", id, "identity", proxy.Identity),
		watches:     map[string]*watch{},
		connectedAt: time.Now(),
		statuses:    map[string]TypeStatus{},
	}
}

func (st *stream) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := st.gs.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	var changed <-chan struct{}
	st.gen, changed, st.snap = st.srv.cfg.Store.watch()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var fire <-chan time.Time

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			if err := st.handle(req); err != nil {
				return err
			}
		case <-changed:
			changed = st.srv.cfg.Store.changes()
			now := time.Now()
			if st.burstStart.IsZero() {
				st.burstStart = now
			}
			st.burstLast = now
			timer.Reset(st.debounceDelay(now))
			fire = timer.C
		case <-fire:
			fire = nil
			if wait := st.debounceDelay(time.Now()); wait > 0 { // a change came after the reset
				timer.Reset(wait)
				fire = timer.C
				continue
			}
			start := st.burstStart
			st.burstStart, st.burstLast = time.Time{}, time.Time{}
			st.gen, _, st.snap = st.srv.cfg.Store.watch()
			for _, w := range st.watches {
				w.dirty = true
				if w.changedAt.IsZero() {
					w.changedAt = start
				}
			}
			if err := st.flushAll(); err != nil {
				return err
			}
		}
	}
}

// debounceDelay is how long to wait from now before pushing the current
// burst: Debounce after its last change, but never past DebounceMax after
// its first.
func (st *stream) debounceDelay(now time.Time) time.Duration {
	cfg := &st.srv.cfg
	due := st.burstLast.Add(cfg.Debounce)
	if limit := st.burstStart.Add(cfg.DebounceMax); limit.Before(due) {
		due = limit
	}
	return due.Sub(now)
}

func (st *stream) handle(req *discovery.DeltaDiscoveryRequest) error {
	if req.GetTypeUrl() == "" {
		return status.Error(codes.InvalidArgument, "xds: request without type_url")
	}
	if id := req.GetNode().GetId(); id != "" {
		st.mu.Lock()
		if st.nodeID == "" {
			st.nodeID = id
			st.log = st.log.With("node_id", id)
		}
		st.mu.Unlock()
	}
	w := st.watches[req.TypeUrl]
	if w == nil {
		w = newWatch(req)
		st.watches[req.TypeUrl] = w
		st.log.Debug("xds subscribe", "type", shortType(req.TypeUrl), "wildcard", w.wildcard,
			"names", len(w.names), "initial_versions", len(req.InitialResourceVersions))
		st.refresh()
		defer st.publish(w)
		return st.flush(w)
	}
	defer st.publish(w)
	if nonce := req.GetResponseNonce(); nonce != "" {
		if w.inFlight == nil || w.inFlight.nonce != nonce {
			// A nonce we no longer wait for: Istio treats it as expired and
			// ignores the request.
			st.log.Debug("xds stale nonce", "type", shortType(w.typeURL), "nonce", nonce)
			return nil
		}
		if d := req.GetErrorDetail(); d != nil {
			st.nack(w, d.GetMessage())
		} else {
			st.ack(w)
		}
		w.inFlight = nil
	}
	if w.resubscribe(req) {
		st.refresh()
		w.dirty = true
	}
	return st.flush(w)
}

// refresh moves the stream's snapshot to the store's current state.
func (st *stream) refresh() {
	st.gen, _, st.snap = st.srv.cfg.Store.watch()
}

func (st *stream) ack(w *watch) {
	for n, v := range w.inFlight.upserts {
		w.acked[n] = v
	}
	for _, n := range w.inFlight.removed {
		delete(w.acked, n)
	}
	st.mu.Lock()
	s := st.statuses[w.typeURL]
	s.LastAck = time.Now()
	s.LastNack = ""
	st.statuses[w.typeURL] = s
	st.mu.Unlock()
}

// nack records a rejection. The client keeps its last acked versions, so
// acked is unchanged; sent keeps the rejected versions so they are not
// sent again until the content changes.
func (st *stream) nack(w *watch, msg string) {
	st.log.Warn("xds NACK", "type", shortType(w.typeURL), "nonce", w.inFlight.nonce, "error", msg)
	st.srv.metrics.nacks.WithLabelValues(shortType(w.typeURL)).Inc()
	st.mu.Lock()
	s := st.statuses[w.typeURL]
	s.LastNack = msg
	s.LastNackAt = time.Now()
	s.NACKs++
	st.statuses[w.typeURL] = s
	st.mu.Unlock()
}

func (st *stream) flushAll() error {
	for _, t := range slices.Sorted(maps.Keys(st.watches)) {
		w := st.watches[t]
		err := st.flush(w)
		st.publish(w)
		if err != nil {
			return err
		}
	}
	return nil
}

// flush sends w's pending changes unless a response is already in flight.
func (st *stream) flush(w *watch) error {
	if !w.dirty || w.inFlight != nil {
		return nil
	}
	w.dirty = false
	ups, removed := w.diff(st.snap[w.typeURL])
	if len(ups) == 0 && len(removed) == 0 && !w.mustRespond {
		w.changedAt = time.Time{}
		return nil
	}
	w.mustRespond = false
	st.nonceSeq++
	resp := &discovery.DeltaDiscoveryResponse{
		TypeUrl:           w.typeURL,
		SystemVersionInfo: strconv.FormatUint(st.gen, 10),
		Nonce:             strconv.FormatUint(st.id, 10) + "-" + strconv.FormatUint(st.nonceSeq, 10),
		RemovedResources:  removed,
	}
	fl := &inFlight{nonce: resp.Nonce, upserts: make(map[string]string, len(ups)), removed: removed}
	for _, r := range ups {
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: r.Name, Version: r.Version, Resource: r.Any})
		fl.upserts[r.Name] = r.Version
	}
	// Counted before the send so that a client that sees the response
	// also sees it counted.
	typ := shortType(w.typeURL)
	st.srv.metrics.pushes.WithLabelValues(typ).Inc()
	if !w.changedAt.IsZero() {
		st.srv.metrics.pushLatency.WithLabelValues(typ).Observe(time.Since(w.changedAt).Seconds())
		w.changedAt = time.Time{}
	}
	if err := st.gs.Send(resp); err != nil {
		return err
	}
	w.inFlight = fl
	for n, v := range fl.upserts {
		w.sent[n] = v
	}
	for _, n := range removed {
		if w.names[n] {
			w.sent[n] = "" // told it does not exist
		} else {
			delete(w.sent, n)
		}
	}
	st.log.Debug("xds push", "type", typ, "nonce", resp.Nonce, "version", resp.SystemVersionInfo,
		"resources", len(ups), "removed", len(removed))
	return nil
}

// publish copies w's state into the status Streams reads.
func (st *stream) publish(w *watch) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.statuses[w.typeURL]
	s.TypeURL = w.typeURL
	s.Wildcard = w.wildcard
	s.Subscribed = len(w.names)
	s.Acked = len(w.acked)
	s.InFlight = ""
	if w.inFlight != nil {
		s.InFlight = w.inFlight.nonce
	}
	s.Waiting = w.inFlight != nil && w.dirty
	st.statuses[w.typeURL] = s
}

func (st *stream) status() StreamStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := StreamStatus{ID: st.id, NodeID: st.nodeID, Proxy: st.proxy, ConnectedAt: st.connectedAt}
	for _, t := range slices.Sorted(maps.Keys(st.statuses)) {
		out.Types = append(out.Types, st.statuses[t])
	}
	return out
}

func (st *stream) currentNodeID() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.nodeID
}

// newWatch subscribes as Istio does on a type's first request
// (pilot/pkg/xds/delta.go deltaWatchedResources): the names subscribed
// and those in initial_resource_versions, less those unsubscribed; "*" or
// no subscribed name at all means wildcard. ztunnel's on-demand mode
// subscribes and unsubscribes "*" in one request: subscribed to nothing.
func newWatch(req *discovery.DeltaDiscoveryRequest) *watch {
	w := &watch{
		typeURL:     req.TypeUrl,
		names:       map[string]bool{},
		sent:        map[string]string{},
		acked:       map[string]string{},
		dirty:       true,
		mustRespond: true,
	}
	for _, n := range req.ResourceNamesSubscribe {
		w.names[n] = true
	}
	for n := range req.InitialResourceVersions {
		w.names[n] = true
	}
	for _, n := range req.ResourceNamesUnsubscribe {
		delete(w.names, n)
	}
	if w.names[wildcardName] || len(req.ResourceNamesSubscribe) == 0 {
		w.wildcard = true
	}
	delete(w.names, wildcardName)
	if w.wildcard {
		clear(w.names) // every name is covered
	}
	// What the client says it has is what it has: diff against it. An
	// empty version is a name it asked for and has not received (ztunnel
	// sends those for on-demand names after a reconnect): it holds nothing,
	// so a name that does not exist must still be reported removed.
	for n, v := range req.InitialResourceVersions {
		if v != "" {
			w.sent[n] = v
			w.acked[n] = v
		}
	}
	// An on-demand client subscribed to nothing expects no answer.
	w.mustRespond = w.wildcard || len(w.names) > 0
	return w
}

// resubscribe applies a later request's subscription changes and reports
// whether anything new may have to be sent.
func (w *watch) resubscribe(req *discovery.DeltaDiscoveryRequest) bool {
	more := false
	for _, n := range req.ResourceNamesSubscribe {
		if n == wildcardName {
			more = more || !w.wildcard
			w.wildcard = true
			continue
		}
		if !w.names[n] {
			w.names[n] = true
			more = true
		}
	}
	for _, n := range req.ResourceNamesUnsubscribe {
		if n == wildcardName {
			w.wildcard = false
			for k := range w.sent {
				if !w.names[k] {
					delete(w.sent, k)
					delete(w.acked, k)
				}
			}
			continue
		}
		delete(w.names, n)
		if !w.wildcard {
			delete(w.sent, n)
			delete(w.acked, n)
		}
	}
	return more
}

// diff is what to send so the client matches snap: resources whose
// version differs from what it has, and removals of names it has that
// are gone. An explicitly subscribed name that does not exist is reported
// removed once, so an on-demand client stops waiting for it.
func (w *watch) diff(snap *typeSnapshot) (ups []Resource, removed []string) {
	var res map[string]Resource
	if snap != nil {
		res = snap.resources
	}
	want := func(n string) bool { return w.wildcard || w.names[n] }
	if w.wildcard {
		for n, r := range res {
			if v, ok := w.sent[n]; !ok || v != r.Version {
				ups = append(ups, r)
			}
		}
	}
	for n := range w.names {
		r, ok := res[n]
		v, had := w.sent[n]
		switch {
		case ok && w.wildcard:
			// handled above
		case ok && (!had || v != r.Version):
			ups = append(ups, r)
		case !ok && !had:
			removed = append(removed, n)
		}
	}
	for n, v := range w.sent {
		if _, ok := res[n]; !ok && v != "" && want(n) {
			removed = append(removed, n)
		}
	}
	slices.SortFunc(ups, func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(removed)
	return ups, slices.Compact(removed)
}
