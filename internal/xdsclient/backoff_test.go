package xdsclient

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Attempts that fail before any network I/O (no token) run on synctest's
// fake clock: the schedule is exact. Streams over real sockets cannot run
// in a bubble, so the network tests use short real backoffs instead.
func TestBackoffScheduleOnFailedAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var attempts []time.Duration
		start := time.Now()
		c, err := New(Config{
			Address: "istiod.istio-system.svc:15012",
			Token: func(context.Context) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				attempts = append(attempts, time.Since(start))
				return "", errors.New("token file not mounted yet")
			},
			Backoff: Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.rand = func() float64 { return 0.5 } // the middle of the jitter range
		if err := c.Watch("type.googleapis.com/istio.workload.Address", func([]Resource, []string) error { return nil }); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()

		time.Sleep(3 * time.Second)
		synctest.Wait()
		st := c.Status()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}

		ms := time.Millisecond
		want := []time.Duration{0, 100 * ms, 300 * ms, 700 * ms, 1500 * ms, 2500 * ms}
		if d := cmp.Diff(want, attempts); d != "" {
			t.Errorf("attempt times (-want +got):\n%s", d)
		}
		if st.State != StateBackoff || st.Attempts != 6 || !st.NextAttempt.Equal(start.Add(3500*ms)) ||
			!strings.Contains(st.LastError, "token file not mounted yet") {
			t.Errorf("status %+v, want backing off until 3.5s after 6 attempts, with the token error", st)
		}
		if st := c.Status(); st.State != StateStopped {
			t.Errorf("state after Run returned: %s", st.State)
		}
	})
}

func TestBackoffJitterAndReset(t *testing.T) {
	cfg := Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Jitter: 0.2}
	r := 0.0
	b := newBackoff(cfg, func() float64 { return r })
	var got []time.Duration
	for range 4 {
		got = append(got, b.delay())
	}
	r = 0.999999
	got = append(got, b.delay())
	b.reset()
	r = 0.5
	got = append(got, b.delay(), b.delay())
	ms := time.Millisecond
	want := []time.Duration{80 * ms, 160 * ms, 320 * ms, 320 * ms, 479999616 * time.Nanosecond, 100 * ms, 200 * ms}
	opt := cmp.Comparer(func(a, b time.Duration) bool { return (a - b).Abs() < time.Microsecond })
	if d := cmp.Diff(want, got, opt); d != "" {
		t.Errorf("delays (-want +got):\n%s", d)
	}
}
