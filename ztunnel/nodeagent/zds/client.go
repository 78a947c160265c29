package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Request is one message from the node agent. Exactly one of its kinds is
// set, as Type says. The receiver must answer it with Conn.Ack before the
// next Recv.
type Request struct {
	Type string
	// Pod is set for PodAdded.
	Pod Pod
	// NetNS is the pod's network namespace for PodAdded; the receiver owns it
	// and must close it. Enter it with capture.ListenInNetNS and friends via
	// the path "/proc/self/fd/<fd>" or setns(2) on the fd.
	NetNS *os.File
	// UID is set for PodRemoved.
	UID string
	// UIDs is set for Snapshot: every enrolled pod. Forget any pod not in it.
	UIDs []string
}

// Conn is ztunnel's end of the protocol.
type Conn struct {
	uc      *net.UnixConn
	pending bool // a request was received and not yet acked
}

// Dial connects to the node agent at path and says Hello. The context bounds
// the dial only.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("connect to node agent at %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	if err := send(uc, message{Type: TypeHello, Version: Version}, nil); err != nil {
		uc.Close()
		return nil, err
	}
	return &Conn{uc: uc}, nil
}

// Recv waits for the next request. Cancelling ctx makes it return ctx's
// error; the connection is then unusable.
func (c *Conn) Recv(ctx context.Context) (Request, error) {
	if c.pending {
		return Request{}, errors.New("zds: Recv before the previous request was acked")
	}
	stop := context.AfterFunc(ctx, func() { c.uc.SetReadDeadline(time.Unix(1, 0)) })
	m, files, err := recv(c.uc)
	if !stop() && ctx.Err() != nil {
		for _, f := range files {
			f.Close()
		}
		return Request{}, ctx.Err()
	}
	if err != nil {
		return Request{}, err
	}
	r := Request{Type: m.Type}
	bad := func(format string, args ...any) (Request, error) {
		for _, f := range files {
			f.Close()
		}
		return Request{}, fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
	}
	switch m.Type {
	case TypePodAdded:
		if m.Pod == nil || m.Pod.UID == "" {
			return bad("PodAdded without pod uid")
		}
		if len(files) != 1 {
			return bad("PodAdded for %s carries %d fds, want 1", m.Pod.UID, len(files))
		}
		r.Pod, r.NetNS = *m.Pod, files[0]
	case TypePodRemoved:
		if m.UID == "" {
			return bad("PodRemoved without uid")
		}
		r.UID = m.UID
	case TypeSnapshot:
		r.UIDs = m.UIDs
	default:
		return bad("unexpected message %q", m.Type)
	}
	if r.Type != TypePodAdded && len(files) > 0 {
		return bad("%s carries fds", m.Type)
	}
	c.pending = true
	return r, nil
}

// Ack answers the last request: nil for success, or the reason ztunnel could
// not act on it (the node agent retries a failed PodAdded later).
func (c *Conn) Ack(err error) error {
	m := message{Type: TypeAck}
	if err != nil {
		m.Error = err.Error()
		if m.Error == "" {
			m.Error = "unknown error"
		}
	}
	c.pending = false
	return send(c.uc, m, nil)
}

// Close closes the connection.
func (c *Conn) Close() error { return c.uc.Close() }
