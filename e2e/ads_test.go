//go:build e2e

package e2e

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"istio.io/istio/pkg/workloadapi"
)

// adsClient is a delta ADS client as ztunnel is one: wildcard subscriptions
// to addresses and authorizations, every response ACKed.
type adsClient struct {
	mu      sync.Mutex
	state   adsState
	changed chan struct{}
	err     error
}

// adsState is what the client holds: resource name → message, per type.
type adsState struct {
	addresses map[string]*workloadapi.Address
	authz     map[string][]byte
}

func (s adsState) workload(uid string) *workloadapi.Workload {
	return s.addresses[uid].GetWorkload()
}

func openADS(t *testing.T, ctx context.Context, conn *grpc.ClientConn, token string) *adsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+token)))
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "ztunnel~10.250.0.1~e2e-fake-ztunnel.istio-system~istio-system.svc.cluster.local"}
	for _, typ := range []string{addressType, authzType} {
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	c := &adsClient{
		state:   adsState{addresses: map[string]*workloadapi.Address{}, authz: map[string][]byte{}},
		changed: make(chan struct{}, 1),
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				c.notify()
				return
			}
			c.apply(resp)
			if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
				return
			}
		}
	}()
	return c
}

func (c *adsClient) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *adsClient) apply(resp *discovery.DeltaDiscoveryResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs, authz := maps.Clone(c.state.addresses), maps.Clone(c.state.authz)
	for _, r := range resp.Resources {
		switch resp.TypeUrl {
		case addressType:
			a := &workloadapi.Address{}
			if err := r.Resource.UnmarshalTo(a); err != nil {
				c.err = err
				continue
			}
			addrs[r.Name] = a
		case authzType:
			authz[r.Name] = r.Resource.Value
		}
	}
	for _, n := range resp.RemovedResources {
		delete(addrs, n)
		delete(authz, n)
	}
	c.state = adsState{addresses: addrs, authz: authz}
	c.notify()
}

// waitFor waits until ok holds for the client's state and returns it.
func (c *adsClient) waitFor(t *testing.T, what string, timeout time.Duration, ok func(adsState) bool) adsState {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		s, err := c.state, c.err
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("%s: stream: %v", what, err)
		}
		if ok(s) {
			return s
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("%s: not seen within %v (%d addresses held)", what, timeout, len(s.addresses))
		}
	}
}
