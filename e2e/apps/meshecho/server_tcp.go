package meshecho

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// tcpEcho serves the raw TCP port: a banner line
// "ServiceVersion=<v> Hostname=<name>\n", then every byte received is
// echoed until the client half-closes, which is answered with a half-close.
type tcpEcho struct {
	s  *Server
	ln net.Listener

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func (s *Server) tcpComponent(ln net.Listener) component {
	t := &tcpEcho{s: s, ln: ln, conns: make(map[net.Conn]struct{})}
	return component{name: "tcp", addr: ln.Addr(), serve: t.serve, stop: t.stop}
}

func (t *tcpEcho) serve() error {
	for {
		c, err := t.ln.Accept()
		t.mu.Lock()
		if t.closing {
			t.mu.Unlock()
			if c != nil {
				c.Close()
			}
			return nil
		}
		if err != nil {
			t.mu.Unlock()
			return err
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			t.handle(c)
			t.mu.Lock()
			delete(t.conns, c)
			t.mu.Unlock()
		}()
	}
}

// stop closes the listener, lets sessions finish until ctx is done, then
// closes the remaining ones.
func (t *tcpEcho) stop(ctx context.Context) {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.ln.Close()
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.mu.Lock()
		for c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
		<-done
	}
}

func (t *tcpEcho) handle(c net.Conn) {
	defer c.Close()
	start := time.Now()
	cfg := t.s.cfg
	n, err := func() (int64, error) {
		if _, err := fmt.Fprintf(c, "ServiceVersion=%s Hostname=%s\n", cfg.Version, cfg.Name); err != nil {
			return 0, fmt.Errorf("writing banner: %w", err)
		}
		n, err := echoUntilEOF(c)
		if err != nil {
			return n, err
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			return n, cw.CloseWrite()
		}
		return n, nil
	}()
	t.s.log.Debug("tcp session", "remote", c.RemoteAddr().String(), "bytes", n, "duration", time.Since(start), "error", err)
}

// echoUntilEOF writes back everything read from c until c's read side ends.
// A plain loop rather than io.Copy, which could try to splice the socket
// onto itself.
func echoUntilEOF(c net.Conn) (int64, error) {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return total, fmt.Errorf("echoing: %w", werr)
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("reading: %w", err)
		}
	}
}
