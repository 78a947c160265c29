package hbone

import (
	"fmt"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The write side of h2conn. Every write happens under wmu, inside a wire
// batch, and ends with unlockWriter, which also sends the control frames the
// read loop queued.

// queueCtrl queues a control frame. The caller must call kickWriter after
// releasing c.mu (never while holding it: the writer may block on the network).
func (c *h2conn) queueCtrl(f ctrlFrame) {
	c.ctrlMu.Lock()
	c.ctrl = append(c.ctrl, f)
	c.ctrlPending.Store(true)
	c.ctrlMu.Unlock()
}

// kickWriter sends queued control frames unless another goroutine holds the
// write lock, in which case that goroutine sends them when it releases it.
func (c *h2conn) kickWriter() {
	if c.ctrlPending.Load() && c.wmu.TryLock() {
		c.wire.begin()
		c.unlockWriter()
	}
}

// lockWriter takes the write lock and opens a wire batch: everything written
// until unlockWriter leaves in one system call.
func (c *h2conn) lockWriter() {
	c.wmu.Lock()
	c.wire.begin()
}

// abortWriter releases the write lock after a failed write, sending what
// the batch holds (the connection is being closed anyway).
func (c *h2conn) abortWriter() {
	c.wire.end()
	c.wmu.Unlock()
}

// unlockWriter writes queued control frames, flushes, and releases the write
// lock. It loops so that a frame queued while it was releasing is not
// stranded.
func (c *h2conn) unlockWriter() {
	for {
		err := c.writeCtrlLocked()
		if err == nil && c.bw.Buffered() > 0 {
			err = c.bw.Flush()
		}
		if werr := c.wire.end(); err == nil {
			err = werr
		}
		c.wmu.Unlock()
		if err != nil {
			c.close(fmt.Errorf("write: %w", err))
			return
		}
		if !c.ctrlPending.Load() || !c.wmu.TryLock() {
			return
		}
		c.wire.begin()
	}
}

func (c *h2conn) writeCtrlLocked() error {
	if !c.ctrlPending.Load() {
		return nil
	}
	c.ctrlMu.Lock()
	q := c.ctrl
	c.ctrl = c.ctrlSpare[:0]
	c.ctrlPending.Store(false)
	c.ctrlMu.Unlock()
	var err error
	for i := range q {
		f := &q[i]
		switch f.typ {
		case http2.FrameSettings:
			err = c.fr.WriteSettingsAck()
		case http2.FramePing:
			err = c.fr.WritePing(f.ack, f.ping)
		case http2.FrameWindowUpdate:
			err = c.fr.WriteWindowUpdate(f.stream, f.val)
		case http2.FrameRSTStream:
			err = c.fr.WriteRSTStream(f.stream, f.code)
		case http2.FrameGoAway:
			err = c.fr.WriteGoAway(f.val, f.code, nil)
		}
		if err != nil {
			break
		}
	}
	c.ctrlMu.Lock()
	c.ctrlSpare = q[:0]
	c.ctrlMu.Unlock()
	return err
}

// writeHeadersLocked encodes fields and writes them as HEADERS (and
// CONTINUATION) frames. The caller holds wmu.
func (c *h2conn) writeHeadersLocked(id uint32, end bool, fields []hpack.HeaderField, maxFrame uint32) error {
	if !c.peerHeaderTableOK.Load() {
		c.henc.SetMaxDynamicTableSizeLimit(c.peerHeaderTable.Load())
		c.peerHeaderTableOK.Store(true)
	}
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	first := true
	for {
		frag := block
		if uint32(len(frag)) > maxFrame {
			frag = frag[:maxFrame]
		}
		block = block[len(frag):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil || len(block) == 0 {
			return err
		}
	}
}

// writeDataLocked writes p as DATA frames of at most maxFrame bytes. The
// frame header is written by hand so the payload goes from p to the buffered
// writer without passing through the Framer's own buffer. The caller holds wmu.
func (c *h2conn) writeDataLocked(id uint32, p []byte, end bool, maxFrame int) error {
	for {
		n := min(len(p), maxFrame)
		var flags byte
		if end && n == len(p) {
			flags = byte(http2.FlagDataEndStream)
		}
		c.dataHdr = [9]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), flags,
			byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
		if _, err := c.bw.Write(c.dataHdr[:]); err != nil {
			return err
		}
		if _, err := c.bw.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}
