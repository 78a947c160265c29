package xdsclient

import (
	"math/rand/v2"
	"time"
)

// backoff is the delay schedule between stream attempts: Initial doubling
// up to Max, each delay varied by ±Jitter.
type backoff struct {
	cfg  Backoff
	rand func() float64 // in [0, 1)
	next time.Duration  // un-jittered delay of the next wait
}

func newBackoff(cfg Backoff, r func() float64) *backoff {
	if r == nil {
		r = rand.Float64
	}
	return &backoff{cfg: cfg, rand: r, next: cfg.Initial}
}

// delay returns how long to wait before the next attempt and doubles the
// one after.
func (b *backoff) delay() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.cfg.Max)
	// Uniform in [d(1-j), d(1+j)).
	return time.Duration(float64(d) * (1 + b.cfg.Jitter*(2*b.rand()-1)))
}

// reset starts the schedule over, after a healthy stream.
func (b *backoff) reset() { b.next = b.cfg.Initial }
