package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Stream is one HBONE tunnel: an HTTP/2 CONNECT stream used as a net.Conn.
// Dialer.DialContext returns it once the server answered 200; Server.Handle
// receives it after the 200 was sent.
//
// Write sends DATA; CloseWrite sends END_STREAM (the peer reads EOF) and Read
// returns io.EOF once the peer did the same. Close is like closing a TCP
// socket (see Close) and must be called to release the stream. Deadlines work
// as on any net.Conn.
type Stream struct {
	c  *h2conn
	id uint32

	local, remote net.Addr
	peer          Identity

	writeMu sync.Mutex // orders DATA and END_STREAM of concurrent writers

	// Guarded by c.mu.
	recv        recvBuffer
	recvWindow  int64 // bytes the peer may still send
	recvUnacked int64 // consumed, not yet returned with WINDOW_UPDATE
	recvEnd     bool  // peer sent END_STREAM
	sendWindow  int64
	sentEnd     bool  // we sent (or are sending) END_STREAM
	reset       error // non-nil once reset by either side or the connection died
	closedLocal bool  // Close was called
	counted     bool  // still counted in c.open
	status      int   // client: response status, 0 until it arrives
	up          bool  // the 200 was sent or received: the tunnel is established
	respClosed  bool  // client: respDone is closed

	respDone  chan struct{} // client: closed when status is set or the stream failed
	readWake  chan struct{}
	writeWake chan struct{}
	cancel    context.CancelFunc // server: cancels the stream's context
	rdl, wdl  deadline
}

var (
	errStreamClosedLocally = errors.New("hbone: stream closed")
	errWriteAfterClose     = errors.New("hbone: write after CloseWrite")
)

// Read reads tunnel bytes sent by the peer.
func (st *Stream) Read(p []byte) (int, error) {
	c := st.c
	c.mu.Lock()
	for {
		if st.rdl.expired() {
			c.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if st.closedLocal {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if st.recv.n > 0 {
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := st.recv.read(p)
			c.creditConnLocked(int64(n))
			st.creditLocked(int64(n))
			c.mu.Unlock()
			c.kickWriter()
			return n, nil
		}
		if st.recvEnd {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if st.reset != nil {
			err := st.reset
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		select {
		case <-st.readWake:
		case <-st.rdl.wait():
		}
		c.mu.Lock()
	}
}

// creditLocked records n bytes consumed on the stream and queues a
// WINDOW_UPDATE once a quarter of the window is owed.
func (st *Stream) creditLocked(n int64) {
	if st.recvEnd || st.reset != nil {
		return
	}
	st.recvUnacked += n
	if w := int64(st.c.cfg.streamWindow); st.recvUnacked >= w/4 {
		st.c.queueCtrl(ctrlFrame{typ: http2.FrameWindowUpdate, stream: st.id, val: uint32(st.recvUnacked)})
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
	}
}

// Write sends p to the peer, waiting for flow-control credit as needed.
func (st *Stream) Write(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	written := 0
	for len(p) > 0 {
		n, maxFrame, err := st.reserveSend(len(p))
		if err != nil {
			return written, err
		}
		c := st.c
		c.lockWriter()
		err = c.writeDataLocked(st.id, p[:n], false, maxFrame)
		if err != nil {
			c.abortWriter()
			c.close(err)
			return written, st.writeErr()
		}
		c.unlockWriter()
		written += n
		p = p[n:]
	}
	return written, nil
}

// reserveSend waits until the stream and the connection windows allow
// sending and takes up to want bytes of both.
func (st *Stream) reserveSend(want int) (n, maxFrame int, err error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if err := st.writeErrLocked(); err != nil {
			return 0, 0, err
		}
		if st.wdl.expired() {
			return 0, 0, os.ErrDeadlineExceeded
		}
		m := min(int64(want), st.sendWindow, c.sendWindow, maxWriteBatch)
		if m > 0 {
			st.sendWindow -= m
			c.sendWindow -= m
			return int(m), int(c.peerMaxFrame), nil
		}
		c.mu.Unlock()
		select {
		case <-st.writeWake:
		case <-st.wdl.wait():
		case <-c.closed:
		}
		c.mu.Lock()
	}
}

func (st *Stream) writeErr() error {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	return st.writeErrLocked()
}

func (st *Stream) writeErrLocked() error {
	switch {
	case st.closedLocal:
		return net.ErrClosed
	case st.reset != nil:
		return st.reset
	case st.sentEnd:
		return errWriteAfterClose
	}
	return nil
}

// CloseWrite sends END_STREAM: the peer reads EOF, and on the server the
// upstream connection is half-closed. Reading continues to work.
func (st *Stream) CloseWrite() error {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.closeWriteLocked()
}

// closeWriteLocked sends END_STREAM; the caller holds writeMu.
func (st *Stream) closeWriteLocked() error {
	c := st.c
	c.lockWriter()
	c.mu.Lock()
	if err := st.writeErrLocked(); err != nil && !(st.closedLocal && st.reset == nil && !st.sentEnd) {
		c.mu.Unlock()
		c.abortWriter()
		return err
	}
	st.sentEnd = true
	st.maybeDoneLocked()
	c.mu.Unlock()
	if err := c.writeDataLocked(st.id, nil, true, defaultMaxFrame); err != nil {
		c.abortWriter()
		c.close(err)
		return err
	}
	c.unlockWriter()
	return nil
}

// Close releases the stream, like closing a TCP socket: if everything the
// peer sent was read, our side ends cleanly (END_STREAM if not sent yet) and
// data the peer sends later is answered with RST_STREAM; if unread data is
// left, or the tunnel was never established (a DialContext giving up), the
// stream is reset with CANCEL, which the peer sees as an error.
func (st *Stream) Close() error {
	c := st.c
	c.mu.Lock()
	if st.closedLocal {
		c.mu.Unlock()
		return nil
	}
	st.closedLocal = true
	wake(st.readWake)
	wake(st.writeWake)
	graceful := false
	switch {
	case st.reset != nil || (st.sentEnd && st.recvEnd):
		// Nothing left to tell the peer.
	case st.up && st.recv.n == 0 && !st.sentEnd:
		graceful = true // END_STREAM below; later DATA is answered with RST_STREAM
	default:
		// A server that has sent its whole response asks the client to stop
		// with NO_ERROR (RFC 9113 §8.1); anything else is a cancellation.
		code := http2.ErrCodeCancel
		if st.sentEnd && !c.client {
			code = http2.ErrCodeNo
		}
		st.resetLocked(errStreamClosedLocally)
		c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: st.id, code: code})
	}
	st.discardLocked()
	st.maybeDoneLocked()
	c.mu.Unlock()
	c.kickWriter()
	if !graceful {
		return nil
	}
	// A concurrent Write may hold writeMu while blocked on the network;
	// then a reset is the only way out.
	if !st.writeMu.TryLock() {
		c.resetStream(st.id, http2.ErrCodeCancel, errStreamClosedLocally)
		return nil
	}
	defer st.writeMu.Unlock()
	st.closeWriteLocked()
	return nil
}

// resetLocked marks the stream reset with err and wakes everyone waiting on
// it. It does not send RST_STREAM; callers queue one when the reset is ours.
func (st *Stream) resetLocked(err error) {
	st.reset = err
	if st.respDone != nil && !st.respClosed {
		st.respClosed = true
		close(st.respDone)
	}
	wake(st.readWake)
	wake(st.writeWake)
	st.maybeDoneLocked()
}

// maybeDoneLocked updates the connection's accounting once the stream is
// closed in both directions (or reset), and forgets it once also Closed.
func (st *Stream) maybeDoneLocked() {
	c := st.c
	done := st.reset != nil || (st.sentEnd && st.recvEnd)
	if done && st.counted {
		st.counted = false
		c.open--
		if st.cancel != nil {
			st.cancel()
		}
		c.maybeIdleLocked()
	}
	if done && st.closedLocal {
		if c.streams[st.id] == st {
			delete(c.streams, st.id)
		}
		st.discardLocked()
	}
}

// discardLocked drops unread data, returning its share of the connection
// window to the peer (else every stream closed with unread bytes would
// shrink the window for good).
func (st *Stream) discardLocked() {
	if n := st.recv.n; n > 0 {
		st.c.creditConnLocked(int64(n))
	}
	st.recv.release()
}

// LocalAddr returns the local address of the HBONE connection on the client,
// and the destination (the authority) on the server.
func (st *Stream) LocalAddr() net.Addr { return st.local }

// RemoteAddr returns the destination (the authority) on the client, and the
// address of the HBONE peer on the server.
func (st *Stream) RemoteAddr() net.Addr { return st.remote }

// PeerIdentity returns the verified SPIFFE identity of the other end of the
// HBONE connection.
func (st *Stream) PeerIdentity() Identity { return st.peer }

// SetDeadline sets the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	st.SetWriteDeadline(t)
	return nil
}

// SetReadDeadline sets the deadline for Read calls, including one blocked now.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.rdl.set(t)
	wake(st.readWake) // a blocked Read re-checks with the new deadline
	return nil
}

// SetWriteDeadline sets the deadline for Write calls waiting for
// flow-control credit. A Write already handing bytes to the network is not
// interrupted.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.wdl.set(t)
	wake(st.writeWake)
	return nil
}

// deadline is a settable deadline with a channel that is closed when it
// passes. The zero value has no deadline.
type deadline struct {
	mu    sync.Mutex
	gen   uint64
	ch    chan struct{} // nil: no deadline set
	timer *time.Timer
	fired bool
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.ch == nil || d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		d.fired = true
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen && !d.fired {
			close(d.ch)
			d.fired = true
		}
	})
}

// wait returns a channel closed when the deadline passes (nil if none is set).
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func (d *deadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fired
}

// recvBuffer queues received DATA in pooled fixed-size chunks, so a stream
// holds memory only for bytes not yet read.
type recvBuffer struct {
	chunks []*[recvChunkSize]byte
	r, w   int // read offset in chunks[0]; write offset in the last chunk
	n      int // bytes buffered
}

const recvChunkSize = 32 << 10

var recvChunkPool = sync.Pool{New: func() any { return new([recvChunkSize]byte) }}

func (b *recvBuffer) write(p []byte) {
	for len(p) > 0 {
		if len(b.chunks) == 0 || b.w == recvChunkSize {
			b.chunks = append(b.chunks, recvChunkPool.Get().(*[recvChunkSize]byte))
			b.w = 0
		}
		k := copy(b.chunks[len(b.chunks)-1][b.w:], p)
		b.w += k
		b.n += k
		p = p[k:]
	}
}

func (b *recvBuffer) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		end := recvChunkSize
		if len(b.chunks) == 1 {
			end = b.w
		}
		k := copy(p, b.chunks[0][b.r:end])
		b.r += k
		b.n -= k
		total += k
		p = p[k:]
		if b.r == end {
			b.dropFirst()
		}
	}
	return total
}

func (b *recvBuffer) dropFirst() {
	recvChunkPool.Put(b.chunks[0])
	copy(b.chunks, b.chunks[1:])
	b.chunks[len(b.chunks)-1] = nil
	b.chunks = b.chunks[:len(b.chunks)-1]
	b.r = 0
	if len(b.chunks) == 0 {
		b.w = 0
	}
}

// release returns every chunk to the pool, discarding unread bytes.
func (b *recvBuffer) release() {
	for len(b.chunks) > 0 {
		b.dropFirst()
	}
	b.n = 0
}
