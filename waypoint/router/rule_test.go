package router

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// TestPick: each backend gets weight/sum of the requests (HTTPRouteWeight
// sends 70/30/0 and accepts a few percent of error); an invalid backend
// keeps its share (it answers 500).
func TestPick(t *testing.T) {
	r := compileOne(t, &routeapi.Rule{Action: &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{
		backend("a", 70),
		backend("b", 20),
		{Weight: 10, Target: &routeapi.Backend_Invalid{Invalid: "service mesh/c not found"}},
	}}}})
	const n = 100_000
	rnd := rand.New(rand.NewPCG(1, 2))
	counts := map[*Backend]int{}
	for range n {
		counts[r.Pick(rnd)]++
	}
	for _, b := range r.Backends {
		want := float64(b.Weight) / 100
		if got := float64(counts[b]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("backend %v (weight %d): share %.3f, want %.2f ± 0.01", b.Destination.GetName(), b.Weight, got, want)
		}
	}
	if inv := r.Backends[2]; inv.Destination != nil || inv.Invalid != "service mesh/c not found" {
		t.Errorf("invalid backend: %+v", inv)
	}

	// The same seed picks the same backends.
	a, b := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
	for range 100 {
		if r.Pick(a) != r.Pick(b) {
			t.Fatal("Pick is not deterministic for a seeded source")
		}
	}
	// The global source works too.
	for range 100 {
		if r.Pick(nil) == nil {
			t.Fatal("Pick(nil) = nil")
		}
	}
}

func TestPickSingleAndNone(t *testing.T) {
	one := compileOne(t, forwardRule("only"))
	if got := one.Pick(nil); got != one.Backends[0] {
		t.Errorf("one backend: Pick = %v", got)
	}
	redirect := compileOne(t, redirectRule(&routeapi.Redirect{Scheme: "http", StatusCode: 302}))
	if redirect.Pick(nil) != nil {
		t.Error("a redirect rule picked a backend")
	}
}

func TestMirrorSample(t *testing.T) {
	const n = 100_000
	for _, tc := range []struct {
		name     string
		num, den uint32
		want     float64
	}{
		{"no fraction is 1/1: always", 1, 1, 1},
		{"percent 0: never", 0, 100, 0},
		{"percent 100: always", 100, 100, 1},
		{"percent 20", 20, 100, 0.2},
		{"fraction 1/3", 1, 3, 1.0 / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Mirror{Destination: dest("m"), Numerator: tc.num, Denominator: tc.den}
			rnd := rand.New(rand.NewPCG(3, 4))
			hits := 0
			for range n {
				if m.Sample(rnd) {
					hits++
				}
			}
			if got := float64(hits) / n; math.Abs(got-tc.want) > 0.01 {
				t.Errorf("share %.3f, want %.3f", got, tc.want)
			}
		})
	}
}

// TestMirrors: the rule's and each backend's RequestMirror filters are
// kept apart, in order.
func TestMirrors(t *testing.T) {
	r := compileOne(t, &routeapi.Rule{
		Filters: []*routeapi.Filter{mirrorFilter("m1", 1, 1), mirrorFilter("m2", 1, 2)},
		Action: &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{
			backend("a", 1, mirrorFilter("m3", 1, 100)),
		}}},
	})
	if len(r.Mirrors) != 2 || r.Mirrors[0].Destination.Name != "m1" || r.Mirrors[1].Denominator != 2 {
		t.Errorf("rule mirrors: %+v", r.Mirrors)
	}
	if m := r.Backends[0].Mirrors; len(m) != 1 || m[0].Destination.Name != "m3" || m[0].Numerator != 1 || m[0].Denominator != 100 {
		t.Errorf("backend mirrors: %+v", m)
	}
}

func TestRetryable(t *testing.T) {
	r := &Retry{Attempts: 2, Codes: []int{500, 502, 503}}
	for status, want := range map[int]bool{500: true, 502: true, 503: true, 501: false, 200: false, 504: false} {
		if got := r.Retryable(status); got != want {
			t.Errorf("Retryable(%d) = %v, want %v", status, got, want)
		}
	}
	var none *Retry
	if none.Retryable(503) {
		t.Error("a nil Retry retries")
	}
}

func TestDirectResponse(t *testing.T) {
	r := compileOne(t, &routeapi.Rule{Action: &routeapi.Rule_DirectResponse{DirectResponse: &routeapi.DirectResponse{Status: 500, Reason: "no backend with a weight"}}})
	if r.Action != DirectResponse || r.DirectStatus != 500 || r.DirectReason != "no backend with a weight" || r.Backends != nil {
		t.Errorf("%v %d %q %v", r.Action, r.DirectStatus, r.DirectReason, r.Backends)
	}
}
