// Package zds is the protocol over which the node agent hands enrolled pods'
// network namespaces to ztunnel: the role Istio's "ZDS" plays between
// istio-cni and ztunnel, with our own small message set.
//
// The node agent listens on a unix SOCK_SEQPACKET socket (default
// /var/run/ambient-lite/ztunnel.sock); ztunnel connects. Every packet is one
// JSON message. ztunnel speaks first with Hello; from then on the node agent
// sends and ztunnel answers each message with exactly one Ack before the next
// is sent:
//
//	ztunnel → agent  {"type":"Hello","version":1}
//	agent → ztunnel  {"type":"PodAdded","pod":{"uid":…,"name":…,"namespace":…,"serviceAccount":…,"ips":[…]}}
//	                 + the pod's network namespace as one fd (SCM_RIGHTS)
//	agent → ztunnel  {"type":"PodRemoved","uid":…}
//	agent → ztunnel  {"type":"Snapshot","uids":[…]}
//	ztunnel → agent  {"type":"Ack"} or {"type":"Ack","error":"…"}
//
// On every (re)connection the agent first sends PodAdded for each enrolled
// pod, then Snapshot listing all of them: ztunnel must forget any pod it
// still holds that is not in the list. After the Snapshot come PodAdded and
// PodRemoved as pods join and leave. A PodAdded for a uid ztunnel already
// holds replaces it (a new sandbox, or changed IPs). Server is the agent's
// side, Dial the ztunnel's.
package zds

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Version is the protocol version ztunnel announces in Hello.
const Version = 1

// Message types.
const (
	TypeHello      = "Hello"
	TypePodAdded   = "PodAdded"
	TypePodRemoved = "PodRemoved"
	TypeSnapshot   = "Snapshot"
	TypeAck        = "Ack"
)

// maxMessage bounds one packet. A Snapshot of a few thousand pod uids fits.
const maxMessage = 256 << 10

// Pod identifies an enrolled pod to ztunnel.
type Pod struct {
	// UID is the Kubernetes pod UID; the key of every later message.
	UID            string       `json:"uid"`
	Name           string       `json:"name"`
	Namespace      string       `json:"namespace"`
	ServiceAccount string       `json:"serviceAccount"`
	IPs            []netip.Addr `json:"ips"`
}

// message is the union of all messages on the wire.
type message struct {
	Type    string   `json:"type"`
	Version int      `json:"version,omitempty"`
	Pod     *Pod     `json:"pod,omitempty"`
	UID     string   `json:"uid,omitempty"`
	UIDs    []string `json:"uids,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// snapshotMessage keeps "uids" on the wire when the list is empty.
type snapshotMessage struct {
	Type string   `json:"type"`
	UIDs []string `json:"uids"`
}

func encode(m message) ([]byte, error) {
	var v any = m
	if m.Type == TypeSnapshot {
		uids := m.UIDs
		if uids == nil {
			uids = []string{}
		}
		v = snapshotMessage{Type: m.Type, UIDs: uids}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > maxMessage {
		return nil, fmt.Errorf("%s message of %d bytes exceeds %d", m.Type, len(b), maxMessage)
	}
	return b, nil
}

// ErrProtocol marks a peer that broke the protocol; the connection is closed.
var ErrProtocol = errors.New("zds protocol error")

// send writes one message, with f (if not nil) passed as SCM_RIGHTS.
func send(c *net.UnixConn, m message, f *os.File) error {
	b, err := encode(m)
	if err != nil {
		return err
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	runtime.KeepAlive(f)
	if err != nil {
		return fmt.Errorf("send %s: %w", m.Type, err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("send %s: short write", m.Type)
	}
	return nil
}

// recv reads one message and the fds that came with it (close-on-exec).
// It returns io.EOF-like errors as net.ErrClosed wrapped, and ErrProtocol for
// malformed packets (fds received with them are closed).
func recv(c *net.UnixConn) (message, []*os.File, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	rc, err := c.SyscallConn()
	if err != nil {
		return message{}, nil, err
	}
	var n, oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return message{}, nil, fmt.Errorf("receive: %w", err)
	}
	files, ferr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if n == 0 && oobn == 0 {
		return message{}, nil, fmt.Errorf("receive: %w", net.ErrClosed)
	}
	if ferr != nil {
		closeAll()
		return message{}, nil, fmt.Errorf("%w: control message: %v", ErrProtocol, ferr)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll()
		return message{}, nil, fmt.Errorf("%w: message truncated", ErrProtocol)
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeAll()
		return message{}, nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, cm := range msgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return files, nil
}
