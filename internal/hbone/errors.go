package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// StatusError is returned by Dialer.DialContext when the HBONE server answered
// the CONNECT with a status other than 200.
type StatusError struct {
	Code      int    // HTTP status: 400, 401, 503, …
	Authority string // the destination that was asked for
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: tunnel to %s refused: %d %s", e.Authority, e.Code, http.StatusText(e.Code))
}

// Retryable reports whether trying again (perhaps on another endpoint) may
// succeed: true for 503 (the upstream dial failed) and other 5xx, false for
// 4xx (the request or policy says no).
func (e *StatusError) Retryable() bool { return e.Code >= 500 }

// IdentityError is returned by Dialer.DialContext when the server's
// certificate does not carry the expected SPIFFE identity. It means the next
// hop is not who the control plane said it is: do not retry blindly.
type IdentityError struct {
	Address string   // next hop dialled
	Want    Identity // Target.Destination
	Got     string   // what the certificate said, or why it said nothing usable
}

func (e *IdentityError) Error() string {
	return fmt.Sprintf("hbone: %s presented identity %s, want %s: the destination's identity in the workload config does not match its certificate", e.Address, e.Got, e.Want)
}

// ConnError wraps a failure to reach the next hop or to keep the HTTP/2
// connection to it: the TCP dial, the TLS handshake (other than an identity
// mismatch), or the connection dying before the server answered. It is safe
// to retry.
type ConnError struct {
	Op      string // "dial", "handshake" or "connection"
	Address string // next hop
	Err     error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("hbone: %s %s: %v", e.Op, e.Address, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// Retryable reports whether err from Dialer.DialContext describes a failure
// that another attempt may not hit: a connection-level failure or a 5xx. It is
// false for 4xx answers, identity mismatches, invalid targets and a done
// context.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Retryable()
	}
	var ie *IdentityError
	if errors.As(err, &ie) {
		return false
	}
	var ce *ConnError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// errStreamRefused is the error of a stream the server did not process
// (REFUSED_STREAM, or above the last stream id of a GOAWAY): the dialer
// retries it on another connection.
var errStreamRefused = errors.New("hbone: stream refused by server before processing")
