package l4bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// NetNS is a network namespace held by a parked, locked OS thread of this
// process: nothing is mounted and /run/netns is not touched, so the
// namespace goes away with the thread (or the process, however it ends) and
// the last socket in it.
type NetNS struct {
	// Path is /proc/<pid>/task/<tid>/ns/net, usable by nsenter and by
	// capture's helpers in other processes while the thread lives.
	Path   string
	stop   chan struct{}
	exited chan struct{}
}

// NewNetNS creates a network namespace; Close removes it.
func NewNetNS() (*NetNS, error) {
	ns := &NetNS{stop: make(chan struct{}), exited: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(ns.exited)
		// Never unlocked: the thread, now in another namespace, exits
		// with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		ns.Path = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		errc <- nil
		<-ns.stop
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return ns, nil
}

// Close ends the holding thread.
func (ns *NetNS) Close() {
	close(ns.stop)
	<-ns.exited
}

// Run runs a command inside the namespace (with nsenter).
func (ns *NetNS) Run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path, "--"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("in the pod namespace: %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// namespaceSysctls are set in both pods: the connection-rate phase opens
// tens of thousands of short connections. Under /proc/sys/net a thread sees
// its own network namespace's values, so the host's are not touched.
var namespaceSysctls = map[string]string{
	"net/ipv4/tcp_tw_reuse":        "1",
	"net/ipv4/ip_local_port_range": "15100 60999",
}

func (ns *NetNS) tuneForShortConnections() error {
	return capture.WithNetNS(ns.Path, func() error {
		for key, val := range namespaceSysctls {
			if err := os.WriteFile("/proc/sys/"+key, []byte(val), 0o644); err != nil {
				return fmt.Errorf("sysctl %s in the pod namespace: %w", key, err)
			}
		}
		return nil
	})
}

// pods are the client and server pod namespaces, joined by a veth pair
// (eth0 in each) and captured by ztunnel's rules.
type pods struct {
	client, server *NetNS
}

// setupPods creates the two namespaces, links and addresses them, tunes
// them for many short connections and installs capture: in the client pod
// everything but the excluded destination ports is redirected to ztunnel's
// 15001, in the server pod everything but 15008 and the excluded ports to
// 15006. On error, what was created is removed.
func setupPods(ctx context.Context) (_ *pods, err error) {
	p := &pods{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.client, err = NewNetNS(); err != nil {
		return nil, err
	}
	if p.server, err = NewNetNS(); err != nil {
		return nil, err
	}
	steps := []struct {
		ns   *NetNS
		args []string
	}{
		{p.client, []string{"ip", "link", "set", "lo", "up"}},
		{p.server, []string{"ip", "link", "set", "lo", "up"}},
		// Created inside the client namespace, its peer moved straight
		// into the server's: neither end ever exists on the host.
		{p.client, []string{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", p.server.Path}},
		{p.client, []string{"ip", "addr", "add", clientIP.String() + "/24", "dev", "eth0"}},
		{p.server, []string{"ip", "addr", "add", serverIP.String() + "/24", "dev", "eth0"}},
		{p.client, []string{"ip", "link", "set", "eth0", "up"}},
		{p.server, []string{"ip", "link", "set", "eth0", "up"}},
	}
	for _, s := range steps {
		if err := s.ns.Run(ctx, s.args...); err != nil {
			return nil, err
		}
	}
	for _, ns := range []*NetNS{p.client, p.server} {
		if err := ns.tuneForShortConnections(); err != nil {
			return nil, err
		}
	}
	excluded := excludedPorts()
	if err := capture.Apply(p.client.Path, capture.Config{ExcludeOutboundPorts: excluded}); err != nil {
		return nil, fmt.Errorf("capture in the client pod: %w", err)
	}
	if err := capture.Apply(p.server.Path, capture.Config{ExcludeInboundPorts: excluded}); err != nil {
		return nil, fmt.Errorf("capture in the server pod: %w", err)
	}
	return p, nil
}

// Close removes both namespaces (with them the veth pair and the rules).
func (p *pods) Close() {
	for _, ns := range []*NetNS{p.client, p.server} {
		if ns != nil {
			ns.Close()
		}
	}
}
