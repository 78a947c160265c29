package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// podProxy is the data path of one pod: its three listeners, its HBONE
// dialer and server, and the connections they carry.
type podProxy struct {
	p     *Proxy
	pod   atomic.Pointer[Pod] // swapped by AddPod for the same namespace
	netns string

	listeners []net.Listener
	closeLn   sync.Once
	dialer    *hbone.Dialer
	server    *hbone.Server
	tunnels   sync.Map    // *hbone.Request → *connRecord, from Authorize to OnTunnelClose
	noSpoof   atomic.Bool // the kernel refused IP_TRANSPARENT once: stop trying

	// connCtx lives as long as the pod's connections may: cancelled when
	// the drain is over, which closes them all.
	connCtx     context.Context
	cancelConns context.CancelFunc
	accepts     sync.WaitGroup // accept loops
	conns       sync.WaitGroup // connection handlers
}

// startPod opens pod's listeners inside its namespace and starts serving.
func (p *Proxy) startPod(pod *Pod) (*podProxy, error) {
	pp := &podProxy{p: p, netns: pod.NetNS}
	pp.pod.Store(pod)
	ports := []uint16{p.cfg.OutboundPort, p.cfg.InboundPlaintextPort, p.cfg.HBONEPort}
	for _, port := range ports {
		// The wildcard address: outbound connections arrive on loopback,
		// inbound ones on the pod's addresses (capture's README).
		ln, err := capture.ListenInNetNS(pod.NetNS, "tcp", ":"+strconv.Itoa(int(port)))
		if err != nil {
			for _, l := range pp.listeners {
				l.Close()
			}
			return nil, fmt.Errorf("proxy: pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		pp.listeners = append(pp.listeners, ln)
	}
	pp.connCtx, pp.cancelConns = context.WithCancel(context.Background())
	pp.dialer = &hbone.Dialer{
		Certificate:    p.cfg.Certificates.Certificate,
		Roots:          p.cfg.Certificates.Roots(),
		Dial:           pp.dialMarked,
		ConnectTimeout: p.cfg.ConnectTimeout,
		Logger:         p.cfg.Logger,
	}
	pp.server = &hbone.Server{
		TLS:            &tls.Config{GetConfigForClient: pp.serverTLS},
		TrustDomain:    pod.Identity.TrustDomain,
		Dial:           pp.dialInbound,
		ConnectTimeout: p.cfg.ConnectTimeout,
		CheckAuthority: pp.checkAuthority,
		Authorize:      pp.authorize,
		OnTunnelClose:  pp.tunnelClosed,
		Logger:         p.cfg.Logger,
	}
	if err := pp.server.Validate(); err != nil {
		pp.closeListeners()
		return nil, err
	}
	pp.serve(pp.listeners[0], pp.handleOutbound)
	pp.serve(pp.listeners[1], pp.handlePlaintext)
	pp.serve(pp.listeners[2], pp.handleHBONE)
	return pp, nil
}

// serve runs an accept loop that hands every connection to handle on its
// own goroutine.
func (pp *podProxy) serve(ln net.Listener, handle func(net.Conn)) {
	pp.accepts.Go(func() {
		var backoff time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				pp.p.cfg.Logger.Warn("proxy: accept failed", "addr", ln.Addr(), "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-pp.connCtx.Done():
					return
				}
				continue
			}
			backoff = 0
			pp.conns.Go(func() { handle(c) })
		}
	})
}

func (pp *podProxy) closeListeners() {
	pp.closeLn.Do(func() {
		for _, ln := range pp.listeners {
			ln.Close()
		}
	})
}

// stop closes the listeners, lets connections run for up to drain (cut
// short by Proxy.Close), then closes them and waits for every goroutine.
func (pp *podProxy) stop(drain time.Duration) {
	pp.closeListeners()
	pp.accepts.Wait()
	if drain > 0 {
		done := make(chan struct{})
		go func() { pp.conns.Wait(); close(done) }()
		t := time.NewTimer(drain)
		select {
		case <-done:
		case <-t.C:
		case <-pp.p.done:
		}
		t.Stop()
	}
	pp.cancelConns()
	pp.conns.Wait()
	pp.dialer.Close()
}

// dialMarked dials from inside the pod's namespace with ztunnel's mark:
// the connection leaves from the pod's address and is not captured again.
func (pp *podProxy) dialMarked(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Control: capture.SocketOptions{Mark: pp.p.cfg.Mark}.Control}
	return capture.DialInNetNS(ctx, pp.netns, d, network, address)
}

// sameNetNS reports whether two paths name the same network namespace.
func sameNetNS(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA != nil || errB != nil {
		return false
	}
	return os.SameFile(sa, sb)
}

// resetClose closes c with a TCP reset (SO_LINGER 0), which is how the proxy
// refuses a connection it already accepted.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// isPermission reports whether err means the kernel refused a privileged
// socket option or a non-local source address.
func isPermission(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EADDRNOTAVAIL)
}
