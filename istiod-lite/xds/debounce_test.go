package xds

import (
	"testing"
	"time"
)

// The quiet period restarts with every change but never runs past
// DebounceMax from the first change of the burst.
func TestDebounceDelay(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	st := &stream{srv: &Server{cfg: Config{Debounce: 100 * ms, DebounceMax: time.Second}}}
	for _, tc := range []struct {
		name             string
		first, last, now time.Duration
		want             time.Duration
	}{
		{"single change", 0, 0, 0, 100 * ms},
		{"later change restarts the window", 0, 80 * ms, 100 * ms, 80 * ms},
		{"window elapsed", 0, 0, 150 * ms, -50 * ms},
		{"capped by max", 0, 950 * ms, 960 * ms, 40 * ms},
		{"past max", 0, 1200 * ms, 1200 * ms, -200 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st.burstStart, st.burstLast = t0.Add(tc.first), t0.Add(tc.last)
			if got := st.debounceDelay(t0.Add(tc.now)); got != tc.want {
				t.Errorf("delay %v, want %v", got, tc.want)
			}
		})
	}
}
