package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of ServerConfig.
const (
	DefaultAckTimeout   = 5 * time.Second
	DefaultRetryBackoff = time.Second
)

// ServerConfig configures a Server. The zero value works.
type ServerConfig struct {
	// Logger receives connection events. Default: slog.Default().
	Logger *slog.Logger
	// AckTimeout is how long ztunnel has to answer Hello after connecting
	// and to Ack each message; a ztunnel that misses it is disconnected (it
	// reconnects and gets a fresh snapshot). Default 5s.
	AckTimeout time.Duration
	// RetryBackoff is how long a PodAdded that ztunnel acked with an error
	// waits before it is sent again. Default 1s.
	RetryBackoff time.Duration
	// OnAck, if set, is called (from a connection's goroutine, with no lock
	// held) after the active ztunnel acked a PodAdded without error. It must
	// not block on Server methods that wait (Remove).
	OnAck func(Pod)
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	return c
}

// Server is the node agent's side: it holds the set of enrolled pods (the
// desired state) and brings every connected ztunnel in line with it. Pods
// added while no ztunnel is connected simply wait in that set: the next
// ztunnel to connect gets them all in its snapshot.
//
// Only the newest connection is active: it receives PodAdded and the
// Snapshot. Older connections (a ztunnel being replaced) only receive
// PodRemoved for the pods they still hold, as Istio does.
type Server struct {
	cfg ServerConfig

	mu      sync.Mutex
	pods    map[string]*entry
	gen     uint64
	conns   []*conn // oldest first; the last one is active
	changed chan struct{}
	closed  bool
}

type entry struct {
	pod   Pod
	netns *os.File // the Server's own duplicate
	gen   uint64
}

type conn struct {
	uc           *net.UnixConn
	sent         map[string]uint64 // uid → generation this ztunnel acked
	failedGen    map[string]uint64 // uid → generation acked with an error
	retryAt      map[string]time.Time
	snapshotSent bool
}

// NewServer returns a Server with no pods and no connections.
func NewServer(cfg ServerConfig) *Server {
	return &Server{cfg: cfg.withDefaults(), pods: map[string]*entry{}, changed: make(chan struct{})}
}

// Listen removes a stale socket file at path and listens there for ztunnel
// (SOCK_SEQPACKET, mode 0600).
func Listen(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen for ztunnel on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// Add puts pod, with its network namespace, into the enrolled set (a copy of
// the fd is kept; the caller keeps netns). A pod already there is replaced
// and sent again. It never waits for ztunnel.
func (s *Server) Add(pod Pod, netns *os.File) error {
	dup, err := dupFile(netns)
	if err != nil {
		return fmt.Errorf("keep netns of pod %s: %w", pod.UID, err)
	}
	pod.IPs = slices.Clone(pod.IPs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		dup.Close()
		return net.ErrClosed
	}
	if old := s.pods[pod.UID]; old != nil {
		old.netns.Close()
	}
	s.gen++
	s.pods[pod.UID] = &entry{pod: pod, netns: dup, gen: s.gen}
	s.notifyLocked()
	return nil
}

// Remove takes the pod out of the enrolled set and waits until every
// connected ztunnel that held it acked its PodRemoved (or disconnected), or
// ctx ends. With no ztunnel connected it returns at once.
func (s *Server) Remove(ctx context.Context, uid string) error {
	s.mu.Lock()
	if e := s.pods[uid]; e != nil {
		e.netns.Close()
		delete(s.pods, uid)
		s.notifyLocked()
	}
	for {
		held := false
		for _, c := range s.conns {
			if _, ok := c.sent[uid]; ok {
				held = true
			}
		}
		if !held {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("ztunnel did not confirm removal of pod %s: %w", uid, ctx.Err())
		}
		s.mu.Lock()
	}
}

// Acked reports whether the active ztunnel acked the pod's current PodAdded.
func (s *Server) Acked(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.pods[uid]
	if e == nil || len(s.conns) == 0 {
		return false
	}
	g, ok := s.conns[len(s.conns)-1].sent[uid]
	return ok && g == e.gen
}

// Connected reports how many ztunnels are connected.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Serve accepts ztunnel connections on ln until ctx ends, then closes ln and
// every connection and returns once their goroutines are gone.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: the connections end with ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.cfg.Logger.Warn("accept ztunnel connection", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		wg.Go(func() {
			err := s.serveConn(ctx, uc)
			switch {
			case ctx.Err() != nil:
			case err == nil || errors.Is(err, net.ErrClosed):
				s.cfg.Logger.Info("ztunnel disconnected")
			default:
				s.cfg.Logger.Warn("ztunnel connection closed", "err", err)
			}
		})
	}
}

// Close releases the namespaces the Server holds. Call it after Serve
// returned.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for uid, e := range s.pods {
		e.netns.Close()
		delete(s.pods, uid)
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// work is the next message for one connection.
type work struct {
	msg   message
	netns *os.File // a duplicate the sender closes
	gen   uint64
}

// serveConn runs one ztunnel connection: Hello, then messages and acks in
// lock step until the connection or ctx ends.
func (s *Server) serveConn(ctx context.Context, uc *net.UnixConn) error {
	defer uc.Close()
	stop := context.AfterFunc(ctx, func() { uc.Close() })
	defer stop()

	// One reader per connection: it hands over every message, and notices a
	// ztunnel that goes away while nothing is being sent.
	in := make(chan received)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, files, err := recv(uc)
			closeFiles(files)
			select {
			case in <- received{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	hello, err := s.read(in, "Hello")
	if err != nil {
		return err
	}
	if hello.Type != TypeHello {
		return fmt.Errorf("%w: first message is %q, want Hello", ErrProtocol, hello.Type)
	}
	if hello.Version != Version {
		return fmt.Errorf("%w: ztunnel speaks version %d, this node agent %d", ErrProtocol, hello.Version, Version)
	}

	c := &conn{uc: uc, sent: map[string]uint64{}, failedGen: map[string]uint64{}, retryAt: map[string]time.Time{}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.conns = append(s.conns, c)
	s.notifyLocked()
	s.mu.Unlock()
	s.cfg.Logger.Info("ztunnel connected", "version", hello.Version)
	defer func() {
		s.mu.Lock()
		s.conns = slices.DeleteFunc(s.conns, func(x *conn) bool { return x == c })
		s.notifyLocked()
		s.mu.Unlock()
	}()

	for {
		w, wait, retry, err := s.next(c)
		if err != nil {
			return err
		}
		if w == nil {
			var timer <-chan time.Time
			var t *time.Timer
			if !retry.IsZero() {
				t = time.NewTimer(time.Until(retry))
				timer = t.C
			}
			var r received
			var got bool
			select {
			case <-wait:
			case <-timer:
			case <-ctx.Done():
			case r = <-in:
				got = true
			}
			if t != nil {
				t.Stop()
			}
			switch {
			case ctx.Err() != nil:
				return nil
			case got && r.err != nil:
				return r.err
			case got:
				return fmt.Errorf("%w: unexpected %q while idle", ErrProtocol, r.msg.Type)
			}
			continue
		}
		ackErr, err := s.exchange(uc, in, w)
		if err != nil {
			return err
		}
		s.record(c, w, ackErr)
	}
}

type received struct {
	msg message
	err error
}

// read waits up to AckTimeout for the next message.
func (s *Server) read(in <-chan received, what string) (message, error) {
	t := time.NewTimer(s.cfg.AckTimeout)
	defer t.Stop()
	select {
	case r := <-in:
		if r.err != nil {
			return message{}, fmt.Errorf("waiting for %s: %w", what, r.err)
		}
		return r.msg, nil
	case <-t.C:
		return message{}, fmt.Errorf("no %s from ztunnel within %v", what, s.cfg.AckTimeout)
	}
}

// exchange sends one message and waits for its Ack.
func (s *Server) exchange(uc *net.UnixConn, in <-chan received, w *work) (ackErr string, err error) {
	defer func() {
		if w.netns != nil {
			w.netns.Close()
		}
	}()
	uc.SetWriteDeadline(time.Now().Add(s.cfg.AckTimeout))
	if err := send(uc, w.msg, w.netns); err != nil {
		return "", err
	}
	m, err := s.read(in, "Ack of "+w.msg.Type)
	if err != nil {
		return "", err
	}
	if m.Type != TypeAck {
		return "", fmt.Errorf("%w: got %q, want Ack of %s", ErrProtocol, m.Type, w.msg.Type)
	}
	return m.Error, nil
}

// next picks the next message for c: removals first (they are what Remove
// waits for), then adds (active connection only), then the Snapshot. With
// nothing to do it returns the channel to wait on and, if a failed add is
// backing off, when to look again.
func (s *Server) next(c *conn) (w *work, wait <-chan struct{}, retry time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	active := len(s.conns) > 0 && s.conns[len(s.conns)-1] == c
	for _, uid := range sortedKeys(c.sent) {
		e := s.pods[uid]
		if e == nil || (!active && e.gen != c.sent[uid]) {
			return &work{msg: message{Type: TypePodRemoved, UID: uid}}, nil, time.Time{}, nil
		}
	}
	if !active {
		return nil, s.changed, time.Time{}, nil
	}
	now := time.Now()
	for _, uid := range sortedKeys(s.pods) {
		e := s.pods[uid]
		if g, ok := c.sent[uid]; ok && g == e.gen {
			continue
		}
		if c.failedGen[uid] == e.gen && now.Before(c.retryAt[uid]) {
			if retry.IsZero() || c.retryAt[uid].Before(retry) {
				retry = c.retryAt[uid]
			}
			continue
		}
		dup, err := dupFile(e.netns)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("duplicate netns fd of pod %s: %w", uid, err)
		}
		pod := e.pod
		return &work{msg: message{Type: TypePodAdded, Pod: &pod}, netns: dup, gen: e.gen}, nil, time.Time{}, nil
	}
	if !c.snapshotSent {
		return &work{msg: message{Type: TypeSnapshot, UIDs: sortedKeys(c.sent)}}, nil, time.Time{}, nil
	}
	return nil, s.changed, retry, nil
}

// record notes ztunnel's answer to w.
func (s *Server) record(c *conn, w *work, ackErr string) {
	log := s.cfg.Logger
	var acked *Pod
	s.mu.Lock()
	switch w.msg.Type {
	case TypePodRemoved:
		if ackErr != "" {
			log.Warn("ztunnel failed to remove pod; treating it as gone", "uid", w.msg.UID, "err", ackErr)
		}
		delete(c.sent, w.msg.UID)
		delete(c.failedGen, w.msg.UID)
		delete(c.retryAt, w.msg.UID)
	case TypePodAdded:
		uid := w.msg.Pod.UID
		if ackErr != "" {
			log.Warn("ztunnel failed to add pod; will retry", "uid", uid, "pod", w.msg.Pod.Namespace+"/"+w.msg.Pod.Name, "err", ackErr)
			c.failedGen[uid] = w.gen
			c.retryAt[uid] = time.Now().Add(s.cfg.RetryBackoff)
			// It may hold the previous generation: that one is stale now.
			delete(c.sent, uid)
			break
		}
		c.sent[uid] = w.gen
		delete(c.failedGen, uid)
		delete(c.retryAt, uid)
		if e := s.pods[uid]; e != nil && e.gen == w.gen && s.conns[len(s.conns)-1] == c {
			p := e.pod
			acked = &p
		}
	case TypeSnapshot:
		if ackErr != "" {
			log.Warn("ztunnel reported an error on the snapshot", "err", ackErr)
		}
		c.snapshotSent = true
		log.Info("snapshot sent to ztunnel", "pods", len(w.msg.UIDs))
	}
	s.notifyLocked()
	s.mu.Unlock()
	if acked != nil && s.cfg.OnAck != nil {
		s.cfg.OnAck(*acked)
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
