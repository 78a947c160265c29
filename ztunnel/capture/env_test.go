package capture

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testNet is a pair of fresh network namespaces, "pod" and "peer", joined by
// a veth pair (eth0 on both sides) and nothing else: no default route, no
// link to the host, so no test packet can leave the machine.
//
//	pod  eth0 10.252.0.2/24, fe80::… (link-local), route 169.254.7.127/32 dev eth0
//	peer eth0 10.252.0.1/24, 169.254.7.127/32 (stand-in for the node's SNATed probes), fe80::…
type testNet struct {
	pod, peer         string     // namespace paths under /var/run/netns
	podName, peerName string     // namespace names for ip -n
	podIP, peerIP     netip.Addr // 10.252.0.2, 10.252.0.1
	podLL, peerLL     netip.Addr // link-local addresses, zone "eth0"
	probeIP           netip.Addr // 169.254.7.127, on the peer
}

var (
	testPodIP  = netip.MustParseAddr("10.252.0.2")
	testPeerIP = netip.MustParseAddr("10.252.0.1")
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and nftables rules; run `go test` as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip(8) command from iproute2 is needed to build the test namespaces")
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTestNet builds the two namespaces; t.Cleanup deletes them (and with
// them the veth pair and every rule inside) even when the test fails.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	n := &testNet{
		podName: "alcap-pod-" + suffix, peerName: "alcap-peer-" + suffix,
		podIP: testPodIP, peerIP: testPeerIP, probeIP: DefaultProbeSourceV4,
	}
	for _, name := range []string{n.podName, n.peerName} {
		ip(t, "netns", "add", name)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v\n%s", name, err, out)
			}
		})
	}
	n.pod, n.peer = "/var/run/netns/"+n.podName, "/var/run/netns/"+n.peerName

	for _, ns := range []string{n.pod, n.peer} {
		// No duplicate address detection: link-local addresses are usable at
		// once. And the accepted socket inherits the SYN's packet mark
		// (tcp_fwmark_accept), so test listeners can report it.
		writeSysctls(t, ns, map[string]string{
			"net/ipv6/conf/all/accept_dad":     "0",
			"net/ipv6/conf/default/accept_dad": "0",
			"net/ipv4/tcp_fwmark_accept":       "1",
		})
	}
	ip(t, "-n", n.podName, "link", "set", "lo", "up")
	ip(t, "-n", n.peerName, "link", "set", "lo", "up")
	ip(t, "-n", n.podName, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", n.peerName)
	ip(t, "-n", n.podName, "addr", "add", n.podIP.String()+"/24", "dev", "eth0")
	ip(t, "-n", n.peerName, "addr", "add", n.peerIP.String()+"/24", "dev", "eth0")
	ip(t, "-n", n.peerName, "addr", "add", n.probeIP.String()+"/32", "dev", "eth0")
	ip(t, "-n", n.podName, "link", "set", "eth0", "up")
	ip(t, "-n", n.peerName, "link", "set", "eth0", "up")
	ip(t, "-n", n.podName, "route", "add", n.probeIP.String()+"/32", "dev", "eth0")

	n.podLL = linkLocal(t, n.pod)
	n.peerLL = linkLocal(t, n.peer)
	return n
}

func writeSysctls(t *testing.T, ns string, kv map[string]string) {
	t.Helper()
	err := WithNetNS(ns, func() error {
		for k, v := range kv {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sysctl in %s: %v", ns, err)
	}
}

// linkLocal waits for eth0's IPv6 link-local address in ns.
func linkLocal(t *testing.T, ns string) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found netip.Addr
		err := WithNetNS(ns, func() error {
			ifc, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
					found = p.Addr().WithZone("eth0")
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("read eth0 addresses in %s: %v", ns, err)
		}
		if found.IsValid() {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IPv6 link-local address on eth0 in %s after 5s", ns)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// accepted is what a test listener saw of one connection.
type accepted struct {
	listener string
	local    netip.AddrPort
	remote   netip.AddrPort
	origDst  netip.AddrPort // from OriginalDst
	origErr  error
	mark     uint32 // packet mark of the SYN (tcp_fwmark_accept)
}

// server answers every connection with its name and a newline, then closes
// it, and reports what it saw on ch.
type server struct {
	name string
	ch   chan accepted
}

// serve runs a server on a listener opened with ListenInNetNS in ns.
func serve(t *testing.T, ns, name, addr string) *server {
	t.Helper()
	ln, err := ListenInNetNS(ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name, ch: make(chan accepted, 32)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a := accepted{
				listener: name,
				local:    c.LocalAddr().(*net.TCPAddr).AddrPort(),
				remote:   c.RemoteAddr().(*net.TCPAddr).AddrPort(),
			}
			a.origDst, a.origErr = OriginalDst(c)
			a.mark = socketMark(c)
			_, _ = fmt.Fprintln(c, name)
			_ = c.Close()
			select {
			case s.ch <- a:
			default:
			}
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return s
}

func socketMark(c net.Conn) uint32 {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0
	}
	var mark int
	_ = raw.Control(func(fd uintptr) {
		mark, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	})
	return uint32(mark)
}

// next returns the next connection s saw.
func (s *server) next(t *testing.T) accepted {
	t.Helper()
	select {
	case a := <-s.ch:
		return a
	case <-time.After(5 * time.Second):
		t.Fatalf("listener %s saw no connection within 5s", s.name)
		return accepted{}
	}
}

// drain forgets connections s saw so far.
func (s *server) drain() {
	for {
		select {
		case <-s.ch:
		default:
			return
		}
	}
}

// hello connects from ns to addr with d and returns the name of the server
// that answered.
func hello(ns string, d *net.Dialer, addr netip.AddrPort) (string, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	if d.Timeout == 0 {
		d.Timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialInNetNS(ctx, ns, d, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	name := strings.TrimSpace(line)
	if name == "" {
		return "", errors.New("empty greeting")
	}
	return name, nil
}
