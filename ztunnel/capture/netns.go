package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WithNetNS runs fn on an OS thread that has entered the network namespace
// at path (e.g. /var/run/netns/<name> or /proc/<pid>/ns/net) and returns
// fn's error. Sockets fn creates belong to that namespace for their whole
// life, whichever thread later uses them. Goroutines fn starts do NOT run in
// the namespace.
//
// fn runs on its own goroutine, so the caller's thread is never moved. If the
// thread cannot be moved back afterwards it stays locked and the Go runtime
// retires it, so no goroutine ever runs in the wrong namespace by accident.
// A panic in fn is re-raised in the caller.
func WithNetNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()

	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter network namespace %s: %w", path, err)}
			return
		}

		var res result
		func() {
			defer func() { res.panic = recover() }()
			res.err = fn()
		}()

		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			res.err = errors.Join(res.err, fmt.Errorf("leave network namespace %s: %w", path, err))
			done <- res
			return
		}
		runtime.UnlockOSThread()
		done <- res
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

// ListenInNetNS opens a listener inside the network namespace at path. The
// capture rules redirect with NAT (REDIRECT), so the listener needs no
// IP_TRANSPARENT: listen on the wildcard address (":15001", ":15006",
// ":15008") and read each connection's original destination with
// OriginalDst. Connections redirected in output (outbound) arrive on
// 127.0.0.1/::1, those redirected in prerouting (inbound) on the pod's
// address.
func ListenInNetNS(path, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := WithNetNS(path, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %s: %w", network, addr, path, err)
	}
	return ln, nil
}

// DialInNetNS dials from inside the network namespace at path with d (nil
// means a zero net.Dialer). Give d a Control from SocketOptions to mark the
// socket so capture leaves it alone. Use a literal address: name resolution
// and dual-stack racing run on other goroutines, outside the namespace.
func DialInNetNS(ctx context.Context, path string, d *net.Dialer, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	var c net.Conn
	err := WithNetNS(path, func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, path, err)
	}
	return c, nil
}

// SocketOptions are the options ztunnel sets on the sockets it opens inside a
// pod's network namespace. Use Control as net.Dialer.Control or
// net.ListenConfig.Control.
type SocketOptions struct {
	// Mark is set as SO_MARK; use Config.Mark (0x539) so capture never
	// redirects the socket's traffic. Zero leaves the mark alone.
	Mark uint32
	// Transparent sets IP_TRANSPARENT / IPV6_TRANSPARENT, which lets the
	// socket bind to a non-local address: ztunnel uses it to connect to the
	// pod's application with the original client's address as source.
	Transparent bool
}

// Control applies o to a socket before it binds or connects.
func (o SocketOptions) Control(network, _ string, c syscall.RawConn) error {
	var opErr error
	err := c.Control(func(fd uintptr) {
		if o.Mark != 0 {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); err != nil {
				opErr = fmt.Errorf("set SO_MARK 0x%x: %w", o.Mark, err)
				return
			}
		}
		if o.Transparent {
			level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
			if network == "tcp6" || network == "udp6" {
				level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
			}
			if err := unix.SetsockoptInt(int(fd), level, opt, 1); err != nil {
				opErr = fmt.Errorf("set transparent: %w", err)
			}
		}
	})
	return errors.Join(err, opErr)
}
