package xdsclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// errClosedByServer is why a stream the server ended with OK ended.
var errClosedByServer = errors.New("xdsclient: the control plane closed the stream")

// sessionResult is how one stream attempt ended.
type sessionResult struct {
	err error // nil: the server ended the stream with OK, or ctx ended
	// connectedAt is when the stream received its first response; zero
	// if it never did.
	connectedAt time.Time
}

// session is one open stream. Only Run's goroutine uses it.
type session struct {
	c      *Client
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	// names is, per named type, what this stream is subscribed to.
	names map[string]map[string]bool
}

// session opens a stream, sends the initial request of every type and
// serves it until it fails or ctx ends.
func (c *Client) session(ctx context.Context) sessionResult {
	c.mu.Lock()
	c.status.State = StateConnecting
	c.status.NextAttempt = time.Time{}
	c.status.Attempts++
	c.mu.Unlock()

	md, err := c.outgoingMetadata(ctx)
	if err != nil {
		return sessionResult{err: err}
	}
	tlsConf, err := c.tlsConfig()
	if err != nil {
		return sessionResult{err: err}
	}
	conn, err := grpc.NewClient(c.cfg.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: c.cfg.Keepalive, Timeout: c.cfg.KeepaliveTimeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxMessageSize)),
	)
	if err != nil {
		return sessionResult{err: fmt.Errorf("xdsclient: control plane address %q: %w", c.cfg.Address, err)}
	}
	sctx, cancel := context.WithCancel(ctx)
	if md != nil {
		sctx = metadata.NewOutgoingContext(sctx, md)
	}
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		conn.Close()
	}()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return sessionResult{err: err}
	}

	resps := make(chan *discovery.DeltaDiscoveryResponse)
	recvErr := make(chan error, 1)
	wg.Go(func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case resps <- r:
			case <-sctx.Done():
				return
			}
		}
	})

	s := &session{c: c, stream: stream}
	var res sessionResult
	for _, req := range c.initialRequests(s) {
		if err := s.send(req); err != nil {
			return sessionResult{err: err}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return res
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				res.err = err
			}
			return res
		case r := <-resps:
			if res.connectedAt.IsZero() {
				res.connectedAt = time.Now()
				c.connected(res.connectedAt)
			}
			if err := s.send(s.handle(r)); err != nil {
				res.err = err
				return res
			}
		case <-c.wake:
			for _, req := range c.reconcile(s) {
				if err := s.send(req); err != nil {
					res.err = err
					return res
				}
			}
		}
	}
}

// send sends req. io.EOF means the stream is broken; its status comes
// from Recv, so it is not an error here.
func (s *session) send(req *discovery.DeltaDiscoveryRequest) error {
	if err := s.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// drop is what a named type holds but no longer wants.
type drop struct {
	w     *watch
	names []string
}

// initialRequests returns the first request of every type for a new
// stream, and records in s what the named types subscribe to. Each
// carries the node and, in initial_resource_versions, every resource
// held, so the server sends only what differs and removals for what it
// no longer has. A named type subscribes to its names, or to nothing
// ("*" subscribed and unsubscribed, as ztunnel's on-demand mode does).
func (c *Client) initialRequests(s *session) []*discovery.DeltaDiscoveryRequest {
	c.mu.Lock()
	var reqs []*discovery.DeltaDiscoveryRequest
	var drops []drop
	s.names = map[string]map[string]bool{}
	for _, t := range slices.Sorted(maps.Keys(c.types)) {
		w := c.types[t]
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, Node: c.node, InitialResourceVersions: maps.Clone(w.held)}
		if !w.wildcard {
			names := maps.Clone(w.names)
			s.names[t] = names
			var gone []string
			for n := range req.InitialResourceVersions {
				if !names[n] {
					delete(req.InitialResourceVersions, n)
					gone = append(gone, n)
				}
			}
			if len(gone) > 0 {
				drops = append(drops, drop{w, gone})
			}
			req.ResourceNamesSubscribe = slices.Sorted(maps.Keys(names))
			if len(names) == 0 {
				req.ResourceNamesSubscribe = []string{wildcardName}
				req.ResourceNamesUnsubscribe = []string{wildcardName}
			}
		}
		reqs = append(reqs, req)
	}
	c.mu.Unlock()
	c.applyDrops(drops)
	return reqs
}

// reconcile applies subscription changes: names a named type holds but no
// longer wants are removed through its handler and, with a stream (s not
// nil), the server is told what to subscribe and unsubscribe.
func (c *Client) reconcile(s *session) []*discovery.DeltaDiscoveryRequest {
	c.mu.Lock()
	var reqs []*discovery.DeltaDiscoveryRequest
	var drops []drop
	for _, t := range slices.Sorted(maps.Keys(c.types)) {
		w := c.types[t]
		if w.wildcard {
			continue
		}
		var gone []string
		for n := range w.held {
			if !w.names[n] {
				gone = append(gone, n)
			}
		}
		if len(gone) > 0 {
			slices.Sort(gone)
			drops = append(drops, drop{w, gone})
		}
		if s == nil {
			continue
		}
		have := s.names[t]
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t}
		for n := range w.names {
			if !have[n] {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
			}
		}
		for n := range have {
			if !w.names[n] {
				req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
			}
		}
		if len(req.ResourceNamesSubscribe)+len(req.ResourceNamesUnsubscribe) > 0 {
			slices.Sort(req.ResourceNamesSubscribe)
			slices.Sort(req.ResourceNamesUnsubscribe)
			reqs = append(reqs, req)
			s.names[t] = maps.Clone(w.names)
		}
	}
	c.mu.Unlock()
	c.applyDrops(drops)
	return reqs
}

// applyDrops tells the handlers about unsubscribed resources and forgets
// them. A handler's error is logged: there is no response to NACK.
func (c *Client) applyDrops(drops []drop) {
	for _, d := range drops {
		if err := d.w.handler(nil, d.names); err != nil {
			c.log.Warn("xds handler failed to remove unsubscribed resources", "type", d.w.typeURL, "names", d.names, "error", err)
		}
		c.mu.Lock()
		for _, n := range d.names {
			delete(d.w.held, n)
		}
		c.mu.Unlock()
		c.log.Debug("xds unsubscribed", "type", d.w.typeURL, "removed", len(d.names))
	}
}

// handle hands a response to its type's handler, records what it applied
// and returns the ACK or NACK.
func (s *session) handle(r *discovery.DeltaDiscoveryResponse) *discovery.DeltaDiscoveryRequest {
	c := s.c
	t := r.GetTypeUrl()
	c.metrics.messages.WithLabelValues(t).Inc()
	var size int
	for _, res := range r.GetResources() {
		size += len(res.GetResource().GetValue())
	}
	c.metrics.messageBytes.WithLabelValues(t).Add(float64(size))
	reply := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: r.GetNonce()}

	c.mu.Lock()
	w := c.types[t]
	c.mu.Unlock()
	if w == nil {
		c.log.Warn("xds response of a type not watched", "type", t, "nonce", r.GetNonce())
		reply.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "type " + t + " is not watched"}
		return reply
	}

	// On a named type, drop what this stream no longer subscribes to: a
	// response sent before the server saw an unsubscribe.
	wanted := s.names[t]
	keep := func(name string) bool { return w.wildcard || wanted[name] }
	upserts := make([]Resource, 0, len(r.GetResources()))
	for _, res := range r.GetResources() {
		if keep(res.GetName()) {
			upserts = append(upserts, Resource{Name: res.GetName(), Version: res.GetVersion(), Any: res.GetResource()})
		}
	}
	removals := slices.DeleteFunc(slices.Clone(r.GetRemovedResources()), func(n string) bool { return !keep(n) })

	err := w.handler(upserts, removals)
	refused, all := rejected(err)
	if err != nil && !all && len(refused) == 0 {
		err = nil // an empty Rejections
	}

	result := "ack"
	if err != nil {
		result = "nack"
	}
	c.metrics.responses.WithLabelValues(t, result).Inc()

	now := time.Now()
	c.mu.Lock()
	if !all {
		for _, u := range upserts {
			if !refused[u.Name] {
				w.held[u.Name] = u.Version
			}
		}
		for _, n := range removals {
			if !refused[n] {
				delete(w.held, n)
			}
		}
	}
	st := &w.status
	st.Responses++
	if err == nil {
		st.ACKs++
		st.SystemVersion = r.GetSystemVersionInfo()
		st.Nonce = r.GetNonce()
		st.LastAck = now
		st.LastNack = ""
		st.Synced = true
		c.checkSyncedLocked()
	} else {
		st.NACKs++
		st.LastNack = err.Error()
		st.LastNackAt = now
	}
	held := len(w.held)
	c.mu.Unlock()

	if err == nil {
		c.log.Debug("xds ACK", "type", t, "nonce", r.GetNonce(), "version", r.GetSystemVersionInfo(),
			"resources", len(upserts), "removed", len(removals), "held", held)
		return reply
	}
	c.log.Warn("xds NACK", "type", t, "nonce", r.GetNonce(), "version", r.GetSystemVersionInfo(), "error", err)
	reply.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
	return reply
}

// connected records that the stream received its first response.
func (c *Client) connected(at time.Time) {
	c.mu.Lock()
	c.status.State = StateConnected
	c.status.LastConnect = at
	c.mu.Unlock()
	c.metrics.connected.Set(1)
	c.log.Info("xds stream established", "address", c.cfg.Address, "node_id", c.node.GetId())
}

// ended records how a stream attempt ended and when the next one is.
func (c *Client) ended(res sessionResult, delay time.Duration) {
	reason := terminationReason(res)
	c.metrics.terminations.WithLabelValues(reason).Inc()
	c.metrics.connected.Set(0)
	err := res.err
	if err == nil {
		err = errClosedByServer
	}
	msg := err.Error() + c.hint(err, !res.connectedAt.IsZero())
	now := time.Now()
	c.mu.Lock()
	c.status.State = StateBackoff
	c.status.NextAttempt = now.Add(delay)
	c.status.LastError = msg
	c.status.LastErrorAt = now
	if !res.connectedAt.IsZero() {
		c.status.LastDisconnect = now
	}
	c.mu.Unlock()
	if res.connectedAt.IsZero() {
		c.log.Warn("cannot open xds stream; keeping the current configuration", "address", c.cfg.Address,
			"error", msg, "retry_in", delay.Round(time.Millisecond))
		return
	}
	c.log.Warn("xds stream ended; keeping the current configuration", "address", c.cfg.Address, "reason", reason,
		"error", msg, "up_for", now.Sub(res.connectedAt).Round(time.Millisecond), "retry_in", delay.Round(time.Millisecond))
}

// terminationReason classifies an ended stream as ztunnel does.
func terminationReason(res sessionResult) string {
	if res.err == nil {
		return reasonComplete
	}
	st, isStatus := status.FromError(res.err)
	code := st.Code()
	switch {
	case res.connectedAt.IsZero() && (!isStatus || code == codes.Unavailable):
		return reasonConnectionError
	case code == codes.Unavailable || code == codes.Unknown || code == codes.Canceled || code == codes.DeadlineExceeded:
		return reasonReconnect
	}
	return reasonError
}

// hint says what to check for the usual failures; connected tells
// whether the stream had been up.
func (c *Client) hint(err error, connected bool) string {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return " (the control plane did not accept the token: it must be a current service-account token with the audience the control plane expects, istio-ca)"
	case codes.PermissionDenied:
		return " (the control plane refused this proxy)"
	case codes.Unavailable:
		msg := err.Error()
		switch {
		case strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:"):
			roots := c.cfg.RootCertFile
			if c.cfg.TLS != nil {
				roots = "Config.TLS"
			}
			return fmt.Sprintf(" (the control plane's certificate is not trusted for %q by the roots in %s)", c.cfg.ServerName, roots)
		case !connected:
			return " (the control plane cannot be reached; check the address and that it runs)"
		}
	}
	return ""
}

// outgoingMetadata is the token and cluster id sent on the stream, or nil
// without a TokenSource.
func (c *Client) outgoingMetadata(ctx context.Context) (metadata.MD, error) {
	if c.cfg.Token == nil {
		return nil, nil
	}
	tok, err := c.cfg.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: no token for the control plane: %w", err)
	}
	return metadata.Pairs("authorization", "Bearer "+tok, "clusterid", c.cfg.ClusterID), nil
}

// tlsConfig is Config.TLS, or a config trusting the roots read from
// RootCertFile now.
func (c *Client) tlsConfig() (*tls.Config, error) {
	if c.cfg.TLS != nil {
		t := c.cfg.TLS.Clone()
		if t.ServerName == "" {
			t.ServerName = c.cfg.ServerName
		}
		return t, nil
	}
	b, err := os.ReadFile(c.cfg.RootCertFile)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: control plane roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("xdsclient: control plane roots: no PEM certificate in %s", c.cfg.RootCertFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: c.cfg.ServerName}, nil
}
