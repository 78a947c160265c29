package hbone

import (
	"bufio"
	"net"
	"sync"
)

// wireConn sits between crypto/tls and the TCP socket and cuts the number of
// system calls, which dominated the first CPU profile of the tunnel: TLS
// writes each 16 KiB record with its own write(2) and reads a record at a
// time. Reads go through a large bufio.Reader, so one read(2) takes in every
// record that has arrived; writes made inside a batch (one flush of the
// HTTP/2 writer) are gathered and leave in one write(2).
type wireConn struct {
	net.Conn
	r *bufio.Reader // used only by crypto/tls, which serialises its reads

	mu       sync.Mutex // orders batched and direct writes
	batching bool
	buf      []byte
}

const wireReadSize = 256 << 10

func newWireConn(c net.Conn) *wireConn {
	return &wireConn{Conn: c, r: bufio.NewReaderSize(c, wireReadSize)}
}

func (w *wireConn) Read(p []byte) (int, error) { return w.r.Read(p) }

// Write sends p now, or appends it to the batch if one is open. TLS writes
// from other goroutines (a KeyUpdate answer from the read loop, the
// close_notify alert) join the batch too, so records keep their order.
func (w *wireConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.batching {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	return w.Conn.Write(p)
}

// begin opens a batch.
func (w *wireConn) begin() {
	w.mu.Lock()
	w.batching = true
	w.mu.Unlock()
}

// end closes the batch and writes what it gathered.
func (w *wireConn) end() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batching = false
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.Conn.Write(w.buf)
	if cap(w.buf) > 4*wireBatchKeep {
		w.buf = nil // do not keep a buffer grown by an unusual burst
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

const wireBatchKeep = writeBufSize + 4<<10
