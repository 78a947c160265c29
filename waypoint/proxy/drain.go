package proxy

import (
	"net"
	"sync"
)

// drainListener lets the HBONE server stop accepting without cancelling the
// context that would also cut its open tunnels: after stopAccepting the
// socket is closed (new connections are refused by the kernel) and Accept
// blocks until Close, which the server calls when its context ends.
type drainListener struct {
	net.Listener
	stopOnce, closeOnce sync.Once
	stopped, closed     chan struct{}
}

func newDrainListener(ln net.Listener) *drainListener {
	return &drainListener{Listener: ln, stopped: make(chan struct{}), closed: make(chan struct{})}
}

func (l *drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		select {
		case <-l.stopped:
			<-l.closed
		default:
		}
	}
	return c, err
}

func (l *drainListener) stopAccepting() {
	l.stopOnce.Do(func() {
		close(l.stopped)
		l.Listener.Close()
	})
}

func (l *drainListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	l.stopAccepting()
	return nil
}
