package l7bench

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/ambientlite/mesh/bench/l4bench"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// podSpec is one pod of the network.
type podSpec struct {
	name string // also its port's name on the bridge (at most 15 bytes)
	// workload is the pod's name in mesh.yaml (ztunnel's logs and metrics).
	workload string
	ip       netip.Addr
	// capture, when set, installs ztunnel's capture rules with it.
	capture *capture.Config
	// routes are further prefixes reached over eth0 (the service VIPs).
	routes []netip.Prefix
}

// podNetwork is the pods on one bridge, like pods on a node's bridge: each
// pod is a network namespace whose eth0 is a veth, the other end a port of
// br0 in a namespace of its own. Every namespace is held by the bench
// (l4bench.NetNS), so nothing of it is on the host or outlives the bench.
type podNetwork struct {
	bridge *l4bench.NetNS
	pods   map[string]*l4bench.NetNS
}

// pod returns the namespace of the pod named name.
func (n *podNetwork) pod(name string) *l4bench.NetNS { return n.pods[name] }

func setupPodNetwork(ctx context.Context, specs []podSpec) (_ *podNetwork, err error) {
	n := &podNetwork{pods: map[string]*l4bench.NetNS{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.bridge, err = l4bench.NewNetNS(); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "link", "set", "br0", "up"},
	} {
		if err := n.bridge.Run(ctx, args...); err != nil {
			return nil, err
		}
	}
	for _, s := range specs {
		ns, err := l4bench.NewNetNS()
		if err != nil {
			return nil, err
		}
		n.pods[s.name] = ns
		steps := []struct {
			ns   *l4bench.NetNS
			args []string
		}{
			{ns, []string{"ip", "link", "set", "lo", "up"}},
			// Created in the pod, its peer moved straight into the
			// bridge's namespace: neither end is ever on the host.
			{ns, []string{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", s.name, "netns", n.bridge.Path}},
			{ns, []string{"ip", "addr", "add", netip.PrefixFrom(s.ip, 24).String(), "dev", "eth0"}},
			{ns, []string{"ip", "link", "set", "eth0", "up"}},
			{n.bridge, []string{"ip", "link", "set", s.name, "master", "br0"}},
			{n.bridge, []string{"ip", "link", "set", s.name, "up"}},
		}
		for _, r := range s.routes {
			steps = append(steps, struct {
				ns   *l4bench.NetNS
				args []string
			}{ns, []string{"ip", "route", "add", r.String(), "dev", "eth0"}})
		}
		for _, st := range steps {
			if err := st.ns.Run(ctx, st.args...); err != nil {
				return nil, err
			}
		}
		if s.capture != nil {
			if err := capture.Apply(ns.Path, *s.capture); err != nil {
				return nil, fmt.Errorf("capture in pod %s: %w", s.name, err)
			}
		}
	}
	return n, nil
}

// Close removes every namespace, with the links and rules in them.
func (n *podNetwork) Close() {
	for _, ns := range n.pods {
		ns.Close()
	}
	if n.bridge != nil {
		n.bridge.Close()
	}
}
