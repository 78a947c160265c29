package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

var (
	// errBodyTooLarge ends a request body that grew past
	// Limits.MaxRequestBody.
	errBodyTooLarge = errors.New("request body larger than the limit")
	// errBodyGone is what a reader of an abandoned attempt, or a mirror
	// that fell behind a body too large to keep, reads.
	errBodyGone = errors.New("request body no longer available to this reader")
)

// limitedBody is the client's request body: it counts the bytes read and
// fails once more than max arrived.
type limitedBody struct {
	rc       io.ReadCloser
	max      int64 // < 0: no limit
	n        atomic.Int64
	tooLarge atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.tooLarge.Load() {
		return 0, errBodyTooLarge
	}
	n, err := b.rc.Read(p)
	total := b.n.Add(int64(n))
	if b.max >= 0 && total > b.max {
		b.tooLarge.Store(true)
		return 0, errBodyTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// bodyTap shares one request body between the attempts that forward it and
// the mirrors that copy it. It keeps the first limit bytes read: an attempt
// that failed can be replayed by the next one, and mirrors read the same
// bytes. Only attempts ("leaders") pull from the client, one at a time;
// mirrors ("followers") read what is kept and wait for more. Once the body
// outgrows limit nothing is kept: the attempt reading it continues, but no
// further attempt can start and mirrors fail.
type bodyTap struct {
	src   io.Reader
	limit int

	mu       sync.Mutex
	cond     sync.Cond
	buf      []byte // bytes [0, n) while !overflow
	n        int64  // bytes read from src
	reading  bool   // a leader is in src.Read
	eof      bool
	err      error // from src, other than EOF
	overflow bool
	finished bool // the request is over: waiting followers give up
}

func newBodyTap(src io.Reader, limit int) *bodyTap {
	t := &bodyTap{src: src, limit: limit}
	t.cond.L = &t.mu
	return t
}

// replayable reports whether a new attempt can still send the whole body.
func (t *bodyTap) replayable() bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.overflow
}

// finish marks the request over: followers waiting for bytes no leader
// will read give up. Kept bytes stay readable.
func (t *bodyTap) finish() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.finished = true
	t.mu.Unlock()
	t.cond.Broadcast()
}

// reader returns a reader of the whole body: a leader pulls from the client
// when it has read everything kept; a follower only waits.
func (t *bodyTap) reader(leader bool) *tapReader {
	return &tapReader{t: t, leader: leader}
}

// tapReader is one reader of a bodyTap. Close abandons it: later reads fail
// without touching the client's body (a transport may read after
// RoundTrip returned).
type tapReader struct {
	t      *bodyTap
	leader bool
	pos    int64
	closed bool // guarded by t.mu
}

func (r *tapReader) Read(p []byte) (int, error) {
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		switch {
		case r.closed:
			return 0, errBodyGone
		case r.pos < t.n && t.overflow:
			return 0, errBodyGone
		case r.pos < t.n:
			n := copy(p, t.buf[r.pos:])
			r.pos += int64(n)
			return n, nil
		case t.eof:
			return 0, io.EOF
		case t.err != nil:
			return 0, t.err
		case len(p) == 0:
			return 0, nil
		case !r.leader && t.finished:
			return 0, errBodyGone
		case !r.leader || t.reading:
			t.cond.Wait()
			continue
		}
		// A leader that has read everything: pull from the client, without
		// holding the lock (followers and replay checks must not wait on
		// the client).
		t.reading = true
		t.mu.Unlock()
		n, err := t.src.Read(p)
		t.mu.Lock()
		t.reading = false
		if n > 0 {
			if !t.overflow && len(t.buf)+n <= t.limit {
				t.buf = append(t.buf, p[:n]...)
			} else if !t.overflow {
				t.overflow, t.buf = true, nil
			}
			t.n += int64(n)
		}
		switch {
		case err == io.EOF:
			t.eof = true
		case err != nil:
			t.err = err
		}
		t.cond.Broadcast()
		if r.closed {
			return 0, errBodyGone // the bytes are kept for the next attempt
		}
		r.pos += int64(n)
		return n, err
	}
}

func (r *tapReader) Close() error {
	r.t.mu.Lock()
	r.closed = true
	r.t.mu.Unlock()
	r.t.cond.Broadcast()
	return nil
}
