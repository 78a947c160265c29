package nodeagent

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// probeNet is a stand-in node: a "host" namespace (where the host table
// goes) linked to a "pod" namespace with a listener that reports the source
// address of each connection.
type probeNet struct {
	host, pod      testNS
	podV4, podV6   netip.Addr
	hostV4, hostV6 netip.Addr
	sources        chan netip.Addr
	listenV4, lnV6 net.Listener
}

func newProbeNet(t *testing.T) *probeNet {
	t.Helper()
	n := &probeNet{
		host: newTestNS(t, "host"), pod: newTestNS(t, "pod"),
		podV4: netip.MustParseAddr("10.253.4.2"), hostV4: netip.MustParseAddr("10.253.4.1"),
		podV6: netip.MustParseAddr("fd00:253:4::2"), hostV6: netip.MustParseAddr("fd00:253:4::1"),
		sources: make(chan netip.Addr, 10),
	}
	link(t, n.host, n.pod, "veth-pod", "10.253.4.1/24", "10.253.4.2/24")
	run(t, "ip", "-n", n.pod.name, "-6", "addr", "add", "fd00:253:4::2/64", "dev", "eth0", "nodad")
	run(t, "ip", "-n", n.host.name, "-6", "addr", "add", "fd00:253:4::1/64", "dev", "veth-pod", "nodad")
	run(t, "ip", "-n", n.pod.name, "-6", "route", "add", "default", "via", "fd00:253:4::1")
	for _, a := range []netip.Addr{n.podV4, n.podV6} {
		ln, err := capture.ListenInNetNS(n.pod.path, "tcp", netip.AddrPortFrom(a, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				n.sources <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
				c.Close()
			}
		}()
	}
	return n
}

// source connects from the host namespace to the pod and returns the
// source address the pod saw.
func (n *probeNet) source(t *testing.T, dst netip.Addr) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := capture.DialInNetNS(ctx, n.host.path, nil, "tcp", netip.AddrPortFrom(dst, 8080).String())
	if err != nil {
		t.Fatalf("connect from the host to %s: %v", dst, err)
	}
	defer c.Close()
	select {
	case src := <-n.sources:
		return src
	case <-ctx.Done():
		t.Fatal("the pod saw no connection")
	}
	return netip.Addr{}
}

func TestHostProbeSNAT(t *testing.T) {
	n := newProbeNet(t)
	cfg := Config{NodeName: "n", Host: HostConfig{NetNS: n.host.path}}.withDefaults()
	h := &hostRules{cfg: cfg.Host}
	t.Cleanup(func() { h.remove() })

	if got := n.source(t, n.podV4); got != n.hostV4 {
		t.Fatalf("before any rules the pod sees %s, want %s", got, n.hostV4)
	}

	if err := h.sync([]netip.Addr{n.podV4, n.podV6}); err != nil {
		t.Fatal(err)
	}
	got, err := h.addresses()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]netip.Addr{n.podV4, n.podV6}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("host sets (-want +got):\n%s", diff)
	}
	if got := n.source(t, n.podV4); got != capture.DefaultProbeSourceV4 {
		t.Errorf("enrolled pod sees IPv4 probes from %s, want %s", got, capture.DefaultProbeSourceV4)
	}
	if got := n.source(t, n.podV6); got != capture.DefaultProbeSourceV6 {
		t.Errorf("enrolled pod sees IPv6 probes from %s, want %s", got, capture.DefaultProbeSourceV6)
	}

	// Set-only update: the v6 address leaves.
	if err := h.sync([]netip.Addr{n.podV4}); err != nil {
		t.Fatal(err)
	}
	if got := n.source(t, n.podV6); got != n.hostV6 {
		t.Errorf("released IPv6 address sees %s, want %s (no SNAT)", got, n.hostV6)
	}
	if got := n.source(t, n.podV4); got != capture.DefaultProbeSourceV4 {
		t.Errorf("still-enrolled IPv4 address sees %s", got)
	}

	// Someone deletes the table: the next sync rebuilds it.
	if err := capture.WithNetNS(n.host.path, func() error {
		nft, err := nftables.New()
		if err != nil {
			return err
		}
		nft.DelTable(hostTable)
		return nft.Flush()
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.sync([]netip.Addr{n.podV4}); err != nil {
		t.Fatal(err)
	}
	if got := n.source(t, n.podV4); got != capture.DefaultProbeSourceV4 {
		t.Errorf("after rebuild the pod sees %s", got)
	}

	if err := h.remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.addresses(); err == nil {
		t.Error("table still there after remove")
	}
	if got := n.source(t, n.podV4); got != n.hostV4 {
		t.Errorf("after remove the pod sees %s, want %s", got, n.hostV4)
	}
	if err := h.remove(); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

// TestHostProbeUID: with ProbeUID only that user's sockets are SNATed.
func TestHostProbeUID(t *testing.T) {
	n := newProbeNet(t)
	for _, tc := range []struct {
		uid  uint32
		want netip.Addr
	}{
		{0, capture.DefaultProbeSourceV4}, // the test runs as root, like this machine's kubelet
		{12345, n.hostV4},
	} {
		h := &hostRules{cfg: Config{NodeName: "n", Host: HostConfig{NetNS: n.host.path, ProbeUID: &tc.uid}}.withDefaults().Host}
		if err := h.sync([]netip.Addr{n.podV4}); err != nil {
			t.Fatal(err)
		}
		if got := n.source(t, n.podV4); got != tc.want {
			t.Errorf("ProbeUID %d: pod sees %s, want %s", tc.uid, got, tc.want)
		}
		if err := h.remove(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHostDisabled(t *testing.T) {
	h := &hostRules{cfg: HostConfig{Disabled: true, NetNS: "/nonexistent"}}
	if err := h.sync([]netip.Addr{netip.MustParseAddr("10.0.0.1")}); err != nil {
		t.Errorf("disabled sync: %v", err)
	}
	if err := h.remove(); err != nil {
		t.Errorf("disabled remove: %v", err)
	}
}
