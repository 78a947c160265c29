package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// fixture is a Server serving on a real unix socket in a temp dir.
type fixture struct {
	srv  *Server
	path string
	acks chan Pod
}

func newFixture(t *testing.T, cfg ServerConfig) *fixture {
	t.Helper()
	checkLeaks(t)
	f := &fixture{path: filepath.Join(t.TempDir(), "ztunnel.sock"), acks: make(chan Pod, 100)}
	if cfg.OnAck == nil {
		cfg.OnAck = func(p Pod) { f.acks <- p }
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	f.srv = NewServer(cfg)
	ln, err := Listen(f.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		f.srv.Close()
	})
	return f
}

func (f *fixture) dial(t *testing.T) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkLeaks fails the test if it leaves goroutines behind.
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d running, %d before the test\n%s", runtime.NumGoroutine(), before, buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// ownNetNS opens the test process's own network namespace: a real netns fd
// that needs no privilege.
func ownNetNS(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func recvCtx(t *testing.T, c *Conn) Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return r
}

func ack(t *testing.T, c *Conn, err error) {
	t.Helper()
	if err := c.Ack(err); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func pod(uid string) Pod {
	return Pod{UID: uid, Name: "pod-" + uid, Namespace: "ns", ServiceAccount: "sa", IPs: []netip.Addr{netip.MustParseAddr("10.1.0." + uid)}}
}

// TestSnapshotOnConnect: pods enrolled while no ztunnel is connected wait in
// the server; the first ztunnel gets each with its netns fd, then the
// Snapshot listing them.
func TestSnapshotOnConnect(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	ns := ownNetNS(t)
	for _, uid := range []string{"2", "1"} {
		if err := f.srv.Add(pod(uid), ns); err != nil {
			t.Fatal(err)
		}
	}
	if f.srv.Acked("1") {
		t.Fatal("Acked before any ztunnel connected")
	}
	c := f.dial(t)
	for _, uid := range []string{"1", "2"} {
		r := recvCtx(t, c)
		if r.Type != TypePodAdded {
			t.Fatalf("got %s, want PodAdded", r.Type)
		}
		if diff := cmp.Diff(pod(uid), r.Pod, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("pod (-want +got):\n%s", diff)
		}
		if got, want := inode(t, r.NetNS), inode(t, ns); got != want {
			t.Errorf("received netns inode %d, want %d", got, want)
		}
		r.NetNS.Close()
		ack(t, c, nil)
		select {
		case p := <-f.acks:
			if p.UID != uid {
				t.Errorf("OnAck(%s), want %s", p.UID, uid)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("OnAck not called")
		}
	}
	r := recvCtx(t, c)
	if r.Type != TypeSnapshot {
		t.Fatalf("got %s, want Snapshot", r.Type)
	}
	if diff := cmp.Diff([]string{"1", "2"}, r.UIDs); diff != "" {
		t.Errorf("snapshot uids (-want +got):\n%s", diff)
	}
	ack(t, c, nil)
	if !f.srv.Acked("1") || !f.srv.Acked("2") {
		t.Error("pods not Acked after the snapshot")
	}
}

// TestEmptySnapshot: a ztunnel connecting to an agent with no pods still
// gets a Snapshot, with an empty list.
func TestEmptySnapshot(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	c := f.dial(t)
	r := recvCtx(t, c)
	if r.Type != TypeSnapshot || len(r.UIDs) != 0 {
		t.Fatalf("got %+v, want an empty Snapshot", r)
	}
	ack(t, c, nil)
}

// TestRemoveWaitsForAck: Remove returns only once the connected ztunnel
// acked PodRemoved.
func TestRemoveWaitsForAck(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	ns := ownNetNS(t)
	c := f.dial(t)
	if r := recvCtx(t, c); r.Type != TypeSnapshot {
		t.Fatalf("got %s, want Snapshot", r.Type)
	}
	ack(t, c, nil)

	if err := f.srv.Add(pod("1"), ns); err != nil {
		t.Fatal(err)
	}
	r := recvCtx(t, c)
	if r.Type != TypePodAdded || r.Pod.UID != "1" {
		t.Fatalf("got %+v, want PodAdded 1", r)
	}
	r.NetNS.Close()
	ack(t, c, nil)
	waitFor(t, func() bool { return f.srv.Acked("1") })

	removed := make(chan error, 1)
	go func() { removed <- f.srv.Remove(context.Background(), "1") }()
	r = recvCtx(t, c)
	if r.Type != TypePodRemoved || r.UID != "1" {
		t.Fatalf("got %+v, want PodRemoved 1", r)
	}
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) before ztunnel acked", err)
	case <-time.After(50 * time.Millisecond):
	}
	ack(t, c, nil)
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Remove did not return after the ack")
	}
}

// TestRemoveWithoutZtunnel: with no ztunnel connected, Remove does not wait.
func TestRemoveWithoutZtunnel(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	if err := f.srv.Add(pod("1"), ownNetNS(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := f.srv.Remove(ctx, "1"); err != nil {
		t.Fatal(err)
	}
}

// TestReconnectGetsSnapshot: a ztunnel that comes back gets every pod again,
// including those enrolled while it was away, and not those that left.
func TestReconnectGetsSnapshot(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	ns := ownNetNS(t)
	for _, uid := range []string{"1", "2"} {
		if err := f.srv.Add(pod(uid), ns); err != nil {
			t.Fatal(err)
		}
	}
	c := f.dial(t)
	drainSnapshot(t, c)
	c.Close()
	waitFor(t, func() bool { return f.srv.Connected() == 0 })

	if err := f.srv.Remove(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Add(pod("3"), ns); err != nil {
		t.Fatal(err)
	}
	c2 := f.dial(t)
	if got, want := drainSnapshot(t, c2), []string{"2", "3"}; !cmp.Equal(got, want) {
		t.Errorf("second snapshot %v, want %v", got, want)
	}
}

// drainSnapshot acks PodAdded messages up to the Snapshot and returns its
// list, checking that it matches what was added.
func drainSnapshot(t *testing.T, c *Conn) []string {
	t.Helper()
	var added []string
	for {
		r := recvCtx(t, c)
		switch r.Type {
		case TypePodAdded:
			added = append(added, r.Pod.UID)
			r.NetNS.Close()
			ack(t, c, nil)
		case TypeSnapshot:
			ack(t, c, nil)
			if !slices.Equal(added, r.UIDs) {
				t.Errorf("snapshot lists %v, PodAdded sent %v", r.UIDs, added)
			}
			return r.UIDs
		default:
			t.Fatalf("unexpected %s during snapshot", r.Type)
		}
	}
}

// TestAckErrorRetried: a PodAdded that ztunnel could not act on is sent
// again after the backoff, and is left out of the snapshot until then.
func TestAckErrorRetried(t *testing.T) {
	f := newFixture(t, ServerConfig{RetryBackoff: 20 * time.Millisecond})
	if err := f.srv.Add(pod("1"), ownNetNS(t)); err != nil {
		t.Fatal(err)
	}
	c := f.dial(t)
	r := recvCtx(t, c)
	r.NetNS.Close()
	ack(t, c, errors.New("listen :15001: address already in use"))
	r = recvCtx(t, c)
	if r.Type != TypeSnapshot || len(r.UIDs) != 0 {
		t.Fatalf("got %+v, want a Snapshot without the failed pod", r)
	}
	ack(t, c, nil)
	start := time.Now()
	r = recvCtx(t, c)
	if r.Type != TypePodAdded || r.Pod.UID != "1" {
		t.Fatalf("got %+v, want PodAdded 1 again", r)
	}
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Errorf("retried after %v, before the backoff", d)
	}
	r.NetNS.Close()
	ack(t, c, nil)
	waitFor(t, func() bool { return f.srv.Acked("1") })
}

// TestReplaceSendsAgain: adding a known pod again (new sandbox, new IPs)
// sends PodAdded again.
func TestReplaceSendsAgain(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	ns := ownNetNS(t)
	if err := f.srv.Add(pod("1"), ns); err != nil {
		t.Fatal(err)
	}
	c := f.dial(t)
	drainSnapshot(t, c)
	p := pod("1")
	p.IPs = []netip.Addr{netip.MustParseAddr("10.9.9.9")}
	if err := f.srv.Add(p, ns); err != nil {
		t.Fatal(err)
	}
	if f.srv.Acked("1") {
		t.Error("Acked right after a replacing Add")
	}
	r := recvCtx(t, c)
	if r.Type != TypePodAdded || r.Pod.IPs[0] != p.IPs[0] {
		t.Fatalf("got %+v, want PodAdded with the new IP", r)
	}
	r.NetNS.Close()
	ack(t, c, nil)
	waitFor(t, func() bool { return f.srv.Acked("1") })
}

// TestNewestConnectionActive: while a ztunnel is replaced, the new one gets
// the snapshot and new pods; removals go to both.
func TestNewestConnectionActive(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	ns := ownNetNS(t)
	if err := f.srv.Add(pod("1"), ns); err != nil {
		t.Fatal(err)
	}
	old := f.dial(t)
	drainSnapshot(t, old)
	waitFor(t, func() bool { return f.srv.Connected() == 1 })
	newer := f.dial(t)
	if got := drainSnapshot(t, newer); !cmp.Equal(got, []string{"1"}) {
		t.Fatalf("new ztunnel's snapshot %v", got)
	}
	if err := f.srv.Add(pod("2"), ns); err != nil {
		t.Fatal(err)
	}
	r := recvCtx(t, newer)
	if r.Type != TypePodAdded || r.Pod.UID != "2" {
		t.Fatalf("new ztunnel got %+v, want PodAdded 2", r)
	}
	r.NetNS.Close()
	ack(t, newer, nil)

	removed := make(chan error, 1)
	go func() { removed <- f.srv.Remove(context.Background(), "1") }()
	var wg sync.WaitGroup
	for _, c := range []*Conn{old, newer} {
		wg.Go(func() {
			r := recvCtx(t, c)
			if r.Type != TypePodRemoved || r.UID != "1" {
				t.Errorf("got %+v, want PodRemoved 1", r)
			}
			ack(t, c, nil)
		})
	}
	wg.Wait()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
}

// TestAckTimeoutDisconnects: a ztunnel that does not answer is dropped.
func TestAckTimeoutDisconnects(t *testing.T) {
	f := newFixture(t, ServerConfig{AckTimeout: 100 * time.Millisecond})
	if err := f.srv.Add(pod("1"), ownNetNS(t)); err != nil {
		t.Fatal(err)
	}
	c := f.dial(t)
	r := recvCtx(t, c)
	r.NetNS.Close()
	// no Ack
	waitFor(t, func() bool { return f.srv.Connected() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.pending = false
	if _, err := c.Recv(ctx); err == nil {
		t.Fatal("Recv succeeded on a connection the agent dropped")
	}
}

// TestBadHello: a peer that does not start with Hello is disconnected.
func TestBadHello(t *testing.T) {
	for name, msg := range map[string]string{
		"not json":      "hello",
		"wrong type":    `{"type":"Ack"}`,
		"wrong version": `{"type":"Hello","version":99}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, ServerConfig{})
			c, err := net.Dial("unixpacket", f.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 100))
			if err == nil && n > 0 {
				t.Fatalf("agent answered a bad Hello")
			}
		})
	}
}

// TestRecvCancel: Recv returns when its context ends.
func TestRecvCancel(t *testing.T) {
	f := newFixture(t, ServerConfig{})
	c := f.dial(t)
	drainSnapshot(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv = %v, want deadline exceeded", err)
	}
}

// TestNetNSUsable: the fd ztunnel receives is the pod's namespace, and
// ztunnel can open a listener inside it through the fd alone.
func TestNetNSUsable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_SYS_ADMIN) to create a network namespace; run `go test` as root")
	}
	name := fmt.Sprintf("alzds-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("skipping: ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	path := "/var/run/netns/" + name
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ns, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	f := newFixture(t, ServerConfig{})
	if err := f.srv.Add(pod("1"), ns); err != nil {
		t.Fatal(err)
	}
	ns.Close() // the server keeps its own copy
	c := f.dial(t)
	r := recvCtx(t, c)
	defer r.NetNS.Close()

	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		t.Fatal(err)
	}
	if got := inode(t, r.NetNS); got != want.Ino {
		t.Fatalf("received netns inode %d, want %d (%s)", got, want.Ino, path)
	}
	fdPath := fmt.Sprintf("/proc/self/fd/%d", r.NetNS.Fd())
	ln, err := capture.ListenInNetNS(fdPath, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen in the received netns: %v", err)
	}
	defer ln.Close()
	ack(t, c, nil)
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Close()
		}
	}()
	// Reachable from inside the pod's namespace…
	conn, err := capture.DialInNetNS(context.Background(), path, nil, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial the listener from inside the pod netns: %v", err)
	}
	conn.Close()
	// …and it is not in ours.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Errorf("listener at %s reachable from the test's own namespace", ln.Addr())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
