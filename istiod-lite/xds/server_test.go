package xds

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// world stores three workloads and a service, and one policy.
func (f *fixture) world() {
	f.t.Helper()
	f.set(AddressType, map[string]proto.Message{
		uidOf(1):                                workload(uidOf(1), "10.1.0.1", 1),
		uidOf(2):                                workload(uidOf(2), "10.1.0.2", 1),
		uidOf(3):                                workload(uidOf(3), "10.1.0.3", 1),
		"default/app.default.svc.cluster.local": service("default", "app", "10.96.0.10"),
	})
	f.set(AuthorizationType, map[string]proto.Message{
		"default/allow-web": &security.Authorization{Name: "allow-web", Namespace: "default",
			Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW},
	})
}

// connect opens a stream that has received and ACKed the world's
// addresses.
func (f *fixture) connect() *client {
	f.t.Helper()
	c := f.dial(goodToken)
	c.subscribe(AddressType, nil, nil)
	c.ack(c.recv())
	return c
}

func TestWildcardSubscribeGetsTheWorld(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.dial(goodToken)
	c.subscribe(AddressType, nil, nil)
	c.subscribe(AuthorizationType, nil, nil)

	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for range 2 {
		r := c.recv()
		got[r.TypeUrl] = r
		if r.Nonce == "" || r.SystemVersionInfo == "" {
			t.Errorf("%s: nonce %q system_version_info %q, want both set", r.TypeUrl, r.Nonce, r.SystemVersionInfo)
		}
		c.ack(r)
	}
	addrs := got[AddressType]
	want := respSummary{Resources: []string{uidOf(1), uidOf(2), uidOf(3), "default/app.default.svc.cluster.local"}}
	if d := cmp.Diff(want, summary(addrs)); d != "" {
		t.Errorf("addresses (-want +got):\n%s", d)
	}
	for _, res := range addrs.Resources {
		stored, _ := f.store.Get(AddressType, res.Name)
		if res.Version != stored.Version {
			t.Errorf("%s: version %s, want %s", res.Name, res.Version, stored.Version)
		}
		var a workloadapi.Address
		if err := res.Resource.UnmarshalTo(&a); err != nil {
			t.Errorf("%s: %v", res.Name, err)
		}
	}
	if d := cmp.Diff(respSummary{Resources: []string{"default/allow-web"}}, summary(got[AuthorizationType])); d != "" {
		t.Errorf("authorizations (-want +got):\n%s", d)
	}

	eventually(t, "both types acked", func() bool {
		a, _ := f.typeStatus(AddressType)
		z, _ := f.typeStatus(AuthorizationType)
		return a.Acked == 4 && z.Acked == 1 && a.InFlight == "" && z.InFlight == ""
	})
	st := f.srv.Streams()
	if len(st) != 1 || st[0].NodeID != testNodeID || st[0].Proxy.Identity != ztunnelID {
		t.Errorf("Streams() = %+v, want one stream of %s", st, testNodeID)
	}
	if a, _ := f.typeStatus(AddressType); !a.Wildcard || a.LastAck.IsZero() {
		t.Errorf("address status %+v, want wildcard with an ack time", a)
	}
	if g := f.metric(metricConnected, ""); g != 1 {
		t.Errorf("connected proxies = %v, want 1", g)
	}
	if n := f.metric(metricPushes, "istio.workload.Address"); n != 1 {
		t.Errorf("address pushes = %v, want 1", n)
	}
}

// ztunnel holds readiness until every wildcard type got a response, so an
// empty type is answered with an empty response.
func TestWildcardEmptyTypeIsAnswered(t *testing.T) {
	f := newFixture(t, Config{})
	c := f.dial(goodToken)
	c.subscribe(AuthorizationType, nil, nil)
	r := c.recv()
	if r.TypeUrl != AuthorizationType || len(r.Resources) != 0 || len(r.RemovedResources) != 0 {
		t.Errorf("got %s %+v, want an empty Authorization response", r.TypeUrl, summary(r))
	}
}

func TestOneChangeSendsOneResource(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.connect()

	f.update(AddressType, map[string]proto.Message{uidOf(2): workload(uidOf(2), "10.1.0.2", 2)})
	r := c.recv()
	if d := cmp.Diff(respSummary{Resources: []string{uidOf(2)}}, summary(r)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	stored, _ := f.store.Get(AddressType, uidOf(2))
	if v := versions(r)[uidOf(2)]; v != stored.Version {
		t.Errorf("version %s, want %s", v, stored.Version)
	}
	c.ack(r)

	// The same content again is no change: nothing is sent.
	gen := f.store.Generation()
	f.update(AddressType, map[string]proto.Message{uidOf(2): workload(uidOf(2), "10.1.0.2", 2)})
	if g := f.store.Generation(); g != gen {
		t.Errorf("identical update bumped the generation %d → %d", gen, g)
	}
}

func TestRemovalSendsRemovedResources(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.connect()

	f.update(AddressType, nil, uidOf(3), "no-such-name")
	r := c.recv()
	if d := cmp.Diff(respSummary{Removed: []string{uidOf(3)}}, summary(r)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	c.ack(r)
	eventually(t, "removal acked", func() bool { s, _ := f.typeStatus(AddressType); return s.Acked == 3 && s.InFlight == "" })
}

func TestDebounceCoalescesABurst(t *testing.T) {
	f := newFixture(t, Config{Debounce: 50 * time.Millisecond})
	f.world()
	c := f.connect()
	pushes := f.metric(metricPushes, "istio.workload.Address")

	// Ten quick updates: four pods, each updated more than once.
	for i := range 10 {
		uid := uidOf(10 + i%4)
		f.update(AddressType, map[string]proto.Message{uid: workload(uid, "10.2.0.1", i)})
	}
	r := c.recv()
	want := respSummary{Resources: []string{uidOf(10), uidOf(11), uidOf(12), uidOf(13)}}
	if d := cmp.Diff(want, summary(r)); d != "" {
		t.Errorf("coalesced response (-want +got):\n%s", d)
	}
	for name, v := range versions(r) {
		if stored, _ := f.store.Get(AddressType, name); stored.Version != v {
			t.Errorf("%s: sent version %s, want the last one %s", name, v, stored.Version)
		}
	}
	c.ack(r)

	// A later change arrives alone: nothing of the burst was left over.
	f.update(AddressType, map[string]proto.Message{uidOf(1): workload(uidOf(1), "10.1.0.1", 99)})
	r = c.recv()
	if d := cmp.Diff(respSummary{Resources: []string{uidOf(1)}}, summary(r)); d != "" {
		t.Errorf("next response (-want +got):\n%s", d)
	}
	if n := f.metric(metricPushes, "istio.workload.Address") - pushes; n != 2 {
		t.Errorf("pushes = %v, want 2 (one per burst)", n)
	}
	if n := f.metric(metricPushLatency, "istio.workload.Address"); n != 2 {
		t.Errorf("push latency samples = %v, want 2", n)
	}
}

func TestReconnectSendsOnlyWhatChanged(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.dial(goodToken)
	c.subscribe(AddressType, nil, nil)
	first := c.recv()
	c.ack(first)
	known := versions(first)
	c.close()
	eventually(t, "first stream gone", func() bool { return len(f.srv.Streams()) == 0 })

	// While disconnected: pod 2 changes, pod 3 goes, pod 4 comes.
	f.update(AddressType, map[string]proto.Message{
		uidOf(2): workload(uidOf(2), "10.1.0.2", 2),
		uidOf(4): workload(uidOf(4), "10.1.0.4", 1),
	}, uidOf(3))

	c2 := f.dial(goodToken)
	c2.subscribe(AddressType, nil, known)
	r := c2.recv()
	want := respSummary{Resources: []string{uidOf(2), uidOf(4)}, Removed: []string{uidOf(3)}}
	if d := cmp.Diff(want, summary(r)); d != "" {
		t.Errorf("reconnect response (-want +got):\n%s", d)
	}
	c2.ack(r)
	eventually(t, "reconnect acked", func() bool { s, _ := f.typeStatus(AddressType); return s.Acked == 4 })
}

func TestNACKIsRecordedNotResentAndAFixIsSent(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.connect()

	f.update(AddressType, map[string]proto.Message{uidOf(1): workload(uidOf(1), "10.1.0.1", 2)})
	bad := c.recv()
	c.nack(bad, "bad workload "+uidOf(1))
	eventually(t, "NACK recorded", func() bool {
		s, _ := f.typeStatus(AddressType)
		return s.NACKs == 1 && s.InFlight == ""
	})
	s, _ := f.typeStatus(AddressType)
	if s.LastNack != "bad workload "+uidOf(1) || s.LastNackAt.IsZero() || s.Acked != 4 {
		t.Errorf("status %+v, want the NACK message and the 4 earlier acks kept", s)
	}
	if n := f.metric(metricNACKs, "istio.workload.Address"); n != 1 {
		t.Errorf("nacks = %v, want 1", n)
	}

	// An unrelated change goes out alone: the rejected one is not resent.
	f.update(AddressType, map[string]proto.Message{uidOf(2): workload(uidOf(2), "10.1.0.2", 2)})
	r := c.recv()
	if d := cmp.Diff(respSummary{Resources: []string{uidOf(2)}}, summary(r)); d != "" {
		t.Errorf("after NACK (-want +got):\n%s", d)
	}
	c.ack(r)

	// The fix is sent, and its ACK clears the error.
	f.update(AddressType, map[string]proto.Message{uidOf(1): workload(uidOf(1), "10.1.0.1", 3)})
	r = c.recv()
	if d := cmp.Diff(respSummary{Resources: []string{uidOf(1)}}, summary(r)); d != "" {
		t.Errorf("fix (-want +got):\n%s", d)
	}
	c.ack(r)
	eventually(t, "fix acked", func() bool { s, _ := f.typeStatus(AddressType); return s.LastNack == "" && s.InFlight == "" })
	c.noResponse()
}

func TestOneResponseInFlightPerType(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.connect()

	f.update(AddressType, map[string]proto.Message{uidOf(1): workload(uidOf(1), "10.1.0.1", 2)})
	r1 := c.recv()
	// Not acked yet: the next change waits.
	f.update(AddressType, map[string]proto.Message{uidOf(2): workload(uidOf(2), "10.1.0.2", 2)})
	eventually(t, "push held for the ACK", func() bool { s, _ := f.typeStatus(AddressType); return s.Waiting })
	c.noResponse()

	// Another type is not held up by it.
	f.update(AuthorizationType, map[string]proto.Message{"default/deny": &security.Authorization{Name: "deny", Namespace: "default"}})
	c.subscribe(AuthorizationType, nil, nil)
	if r := c.recv(); r.TypeUrl != AuthorizationType {
		t.Fatalf("got %s, want the Authorization response", r.TypeUrl)
	}

	c.ack(r1)
	r2 := c.recv()
	if d := cmp.Diff(respSummary{Resources: []string{uidOf(2)}}, summary(r2)); d != "" {
		t.Errorf("after ACK (-want +got):\n%s", d)
	}
}

// ztunnel with XDS_ON_DEMAND subscribes and unsubscribes "*" at once, then
// asks for names one by one.
func TestOnDemandSubscription(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.dial(goodToken)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType, ResourceNamesSubscribe: []string{"*"}, ResourceNamesUnsubscribe: []string{"*"}})
	eventually(t, "on-demand watch", func() bool { s, ok := f.typeStatus(AddressType); return ok && !s.Wildcard })
	c.noResponse()

	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType, ResourceNamesSubscribe: []string{uidOf(1), uidOf(9)}})
	r := c.recv()
	want := respSummary{Resources: []string{uidOf(1)}, Removed: []string{uidOf(9)}}
	if d := cmp.Diff(want, summary(r)); d != "" {
		t.Errorf("on-demand response (-want +got):\n%s", d)
	}
	c.ack(r)

	// Changes to names not subscribed are not sent; to subscribed ones are.
	f.update(AddressType, map[string]proto.Message{
		uidOf(2): workload(uidOf(2), "10.1.0.2", 2),
		uidOf(9): workload(uidOf(9), "10.1.0.9", 1),
	})
	r = c.recv()
	if d := cmp.Diff(respSummary{Resources: []string{uidOf(9)}}, summary(r)); d != "" {
		t.Errorf("on-demand change (-want +got):\n%s", d)
	}
}

func TestUnauthenticatedStreamIsRefused(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	for name, token := range map[string]string{"no token": "", "wrong token": "stolen"} {
		t.Run(name, func(t *testing.T) {
			c := f.dial(token)
			c.subscribe(AddressType, nil, nil)
			select {
			case err := <-c.done:
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("stream ended with %v, want Unauthenticated", err)
				}
			case r := <-c.resps:
				t.Errorf("got a response: %+v", summary(r))
			case <-time.After(waitFor):
				t.Error("stream not refused")
			}
		})
	}
	if n := len(f.srv.Streams()); n != 0 {
		t.Errorf("%d streams registered, want 0", n)
	}
}

func TestStateOfTheWorldIsUnimplemented(t *testing.T) {
	f := newFixture(t, Config{})
	c := f.dial(goodToken)
	s, err := discovery.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unimplemented {
		t.Errorf("got %v, want Unimplemented", err)
	}
}

func TestStreamCloseReleasesEverything(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.connect()
	eventually(t, "stream registered", func() bool { return len(f.srv.Streams()) == 1 })
	c.close()
	eventually(t, "stream gone", func() bool {
		return len(f.srv.Streams()) == 0 && f.metric(metricConnected, "") == 0
	})
	// Changes after the close reach nobody and block nothing.
	f.update(AddressType, nil, uidOf(1))
	checkNoLeaks(t) // the client side is closed; only the server is left
}

// After a reconnect ztunnel lists on-demand names it asked for but never
// received with an empty version: one that does not exist must still be
// reported removed, or ztunnel waits for it forever.
func TestReconnectWithEmptyInitialVersion(t *testing.T) {
	f := newFixture(t, Config{})
	f.world()
	c := f.dial(goodToken)
	c.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl:                 AddressType,
		ResourceNamesSubscribe:  []string{uidOf(1), uidOf(9)},
		InitialResourceVersions: map[string]string{uidOf(9): ""},
	})
	r := c.recv()
	want := respSummary{Resources: []string{uidOf(1)}, Removed: []string{uidOf(9)}}
	if d := cmp.Diff(want, summary(r)); d != "" {
		t.Errorf("response (-want +got):\n%s", d)
	}
}
