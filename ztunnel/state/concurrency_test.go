package state

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// Readers run while responses apply (go test -race): each response
// replaces the service's only endpoint and the only matching ALLOW policy,
// so a reader that saw half a response would find no endpoint, or only
// the allow-nothing policy.
func TestConcurrentReadersDuringUpdates(t *testing.T) {
	const updates = 300
	s := storeWith(t, Config{}, []*workloadapi.Address{
		sAddr(service("shop", "web", "10.96.0.1", 80, 8080)),
		wAddr(pod("shop", "web-0", "10.244.0.1", inService("shop", "web", 80, 8080))),
		wAddr(pod("shop", "db", "10.244.1.1")),
	},
		policy("shop", "allow-nothing", security.Scope_NAMESPACE, security.Action_ALLOW),
		policy("shop", "allow-0", security.Scope_NAMESPACE, security.Action_ALLOW, group()),
	)

	var done atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 4 {
		wg.Go(func() {
			for !done.Load() {
				reads.Add(1)
				d, err := s.DestinationFor("", addr("10.96.0.1"), 80, nil)
				if err != nil || d.Workload == nil || d.Authority.Port() != 8080 {
					errs <- fmt.Errorf("reader %d: DestinationFor = %+v, %v", r, d, err)
					return
				}
				if ok, pol := s.Authorize(ConnInfo{SourceIdentity: id("shop", "x"), Source: ap("10.244.0.9:1"), Destination: ap("10.244.1.1:5432")}); !ok {
					errs <- fmt.Errorf("reader %d: denied (%q)", r, pol)
					return
				}
				if r == 0 {
					if _, err := json.Marshal(s.Snapshot()); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	for i := 1; i <= updates; i++ {
		next := pod("shop", fmt.Sprintf("web-%d", i), fmt.Sprintf("10.244.%d.%d", 2+i/250, i%250+1), inService("shop", "web", 80, 8080))
		if err := s.ApplyAddresses(typedAddrs(wAddr(next)), []string{uid("shop", fmt.Sprintf("web-%d", i-1))}); err != nil {
			t.Fatal(err)
		}
		if err := s.ApplyAuthorizations(typedPols(policy("shop", fmt.Sprintf("allow-%d", i), security.Scope_NAMESPACE, security.Action_ALLOW, group())),
			[]string{fmt.Sprintf("shop/allow-%d", i-1)}); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(s.Endpoints(svcKey("shop", "web"))); got != 1 {
		t.Errorf("%d endpoints at the end, want 1", got)
	}
	t.Logf("%d reads during %d updates", reads.Load(), updates)
}
