package router

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Action is what a Rule does.
type Action uint8

const (
	Forward Action = iota
	Redirect
	DirectResponse
)

var actionNames = [...]string{"forward", "redirect", "direct response"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown action"
}

// Rule is one compiled route rule.
type Rule struct {
	Origin *routeapi.Origin
	Action Action
	// DirectStatus and DirectReason: for DirectResponse.
	DirectStatus int
	DirectReason string
	// Backends: for Forward; never empty then.
	Backends []*Backend
	// RequestTimeout and BackendTimeout: 0 means none.
	RequestTimeout time.Duration
	BackendTimeout time.Duration
	// Retry: nil means no retries.
	Retry *Retry
	// CORS: the rule's CORS filter, if any.
	CORS *CORS
	// Mirrors: the rule's RequestMirror filters.
	Mirrors []Mirror

	request     []requestFilter // RequestHeaderModifier and URLRewrite, in order
	response    []*headerModifier
	redirect    *redirect // for Redirect
	totalWeight uint64    // sum of the Backends' weights
	serviceHost string    // the Service's hostname: redirect host of a request without Host
}

// Retry is a rule's retry policy.
type Retry struct {
	Attempts int           // retries after the first attempt, >= 1
	Codes    []int         // response statuses retried, ascending
	Backoff  time.Duration // minimum wait before each retry
}

// Retryable reports whether a response status is to be retried. A nil
// Retry retries nothing.
func (r *Retry) Retryable(status int) bool {
	if r == nil {
		return false
	}
	_, ok := slices.BinarySearch(r.Codes, status)
	return ok
}

// Backend is one weighted backend of a Forward rule.
type Backend struct {
	Weight uint32
	// Destination is where to send; nil when the backendRef is invalid
	// (Invalid says why): answer 500 (gRPC: UNAVAILABLE).
	Destination *routeapi.Destination
	Invalid     string
	// Mirrors: the backend's own RequestMirror filters (sent in addition to
	// the rule's when this backend is picked).
	Mirrors []Mirror

	request  []requestFilter
	response []*headerModifier
}

// Pick chooses a backend by weight using rnd: each with probability
// Weight / (sum of the weights). rnd is not used when there is one backend;
// nil uses math/rand/v2's global source (a *rand.Rand is not safe for
// concurrent use, the global source is). Nil for a rule that does not
// forward.
func (r *Rule) Pick(rnd *rand.Rand) *Backend {
	switch {
	case len(r.Backends) == 0:
		return nil
	case len(r.Backends) == 1:
		return r.Backends[0]
	}
	var n uint64
	if rnd != nil {
		n = rnd.Uint64N(r.totalWeight)
	} else {
		n = rand.Uint64N(r.totalWeight)
	}
	for _, b := range r.Backends {
		if n < uint64(b.Weight) {
			return b
		}
		n -= uint64(b.Weight)
	}
	return r.Backends[len(r.Backends)-1] // not reached: n < totalWeight
}

// Mirror is one RequestMirror filter.
type Mirror struct {
	Destination *routeapi.Destination
	Numerator   uint32
	Denominator uint32
}

// Sample reports whether this request is mirrored (numerator/denominator).
// rnd is used only for a fraction strictly between 0 and 1; nil uses
// math/rand/v2's global source.
func (m Mirror) Sample(rnd *rand.Rand) bool {
	switch {
	case m.Numerator == 0 || m.Denominator == 0:
		return false
	case m.Numerator >= m.Denominator:
		return true
	case rnd != nil:
		return rnd.Uint32N(m.Denominator) < m.Numerator
	default:
		return rand.Uint32N(m.Denominator) < m.Numerator
	}
}
