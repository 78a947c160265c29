package xdsclient

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/istiod-lite/xds"
)

func TestInitialSyncThenIncrementalChanges(t *testing.T) {
	s := startServer(t)
	s.world()
	c, reg := newClient(t, s, nil)
	addrs, authz := newRecorder(t), newRecorder(t)
	if err := c.Watch(xds.AddressType, addrs.handle); err != nil {
		t.Fatal(err)
	}
	if err := c.Watch(xds.AuthorizationType, authz.handle); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitSynced(t, c)

	want := call{Upserts: []string{uidOf(1), uidOf(2), uidOf(3), appService}}
	if d := cmp.Diff(want, addrs.next()); d != "" {
		t.Errorf("first address call (-want +got):\n%s", d)
	}
	if d := cmp.Diff(call{Upserts: []string{"default/allow-web"}}, authz.next()); d != "" {
		t.Errorf("first authorization call (-want +got):\n%s", d)
	}
	wantVersions := map[string]string{}
	for _, n := range want.Upserts {
		wantVersions[n] = s.version(xds.AddressType, n)
	}
	waitVersions(t, c, xds.AddressType, wantVersions)

	// The server saw our node and ACKs of everything.
	eventually(t, "server sees both types acked", func() bool {
		a, _ := s.typeStatus(xds.AddressType)
		z, _ := s.typeStatus(xds.AuthorizationType)
		return a.Acked == 4 && z.Acked == 1 && a.InFlight == "" && z.InFlight == ""
	})
	if st := s.srv.Streams(); len(st) != 1 || st[0].NodeID != testNodeID {
		t.Errorf("server streams %+v, want one of node %s", st, testNodeID)
	}

	// One change → one resource; a removal → removed_resources.
	s.update(xds.AddressType, map[string]proto.Message{uidOf(2): workload(uidOf(2), "10.1.0.2", 2)})
	if d := cmp.Diff(call{Upserts: []string{uidOf(2)}}, addrs.next()); d != "" {
		t.Errorf("after an update (-want +got):\n%s", d)
	}
	s.update(xds.AddressType, nil, uidOf(3))
	if d := cmp.Diff(call{Removals: []string{uidOf(3)}}, addrs.next()); d != "" {
		t.Errorf("after a removal (-want +got):\n%s", d)
	}
	delete(wantVersions, uidOf(3))
	wantVersions[uidOf(2)] = s.version(xds.AddressType, uidOf(2))
	waitVersions(t, c, xds.AddressType, wantVersions)
	eventually(t, "the removal ACKed", func() bool { return typeStatus(c, xds.AddressType).ACKs == 3 })
	if d := cmp.Diff(wantVersions, addrs.snapshot()); d != "" {
		t.Errorf("handler state (-want +got):\n%s", d)
	}

	st := c.Status()
	ts := typeStatus(c, xds.AddressType)
	if !st.Connected || !st.Synced || st.State != StateConnected || st.LastConnect.IsZero() {
		t.Errorf("status %+v, want connected and synced", st)
	}
	if !ts.Wildcard || !ts.Synced || ts.ACKs != 3 || ts.NACKs != 0 || ts.Resources != 3 ||
		ts.Nonce == "" || ts.SystemVersion != "3" && ts.SystemVersion != "4" {
		t.Errorf("address status %+v, want 3 ACKs of a wildcard type holding 3", ts)
	}
	if n := metric(t, reg, metricMessages, map[string]string{"url": xds.AddressType}); n != 3 {
		t.Errorf("%s = %v, want 3", metricMessages, n)
	}
	if n := metric(t, reg, metricResponses, map[string]string{"url": xds.AddressType, "result": "ack"}); n != 3 {
		t.Errorf("%s{ack} = %v, want 3", metricResponses, n)
	}
	if n := metric(t, reg, metricMessageBytes, map[string]string{"url": xds.AddressType}); n == 0 {
		t.Errorf("%s = 0, want the bytes received", metricMessageBytes)
	}
	if g := metric(t, reg, metricConnected, nil); g != 1 {
		t.Errorf("%s = %v, want 1", metricConnected, g)
	}
}

// A handler error NACKs the response: the server records it, the client
// keeps the versions it had, and later changes still flow.
func TestHandlerErrorNACKsAndKeepsState(t *testing.T) {
	s := startServer(t)
	s.world()
	c, reg := newClient(t, s, nil)
	addrs := newRecorder(t)
	addrs.fail = func(ups []Resource, _ []string) error {
		for _, u := range ups {
			var a workloadapi.Address
			if err := u.Any.UnmarshalTo(&a); err != nil {
				return err
			}
			if a.GetWorkload().GetCanonicalRevision() == "bad" {
				return errors.New("workload " + u.Name + " is bad")
			}
		}
		return nil
	}
	if err := c.Watch(xds.AddressType, addrs.handle); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitSynced(t, c)
	addrs.next()
	before := c.Versions(xds.AddressType)

	s.update(xds.AddressType, map[string]proto.Message{uidOf(2): workload(uidOf(2), "10.1.0.2", "bad")})
	addrs.next()
	eventually(t, "server records the NACK", func() bool {
		ts, _ := s.typeStatus(xds.AddressType)
		return ts.NACKs == 1 && strings.Contains(ts.LastNack, "workload "+uidOf(2)+" is bad") && ts.InFlight == ""
	})
	if d := cmp.Diff(before, c.Versions(xds.AddressType)); d != "" {
		t.Errorf("versions changed by a NACKed response (-before +after):\n%s", d)
	}
	ts := typeStatus(c, xds.AddressType)
	if ts.NACKs != 1 || !strings.Contains(ts.LastNack, "is bad") || ts.LastNackAt.IsZero() {
		t.Errorf("client status %+v, want the NACK", ts)
	}
	if n := metric(t, reg, metricResponses, map[string]string{"url": xds.AddressType, "result": "nack"}); n != 1 {
		t.Errorf("%s{nack} = %v, want 1", metricResponses, n)
	}

	// A later good change is ACKed and clears the NACK on both sides.
	s.update(xds.AddressType, map[string]proto.Message{uidOf(1): workload(uidOf(1), "10.1.0.1", 2)})
	if d := cmp.Diff(call{Upserts: []string{uidOf(1)}}, addrs.next()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	eventually(t, "NACK cleared", func() bool {
		sts, _ := s.typeStatus(xds.AddressType)
		return sts.LastNack == "" && typeStatus(c, xds.AddressType).LastNack == ""
	})
	if got, want := c.Versions(xds.AddressType)[uidOf(2)], before[uidOf(2)]; got != want {
		t.Errorf("rejected %s held at %s, want the old %s", uidOf(2), got, want)
	}
}

// Rejections reject single resources, as ztunnel does: the rest of the
// response is applied and recorded.
func TestRejectionsApplyTheRest(t *testing.T) {
	s := startServer(t)
	s.world()
	c, _ := newClient(t, s, nil)
	got := make(chan []string, 10)
	h := Typed(func(ups []TypedResource[*workloadapi.Address], removals []string) error {
		var rej Rejections
		var names []string
		for _, u := range ups {
			names = append(names, u.Name)
			if u.Message.GetWorkload().GetCanonicalRevision() == "bad" {
				rej = append(rej, Rejection{u.Name, errors.New("bad revision")})
			}
		}
		got <- names
		return rej
	})
	if err := c.Watch(xds.AddressType, h); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitSynced(t, c)
	<-got
	before := c.Versions(xds.AddressType)

	s.update(xds.AddressType, map[string]proto.Message{
		uidOf(2): workload(uidOf(2), "10.1.0.2", "bad"),
		uidOf(3): workload(uidOf(3), "10.1.0.3", 2),
	})
	<-got
	eventually(t, "server records the NACK", func() bool {
		ts, _ := s.typeStatus(xds.AddressType)
		return ts.NACKs == 1 && ts.LastNack == uidOf(2)+": bad revision"
	})
	v := c.Versions(xds.AddressType)
	if v[uidOf(2)] != before[uidOf(2)] {
		t.Errorf("rejected %s recorded at %s, want the old %s", uidOf(2), v[uidOf(2)], before[uidOf(2)])
	}
	if want := s.version(xds.AddressType, uidOf(3)); v[uidOf(3)] != want {
		t.Errorf("accepted %s held at %s, want %s", uidOf(3), v[uidOf(3)], want)
	}
}

// The control plane goes away: the client keeps everything, retries with
// backoff, and after the restart receives only what changed meanwhile,
// because it sent initial_resource_versions.
func TestReconnectKeepsStateAndGetsOnlyTheDifference(t *testing.T) {
	s := startServer(t)
	s.world()
	c, reg := newClient(t, s, nil)
	addrs := newRecorder(t)
	if err := c.Watch(xds.AddressType, addrs.handle); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitSynced(t, c)
	addrs.next()
	held := c.Versions(xds.AddressType)
	state := addrs.snapshot()

	s.stop()
	eventually(t, "client disconnected and retrying", func() bool {
		st := c.Status()
		return !st.Connected && st.LastError != "" && !st.LastDisconnect.IsZero() && st.Attempts >= 4
	})
	st := c.Status()
	if !st.Synced {
		t.Error("Synced went false on a disconnect")
	}
	if d := cmp.Diff(held, c.Versions(xds.AddressType)); d != "" {
		t.Errorf("versions changed while disconnected (-before +after):\n%s", d)
	}
	if d := cmp.Diff(state, addrs.snapshot()); d != "" {
		t.Errorf("handler state changed while disconnected (-before +after):\n%s", d)
	}
	select {
	case cl := <-addrs.calls:
		t.Errorf("handler called while disconnected: %+v", cl)
	default:
	}
	if n := metric(t, reg, metricTerminations, map[string]string{"reason": reasonConnectionError}); n < 2 {
		t.Errorf("%s{ConnectionError} = %v, want the failed attempts", metricTerminations, n)
	}
	if g := metric(t, reg, metricConnected, nil); g != 0 {
		t.Errorf("%s = %v while disconnected", metricConnected, g)
	}

	// While it was away: pod 2 changed, pod 3 went, pod 4 came; pod 1 and
	// the service are as they were. A new server (a new store) serves it.
	store := xds.NewStore(nil)
	if err := store.Set(xds.AddressType, map[string]proto.Message{
		uidOf(1):   workload(uidOf(1), "10.1.0.1", 1),
		uidOf(2):   workload(uidOf(2), "10.1.0.2", 2),
		uidOf(4):   workload(uidOf(4), "10.1.0.4", 1),
		appService: service("default", "app", "10.96.0.10"),
	}); err != nil {
		t.Fatal(err)
	}
	s.start(store)
	want := call{Upserts: []string{uidOf(2), uidOf(4)}, Removals: []string{uidOf(3)}}
	if d := cmp.Diff(want, addrs.next()); d != "" {
		t.Errorf("first response after reconnect (-want +got):\n%s", d)
	}
	wantVersions := map[string]string{}
	for _, n := range []string{uidOf(1), uidOf(2), uidOf(4), appService} {
		wantVersions[n] = s.version(xds.AddressType, n)
	}
	waitVersions(t, c, xds.AddressType, wantVersions)
	if d := cmp.Diff(wantVersions, addrs.snapshot()); d != "" {
		t.Errorf("handler state after reconnect (-want +got):\n%s", d)
	}
	eventually(t, "connected again", func() bool { return c.Status().Connected })
	if n := metric(t, reg, metricTerminations, map[string]string{"reason": reasonReconnect}) +
		metric(t, reg, metricTerminations, map[string]string{"reason": reasonError}); n < 1 {
		t.Errorf("the ended stream is not counted in %s", metricTerminations)
	}
}

// The waypoint's way: a named type, names added and dropped at runtime.
func TestNamedSubscribeAndUnsubscribe(t *testing.T) {
	s := startServer(t)
	s.world()
	c, _ := newClient(t, s, nil)
	addrs, authz := newRecorder(t), newRecorder(t)
	if err := c.WatchNamed(xds.AddressType, addrs.handle, uidOf(1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Watch(xds.AuthorizationType, authz.handle); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(xds.AuthorizationType, "x"); err == nil {
		t.Error("Subscribe on a wildcard type succeeded")
	}
	run(t, c)
	waitSynced(t, c) // the wildcard authorizations only
	if d := cmp.Diff(call{Upserts: []string{uidOf(1)}}, addrs.next()); d != "" {
		t.Errorf("initial named subscription (-want +got):\n%s", d)
	}

	// A name that exists comes; one that does not is reported removed.
	if err := c.Subscribe(xds.AddressType, uidOf(2), "cluster1//Pod/default/missing"); err != nil {
		t.Fatal(err)
	}
	got := addrs.next()
	if d := cmp.Diff(call{Upserts: []string{uidOf(2)}, Removals: []string{"cluster1//Pod/default/missing"}}, got); d != "" {
		t.Errorf("after Subscribe (-want +got):\n%s", d)
	}
	eventually(t, "server has 3 names", func() bool { ts, _ := s.typeStatus(xds.AddressType); return ts.Subscribed == 3 && !ts.Wildcard })

	// Unsubscribe: the handler is told at once; the server forgets it.
	if err := c.Unsubscribe(xds.AddressType, uidOf(1)); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(call{Removals: []string{uidOf(1)}}, addrs.next()); d != "" {
		t.Errorf("after Unsubscribe (-want +got):\n%s", d)
	}
	eventually(t, "server has 2 names", func() bool { ts, _ := s.typeStatus(xds.AddressType); return ts.Subscribed == 2 })
	if _, ok := c.Versions(xds.AddressType)[uidOf(1)]; ok {
		t.Errorf("unsubscribed %s still held", uidOf(1))
	}
	if d := cmp.Diff([]string{"cluster1//Pod/default/missing", uidOf(2)}, typeStatus(c, xds.AddressType).Subscribed); d != "" {
		t.Errorf("status subscribed (-want +got):\n%s", d)
	}

	// Changes to the unsubscribed name no longer come; subscribed ones do.
	s.update(xds.AddressType, map[string]proto.Message{
		uidOf(1): workload(uidOf(1), "10.1.0.1", 2),
		uidOf(2): workload(uidOf(2), "10.1.0.2", 2),
	})
	if d := cmp.Diff(call{Upserts: []string{uidOf(2)}}, addrs.next()); d != "" {
		t.Errorf("after a store change (-want +got):\n%s", d)
	}

	// A reconnect subscribes the same names and resends nothing unchanged.
	s.stop()
	eventually(t, "disconnected", func() bool { return !c.Status().Connected })
	store := s.store
	s.start(store)
	if d := cmp.Diff(call{Removals: []string{"cluster1//Pod/default/missing"}}, addrs.next()); d != "" {
		t.Errorf("after reconnect (-want +got):\n%s", d)
	}
	eventually(t, "server has 2 names again", func() bool { ts, _ := s.typeStatus(xds.AddressType); return ts.Subscribed == 2 })
}

// ztunnel's on-demand mode: a named type that starts subscribed to
// nothing gets no response until a name is asked for, and does not hold
// readiness back.
func TestNamedTypeStartsWithNothing(t *testing.T) {
	s := startServer(t)
	s.world()
	c, _ := newClient(t, s, nil)
	addrs := newRecorder(t)
	if err := c.WatchNamed(xds.AddressType, addrs.handle); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	waitSynced(t, c) // no wildcard type: synced at once
	eventually(t, "server sees the type, subscribed to nothing", func() bool {
		ts, ok := s.typeStatus(xds.AddressType)
		return ok && !ts.Wildcard && ts.Subscribed == 0
	})
	if st := c.Status(); st.State != StateConnecting {
		t.Errorf("state %s before any response, want %s", st.State, StateConnecting)
	}
	if err := c.Subscribe(xds.AddressType, appService); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(call{Upserts: []string{appService}}, addrs.next()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	eventually(t, "connected", func() bool { return c.Status().Connected })
}

// A refused token surfaces as Unauthenticated and is retried with backoff,
// with a fresh token on every attempt.
func TestBadTokenIsRetried(t *testing.T) {
	s := startServer(t)
	s.world()
	tok := newToken("stale-token")
	c, reg := newClient(t, s, func(cfg *Config) { cfg.Token = tok.source })
	addrs := newRecorder(t)
	if err := c.Watch(xds.AddressType, addrs.handle); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	eventually(t, "Unauthenticated in the status after some attempts", func() bool {
		st := c.Status()
		return strings.Contains(st.LastError, "Unauthenticated") && st.Attempts >= 3
	})
	st := c.Status()
	if st.Connected || st.Synced || !strings.Contains(st.LastError, "did not accept the token") {
		t.Errorf("status %+v, want a disconnected client saying why", st)
	}
	if n := metric(t, reg, metricTerminations, map[string]string{"reason": reasonError}); n < 2 {
		t.Errorf("%s{Error} = %v, want the refused attempts", metricTerminations, n)
	}
	if len(s.srv.Streams()) != 0 {
		t.Error("the server registered an unauthenticated stream")
	}

	tok.v.Store(goodToken)
	waitSynced(t, c)
	if len(addrs.next().Upserts) != 4 {
		t.Error("first response after a good token is not the world")
	}
}

// A control plane whose certificate the roots do not vouch for is not
// talked to, and the status says so.
func TestUntrustedServerIsRefused(t *testing.T) {
	s := startServer(t)
	other := newTestCA(t)
	c, _ := newClient(t, s, func(cfg *Config) { cfg.RootCertFile = other.rootFile })
	if err := c.Watch(xds.AddressType, newRecorder(t).handle); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	eventually(t, "a TLS error in the status", func() bool {
		return strings.Contains(c.Status().LastError, "certificate")
	})
	if e := c.Status().LastError; !strings.Contains(e, "not trusted for \""+serverName+"\"") {
		t.Errorf("LastError %q does not name the server name to check", e)
	}
	if len(s.srv.Streams()) != 0 {
		t.Error("a stream reached the server")
	}
}

// Run leaves nothing behind: no gRPC transport, no stream goroutine, on
// the client or (since the stream ends) on the server.
func TestRunLeavesNoGoroutines(t *testing.T) {
	s := startServer(t)
	s.world()
	base := runtime.NumGoroutine()

	c, _ := newClient(t, s, nil)
	if err := c.Watch(xds.AddressType, newRecorder(t).handle); err != nil {
		t.Fatal(err)
	}
	if err := c.WatchNamed(xds.AuthorizationType, newRecorder(t).handle, "default/allow-web"); err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)
	waitSynced(t, c)
	// One reconnect, so that a failed attempt and a backoff are covered.
	s.stop()
	eventually(t, "disconnected", func() bool { return c.Status().Attempts >= 3 })
	s.start(s.store)
	eventually(t, "connected", func() bool { return c.Status().Connected })
	stop()
	if st := c.Status().State; st != StateStopped {
		t.Errorf("state after Run returned: %s", st)
	}
	settleGoroutines(t, base)

	// Run may run again, and reconnects with what it holds.
	stop = run(t, c)
	eventually(t, "connected again", func() bool { return c.Status().Connected })
	stop()
	settleGoroutines(t, base)
}

func TestMisuse(t *testing.T) {
	s := startServer(t)
	c, _ := newClient(t, s, nil)
	if err := c.Run(context.Background()); err == nil {
		t.Error("Run without types succeeded")
	}
	h := newRecorder(t).handle
	if err := c.Watch(xds.AddressType, h); err != nil {
		t.Fatal(err)
	}
	if err := c.Watch(xds.AddressType, h); err == nil {
		t.Error("second Watch of a type succeeded")
	}
	if err := c.WatchNamed(xds.AuthorizationType, h, "*"); err == nil {
		t.Error("WatchNamed with * succeeded")
	}
	if err := c.Subscribe("type.googleapis.com/unknown", "a"); err == nil {
		t.Error("Subscribe to an unwatched type succeeded")
	}
	run(t, c)
	eventually(t, "running", func() bool { return c.Status().State != StateStopped })
	if err := c.Run(context.Background()); err == nil {
		t.Error("a second concurrent Run succeeded")
	}
	if err := c.Watch(xds.AuthorizationType, h); err == nil {
		t.Error("Watch after Run succeeded")
	}
}

// waitVersions polls until the client holds want: the client records
// versions only once the handler has returned.
func waitVersions(t *testing.T, c *Client, typeURL string, want map[string]string) {
	t.Helper()
	var d string
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if d = cmp.Diff(want, c.Versions(typeURL)); d == "" {
			return
		}
	}
	t.Errorf("versions held (-want +got):\n%s", d)
}
