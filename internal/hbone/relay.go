package hbone

import (
	"errors"
	"io"
	"net"
	"sync"
)

// copyBufSize is the size of the pooled buffers Relay copies through.
// Measured with BenchmarkTunnelThroughput; see README.md.
const copyBufSize = 64 << 10

var copyBufPool = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// Relay copies bytes between a and b in both directions until each direction
// has reached EOF or either fails, then closes both. EOF on one side is passed
// on as a half-close of the other (CloseWrite, where the connection has it:
// *net.TCPConn, *Stream), so protocols that half-close work through a tunnel.
// It returns the bytes copied each way and the first error other than EOF and
// other than the error caused by Relay's own closing.
func Relay(a, b net.Conn) (aToB, bToA int64, err error) {
	var (
		closeOnce sync.Once
		firstErr  error
		errMu     sync.Mutex
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		closeOnce.Do(func() { a.Close(); b.Close() })
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if aToB, err = copyHalf(b, a); err != nil {
			fail(err)
		}
	}()
	var err2 error
	if bToA, err2 = copyHalf(a, b); err2 != nil {
		fail(err2)
	}
	<-done
	closeOnce.Do(func() { a.Close(); b.Close() })
	return aToB, bToA, firstErr
}

type closeWriter interface{ CloseWrite() error }

// copyHalf copies src to dst through a pooled buffer and half-closes dst at
// src's EOF.
func copyHalf(dst, src net.Conn) (int64, error) {
	buf := copyBufPool.Get().(*[copyBufSize]byte)
	defer copyBufPool.Put(buf)
	var n int64
	for {
		nr, rerr := src.Read(buf[:])
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			if cw, ok := dst.(closeWriter); ok {
				if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
					return n, err
				}
			}
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
