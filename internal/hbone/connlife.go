package hbone

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The life of an h2conn: stream slots, idle expiry, keepalive, shutdown.

// reserve takes a stream slot for a client stream about to be opened. It
// fails when the connection is closing or full.
func (c *h2conn) reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := c.cfg.maxStreams
	if uint32(limit) > c.peerMaxStreams {
		limit = int(c.peerMaxStreams)
	}
	if c.err != nil || c.goingAway || c.open+c.reserved >= limit || c.nextID > maxWindow-2*uint32(limit) {
		return false
	}
	c.reserved++
	c.stopIdleLocked()
	return true
}

// openStream opens a client stream on a reserved slot and sends its HEADERS.
func (c *h2conn) openStream(fields []hpack.HeaderField) (*Stream, error) {
	c.lockWriter()
	c.mu.Lock()
	c.reserved--
	if c.err != nil || c.goingAway {
		c.maybeIdleLocked()
		c.mu.Unlock()
		c.abortWriter()
		return nil, errStreamRefused
	}
	id := c.nextID
	c.nextID += 2
	st := c.addStreamLocked(id)
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	err := c.writeHeadersLocked(id, false, fields, maxFrame)
	if err != nil {
		c.abortWriter()
		c.close(fmt.Errorf("write: %w", err))
		return st, nil // the stream sees the connection error
	}
	c.unlockWriter()
	return st, nil
}

// maybeIdleLocked starts the idle timer when nothing uses the connection,
// and closes a connection that is going away once its last stream is done.
func (c *h2conn) maybeIdleLocked() {
	if c.open > 0 || c.reserved > 0 || c.err != nil {
		return
	}
	if c.goingAway {
		go c.close(errConnClosed)
		return
	}
	if c.cfg.idleTimeout <= 0 || c.idleTimer != nil {
		return
	}
	c.idleTimer = time.AfterFunc(c.cfg.idleTimeout, c.idleExpired)
}

func (c *h2conn) stopIdleLocked() {
	if c.idleTimer != nil {
		c.idleTimer.Stop()
		c.idleTimer = nil
	}
}

func (c *h2conn) idleExpired() {
	if c.onGone != nil {
		c.onGone(c) // out of the pool first, so nobody reserves it now
	}
	c.mu.Lock()
	if c.open > 0 || c.reserved > 0 || c.err != nil {
		// Raced with a new stream. A client connection is out of its pool
		// now, so let it finish its streams and go; a server connection
		// restarts the timer when it is next idle.
		c.idleTimer = nil
		if c.onGone != nil {
			c.goingAway = true
		}
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	c.queueCtrl(ctrlFrame{typ: http2.FrameGoAway, val: c.lastPeerID, code: http2.ErrCodeNo})
	c.mu.Unlock()
	c.kickWriter()
	c.cfg.logger.Debug("hbone: closing idle connection", "peer", c.nc.RemoteAddr())
	if c.client {
		c.close(errIdle)
		return
	}
	// A client may have sent HEADERS before it saw our GOAWAY: they are
	// refused (the client retries elsewhere) while we wait for it to close
	// the connection, which it does once it has no streams left.
	time.AfterFunc(goAwayGrace, func() { c.close(errIdle) })
}

// goAwayGrace is how long a server waits after an idle GOAWAY for the client
// to close the connection before closing it itself.
const goAwayGrace = time.Second

var errIdle = errors.New("idle timeout")

// shutdown sends GOAWAY (if the writer is free) and closes the connection.
func (c *h2conn) shutdown(err error) {
	c.mu.Lock()
	c.goingAway = true
	if c.err == nil {
		c.queueCtrl(ctrlFrame{typ: http2.FrameGoAway, val: c.lastPeerID, code: http2.ErrCodeNo})
	}
	c.mu.Unlock()
	c.kickWriter()
	c.close(err)
}

// close closes the connection with err, failing every stream. It is safe to
// call more than once and from any goroutine not holding c.mu.
func (c *h2conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.goingAway = true
	c.stopIdleLocked()
	op := "connection"
	if !c.gotFrame.Load() {
		op = "handshake" // TLS 1.3: a rejected client certificate shows here
	}
	cerr := &ConnError{Op: op, Address: c.nc.RemoteAddr().String(), Err: err}
	for _, st := range c.streams {
		if st.reset == nil {
			st.resetLocked(cerr)
		}
	}
	close(c.closed)
	c.mu.Unlock()
	c.nc.Close()
	if c.onGone != nil {
		c.onGone(c)
	}
}

// keepAliveLoop pings a peer that has sent nothing for cfg.keepAlive and
// closes the connection if no ack comes within cfg.keepAliveTimeout.
func (c *h2conn) keepAliveLoop() {
	defer close(c.kaDone)
	if c.cfg.keepAlive <= 0 {
		return
	}
	t := time.NewTimer(c.cfg.keepAlive)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		quiet := time.Since(time.Unix(0, c.lastRead.Load()))
		if quiet < c.cfg.keepAlive {
			t.Reset(c.cfg.keepAlive - quiet)
			continue
		}
		select {
		case <-c.pingAck: // drop a stale ack
		default:
		}
		c.mu.Lock()
		c.queueCtrl(ctrlFrame{typ: http2.FramePing, ping: [8]byte{'h', 'b', 'o', 'n', 'e'}})
		c.mu.Unlock()
		c.kickWriter()
		t.Reset(c.cfg.keepAliveTimeout)
		select {
		case <-c.closed:
			return
		case <-c.pingAck:
			t.Reset(c.cfg.keepAlive) // Go 1.23+ timers: Reset needs no drain
		case <-t.C:
			c.cfg.logger.Warn("hbone: peer did not answer keepalive PING; closing connection", "peer", c.nc.RemoteAddr(), "timeout", c.cfg.keepAliveTimeout)
			c.close(fmt.Errorf("keepalive: no PING ack within %v", c.cfg.keepAliveTimeout))
			return
		}
	}
}
