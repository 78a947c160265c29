package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Handing the sandbox's network namespace to the node agent.
//
// The plugin runs in the host's mount namespace and can always open
// CNI_NETNS (/var/run/netns/cni-…); the node agent runs in a container and
// often cannot: the runtime mounts the namespace file after the container
// started, and on a host whose /var/run is a private mount nothing
// propagates into the container. So the plugin opens it and passes the open
// file over the unix socket (SCM_RIGHTS), as the first byte of the
// connection, before the HTTP request:
//
//	'F' + SCM_RIGHTS(fd)  the request carries a network namespace
//	'N'                   no file (readiness)
//
// A connection that starts with anything else (a plugin of an older version
// speaking plain HTTP) is served as before: the byte is kept and the agent
// opens the path itself.
const (
	preambleFile   = 'F'
	preambleNoFile = 'N'
)

// dialAgent connects to the agent's socket and sends the preamble, with f's
// descriptor when f is not nil.
func dialAgent(ctx context.Context, socket string, f *os.File) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	b, oob := []byte{preambleNoFile}, []byte(nil)
	if f != nil {
		b[0], oob = preambleFile, unix.UnixRights(int(f.Fd()))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = uc.SetWriteDeadline(dl)
	}
	if _, _, err := uc.WriteMsgUnix(b, oob, nil); err != nil {
		uc.Close()
		return nil, fmt.Errorf("send preamble: %w", err)
	}
	_ = uc.SetWriteDeadline(time.Time{})
	return uc, nil
}

// AgentListener wraps the agent's unix-socket listener so that the
// preamble is read off each connection (see above); serve it with an
// http.Server whose ConnContext is AgentConnContext, so AgentHandler finds
// the file.
func AgentListener(ln net.Listener) net.Listener { return agentListener{ln} }

type agentListener struct{ net.Listener }

func (l agentListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return c, nil
	}
	return &preambleConn{UnixConn: uc}, nil
}

// preambleConn reads the preamble on its first Read (in the HTTP server's
// connection goroutine, so a slow client never holds up Accept).
type preambleConn struct {
	*net.UnixConn
	once    sync.Once
	err     error
	pending []byte   // a non-preamble first byte, to be read again
	file    *os.File // the received descriptor, until taken
	mu      sync.Mutex
}

func (c *preambleConn) Read(p []byte) (int, error) {
	c.once.Do(c.readPreamble)
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.UnixConn.Read(p)
}

func (c *preambleConn) readPreamble() {
	b := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.UnixConn.ReadMsgUnix(b, oob)
	if err != nil {
		c.err = err
		return
	}
	var fds []int
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			c.err = fmt.Errorf("preamble: %w", perr)
			return
		}
		for _, m := range msgs {
			r, perr := unix.ParseUnixRights(&m)
			if perr == nil {
				fds = append(fds, r...)
			}
		}
	}
	switch {
	case n == 1 && b[0] == preambleFile && len(fds) == 1:
		c.mu.Lock()
		c.file = os.NewFile(uintptr(fds[0]), "netns")
		c.mu.Unlock()
		return
	case n == 1 && b[0] == preambleNoFile && len(fds) == 0:
		return
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if len(fds) > 0 || b[0] == preambleFile || b[0] == preambleNoFile {
		c.err = errors.New("malformed preamble")
		return
	}
	c.pending = b[:n] // an old plugin: plain HTTP
}

// takeFile hands the received descriptor over (once).
func (c *preambleConn) takeFile() *os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.file
	c.file = nil
	return f
}

func (c *preambleConn) Close() error {
	if f := c.takeFile(); f != nil {
		f.Close()
	}
	return c.UnixConn.Close()
}

type connKey struct{}

// AgentConnContext is the http.Server ConnContext for AgentListener.
func AgentConnContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*preambleConn); ok {
		return context.WithValue(ctx, connKey{}, pc)
	}
	return ctx
}

// netnsFromContext takes the network namespace the plugin sent on this
// request's connection, nil if none.
func netnsFromContext(ctx context.Context) *os.File {
	if pc, ok := ctx.Value(connKey{}).(*preambleConn); ok {
		return pc.takeFile()
	}
	return nil
}
