package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/cniplugin"
	"github.com/ambientlite/mesh/ztunnel/nodeagent/zds"
)

const testNode = "node-1"

// agentEnv is a node for the agent: a throw-away "host" namespace (for the
// host table), temp dirs for the sockets and the CNI configuration, and an
// in-memory API server (client-go's fake clientset).
type agentEnv struct {
	client *fake.Clientset
	host   testNS
	dir    string
	cfg    Config
}

func newAgentEnv(t *testing.T, objs ...runtime.Object) *agentEnv {
	t.Helper()
	e := &agentEnv{client: fake.NewClientset(objs...), host: newTestNS(t, "host"), dir: t.TempDir()}
	confDir := filepath.Join(e.dir, "net.d")
	bin := filepath.Join(e.dir, "src", cniplugin.PluginType)
	for _, d := range []string{confDir, filepath.Dir(bin)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-bridge.conflist"), []byte(`{"cniVersion":"0.4.0","name":"test","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		NodeName:          testNode,
		ZtunnelSocket:     filepath.Join(e.dir, "run", "ztunnel.sock"),
		CNISocket:         filepath.Join(e.dir, "run", "cni.sock"),
		Host:              HostConfig{NetNS: e.host.path},
		CNI:               cniplugin.InstallConfig{PluginBinary: bin, BinDir: filepath.Join(e.dir, "bin"), ConfDir: confDir},
		AckTimeout:        2 * time.Second,
		PodLookupTimeout:  500 * time.Millisecond,
		ReconcileInterval: time.Hour,
	}
	return e
}

// start runs an agent; the returned func stops it and waits for Run.
func (e *agentEnv) start(t *testing.T) (*Agent, func()) {
	t.Helper()
	a, err := New(e.cfg, e.client, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
		}
	}
	t.Cleanup(stop)
	waitFor(t, "the agent to be ready", func() bool { return a.readyErr() == nil })
	return a, stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (e *agentEnv) annotation(t *testing.T, ns, name string) string {
	t.Helper()
	p, err := e.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Annotations[AnnotationRedirection]
}

func (e *agentEnv) waitAnnotation(t *testing.T, ns, name, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s/%s annotated %q", ns, name, want), func() bool { return e.annotation(t, ns, name) == want })
}

func (e *agentEnv) updatePod(t *testing.T, ns, name string, mutate func(*corev1.Pod)) {
	t.Helper()
	p, err := e.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mutate(p)
	if _, err := e.client.CoreV1().Pods(ns).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *agentEnv) hostAddrs(t *testing.T) ([]netip.Addr, error) {
	t.Helper()
	return (&hostRules{cfg: e.cfg.withDefaults().Host}).addresses()
}

// ztunnel is a test ztunnel speaking the real protocol.
type ztunnel struct {
	t *testing.T
	c *zds.Conn
}

func dialZtunnel(t *testing.T, path string) *ztunnel {
	t.Helper()
	c, err := zds.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ztunnel{t: t, c: c}
}

func (z *ztunnel) recv(want string) zds.Request {
	z.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := z.c.Recv(ctx)
	if err != nil {
		z.t.Fatalf("ztunnel Recv: %v", err)
	}
	if r.Type != want {
		z.t.Fatalf("ztunnel got %s %+v, want %s", r.Type, r, want)
	}
	if r.NetNS != nil {
		z.t.Cleanup(func() { r.NetNS.Close() })
	}
	return r
}

func (z *ztunnel) ack() {
	z.t.Helper()
	if err := z.c.Ack(nil); err != nil {
		z.t.Fatal(err)
	}
}

func installed(t *testing.T, path string) bool {
	t.Helper()
	ok, err := capture.Installed(path)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func nsIno(t *testing.T, f *os.File) uint64 {
	t.Helper()
	id, err := fstatNS(f)
	if err != nil {
		t.Fatal(err)
	}
	return id.ino
}

func pathIno(t *testing.T, path string) uint64 {
	t.Helper()
	id, err := statNS(path)
	if err != nil {
		t.Fatal(err)
	}
	return id.ino
}

func namespace(name string, mode string) *corev1.Namespace {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if mode != "" {
		n.Labels = map[string]string{LabelDataplaneMode: mode}
	}
	return n
}

func testPod(ns, name, uid, ip string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: testNode, ServiceAccountName: name + "-sa"},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	if ip != "" {
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
}

// TestAgentRunningPod follows a pod that runs before it is enrolled through
// the agent's life: found through /proc, captured before ztunnel is there
// (connections refused), handed to ztunnel with a usable namespace fd,
// released on a label, re-enrolled while ztunnel is away, kept across an
// agent restart, and released when its namespace leaves the mesh.
func TestAgentRunningPod(t *testing.T) {
	requireRoot(t)
	hostNet := testPod("demo", "hostnet", "uid-hostnet", "10.253.2.20")
	hostNet.Spec.HostNetwork = true
	away := testPod("demo", "away", "uid-away", "10.253.2.21")
	away.Spec.NodeName = "node-2"
	env := newAgentEnv(t,
		namespace("demo", "ambient"), namespace("plain", ""),
		testPod("demo", "web", "uid-web", "10.253.2.10"),
		testPod("plain", "other", "uid-other", "10.253.2.30"),
		hostNet, away,
	)
	pod := newTestNS(t, "pod")
	link(t, env.host, pod, "veth-web", "10.253.2.1/24", "10.253.2.10/24")
	sleeper(t, pod)
	webIP := netip.MustParseAddr("10.253.2.10")

	a, stop := env.start(t)

	// Captured before any ztunnel: rules in, annotation pending.
	waitFor(t, "web enrolled", func() bool { return len(a.Enrolled()) == 1 })
	if got := a.Enrolled()[0]; got.Name != "web" || got.NetNSInode != pathIno(t, pod.path) || got.Acked {
		t.Fatalf("enrolled %+v", got)
	}
	if !installed(t, pod.path) {
		t.Fatal("no capture rules in the pod's namespace")
	}
	env.waitAnnotation(t, "demo", "web", RedirectionPending)
	for _, name := range []string{"other", "hostnet", "away"} {
		ns := "demo"
		if name == "other" {
			ns = "plain"
		}
		if got := env.annotation(t, ns, name); got != "" {
			t.Errorf("pod %s annotated %q", name, got)
		}
	}
	if got, err := env.hostAddrs(t); err != nil || len(got) != 1 || got[0] != webIP {
		t.Errorf("host probe set %v (%v), want [%s]", got, err, webIP)
	}
	if conf, _ := os.ReadFile(filepath.Join(env.cfg.CNI.ConfDir, "10-bridge.conflist")); !strings.Contains(string(conf), cniplugin.PluginType) {
		t.Errorf("CNI plugin not chained:\n%s", conf)
	}

	// Fail closed: the app's outbound connection is refused, not let through.
	dialOut := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return capture.DialInNetNS(ctx, pod.path, nil, "tcp", "10.253.2.1:9")
	}
	if c, err := dialOut(); err == nil {
		c.Close()
		t.Fatal("outbound connection succeeded with no ztunnel")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("outbound connection without ztunnel: %v, want connection refused", err)
	}

	// ztunnel connects: the pod, with its namespace, then the snapshot.
	z := dialZtunnel(t, env.cfg.ZtunnelSocket)
	r := z.recv(zds.TypePodAdded)
	if r.Pod.UID != "uid-web" || r.Pod.Name != "web" || r.Pod.Namespace != "demo" || r.Pod.ServiceAccount != "web-sa" ||
		len(r.Pod.IPs) != 1 || r.Pod.IPs[0] != webIP {
		t.Errorf("PodAdded %+v", r.Pod)
	}
	if got, want := nsIno(t, r.NetNS), pathIno(t, pod.path); got != want {
		t.Fatalf("ztunnel got netns inode %d, want %d", got, want)
	}
	ln, err := capture.ListenInNetNS(fmt.Sprintf("/proc/self/fd/%d", r.NetNS.Fd()), "tcp", ":15001")
	if err != nil {
		t.Fatalf("ztunnel cannot listen in the namespace it was given: %v", err)
	}
	defer ln.Close()
	z.ack()
	if r := z.recv(zds.TypeSnapshot); len(r.UIDs) != 1 || r.UIDs[0] != "uid-web" {
		t.Errorf("snapshot %v", r.UIDs)
	}
	z.ack()
	env.waitAnnotation(t, "demo", "web", RedirectionEnabled)
	// Now the app's outbound connection lands on ztunnel's listener.
	accepted := make(chan netip.AddrPort, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		dst, _ := capture.OriginalDst(c)
		accepted <- dst
	}()
	c, err := dialOut()
	if err != nil {
		t.Fatalf("outbound connection with ztunnel listening: %v", err)
	}
	c.Close()
	select {
	case dst := <-accepted:
		if dst.String() != "10.253.2.1:9" {
			t.Errorf("ztunnel saw original destination %s", dst)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ztunnel's listener accepted nothing")
	}

	// Opt out: ztunnel is told first, the rules go after its ack.
	env.updatePod(t, "demo", "web", func(p *corev1.Pod) { p.Labels = map[string]string{LabelDataplaneMode: "none"} })
	if r := z.recv(zds.TypePodRemoved); r.UID != "uid-web" {
		t.Errorf("PodRemoved %q", r.UID)
	}
	if !installed(t, pod.path) {
		t.Error("rules removed before ztunnel acked the removal")
	}
	z.ack()
	waitFor(t, "rules removed", func() bool { return !installed(t, pod.path) })
	env.waitAnnotation(t, "demo", "web", "")
	if got, err := env.hostAddrs(t); err != nil || len(got) != 0 {
		t.Errorf("host probe set %v (%v), want empty", got, err)
	}

	// Back in while ztunnel is away: rules at once, queued for ztunnel.
	z.c.Close()
	waitFor(t, "ztunnel gone", func() bool { return a.zt.Connected() == 0 })
	env.updatePod(t, "demo", "web", func(p *corev1.Pod) { p.Labels = nil })
	waitFor(t, "rules back", func() bool { return installed(t, pod.path) })
	env.waitAnnotation(t, "demo", "web", RedirectionPending)
	z = dialZtunnel(t, env.cfg.ZtunnelSocket)
	z.recv(zds.TypePodAdded)
	z.ack()
	z.recv(zds.TypeSnapshot)
	z.ack()
	env.waitAnnotation(t, "demo", "web", RedirectionEnabled)

	// Agent restart: rules and host set stay; the new agent finds the pod
	// through /proc and gives ztunnel its namespace again.
	stop()
	if !installed(t, pod.path) {
		t.Fatal("agent shutdown removed an enrolled pod's rules")
	}
	if got, err := env.hostAddrs(t); err != nil || len(got) != 1 {
		t.Errorf("host set after shutdown with an enrolled pod: %v (%v), want kept", got, err)
	}
	a, stop = env.start(t)
	if got := a.Enrolled(); len(got) != 1 || got[0].NetNSInode != pathIno(t, pod.path) {
		t.Fatalf("after restart enrolled %+v", got)
	}
	z = dialZtunnel(t, env.cfg.ZtunnelSocket)
	if r := z.recv(zds.TypePodAdded); nsIno(t, r.NetNS) != pathIno(t, pod.path) {
		t.Error("restarted agent handed over another namespace")
	}
	z.ack()
	z.recv(zds.TypeSnapshot)
	z.ack()

	// Opted out while no agent ran: the next agent finds the rules an
	// earlier one left (the annotation says so) and removes them.
	stop()
	env.updatePod(t, "demo", "web", func(p *corev1.Pod) { p.Labels = map[string]string{LabelDataplaneMode: "none"} })
	if !installed(t, pod.path) {
		t.Fatal("rules vanished while no agent ran")
	}
	a, stop = env.start(t)
	waitFor(t, "stale rules removed", func() bool { return !installed(t, pod.path) })
	env.waitAnnotation(t, "demo", "web", "")
	if got := a.Enrolled(); len(got) != 0 {
		t.Errorf("enrolled %+v", got)
	}
	z = dialZtunnel(t, env.cfg.ZtunnelSocket)
	z.recv(zds.TypeSnapshot)
	z.ack()
	env.updatePod(t, "demo", "web", func(p *corev1.Pod) { p.Labels = nil })
	z.recv(zds.TypePodAdded)
	z.ack()
	if !installed(t, pod.path) {
		t.Fatal("ztunnel got the pod before its rules were in")
	}

	// The namespace leaves the mesh: released; with nothing enrolled the
	// host table goes at shutdown.
	ns, err := env.client.CoreV1().Namespaces().Get(context.Background(), "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels = nil
	if _, err := env.client.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	z.recv(zds.TypePodRemoved)
	z.ack()
	waitFor(t, "rules removed", func() bool { return !installed(t, pod.path) })
	waitFor(t, "nothing enrolled", func() bool { return len(a.Enrolled()) == 0 })
	stop()
	if _, err := env.hostAddrs(t); err == nil {
		t.Error("host table left behind with no pod enrolled")
	}
}

// TestAgentCNIAdd: the CNI plugin's ADD captures an enrolled pod before it
// answers, says no for others, fails for pods it cannot find, and a new
// sandbox of the same pod replaces the old namespace.
func TestAgentCNIAdd(t *testing.T) {
	requireRoot(t)
	env := newAgentEnv(t,
		namespace("demo", "ambient"), namespace("plain", ""),
		testPod("demo", "b", "uid-b", ""),
		testPod("plain", "c", "uid-c", ""),
	)
	podB, podB2, podC := newTestNS(t, "b"), newTestNS(t, "b2"), newTestNS(t, "c")
	a, _ := env.start(t)
	z := dialZtunnel(t, env.cfg.ZtunnelSocket)
	z.recv(zds.TypeSnapshot)
	z.ack()

	client := cniplugin.AgentClient{Socket: env.cfg.CNISocket}
	add := func(ns, name, uid string, netns testNS, ip string) (cniplugin.AddResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.Add(ctx, cniplugin.AddRequest{
			ContainerID: "sandbox-" + name, NetNS: netns.path, IfName: "eth0",
			PodNamespace: ns, PodName: name, PodUID: uid, IPs: []netip.Addr{netip.MustParseAddr(ip)},
		})
	}

	resp, err := add("demo", "b", "uid-b", podB, "10.253.3.11")
	if err != nil || !resp.Enrolled {
		t.Fatalf("ADD b: %+v, %v", resp, err)
	}
	// Rules are in by the time the plugin gets its answer.
	if !installed(t, podB.path) {
		t.Fatal("ADD answered before the rules were installed")
	}
	r := z.recv(zds.TypePodAdded)
	if r.Pod.UID != "uid-b" || len(r.Pod.IPs) != 1 || r.Pod.IPs[0].String() != "10.253.3.11" || nsIno(t, r.NetNS) != pathIno(t, podB.path) {
		t.Errorf("PodAdded %+v", r.Pod)
	}
	z.ack()
	env.waitAnnotation(t, "demo", "b", RedirectionEnabled)

	// Rules removed behind the agent's back come back on the next check.
	if err := capture.Remove(podB.path); err != nil {
		t.Fatal(err)
	}
	a.checkDrift()
	if !installed(t, podB.path) {
		t.Error("drift check did not restore the rules")
	}

	// The namespace travels as an open file: the agent enrols the pod even
	// when it cannot open the path the runtime gave the plugin (a host
	// whose /var/run is not propagated into the agent's container).
	bf, err := os.Open(podB.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err = client.AddNetNS(ctx, cniplugin.AddRequest{
		ContainerID: "sandbox-b", NetNS: "/var/run/netns/not-visible-to-the-agent", IfName: "eth0",
		PodNamespace: "demo", PodName: "b", PodUID: "uid-b", IPs: []netip.Addr{netip.MustParseAddr("10.253.3.11")},
	}, bf)
	cancel()
	bf.Close()
	if err != nil || !resp.Enrolled {
		t.Fatalf("ADD b with the namespace passed as a file: %+v, %v", resp, err)
	}
	if r := z.recv(zds.TypePodAdded); r.Pod.UID != "uid-b" || nsIno(t, r.NetNS) != pathIno(t, podB.path) {
		t.Errorf("PodAdded after the ADD with a passed namespace: %+v", r.Pod)
	}
	z.ack()

	resp, err = add("plain", "c", "uid-c", podC, "10.253.3.12")
	if err != nil || resp.Enrolled {
		t.Errorf("ADD c (not enrolled): %+v, %v", resp, err)
	}
	if installed(t, podC.path) {
		t.Error("a pod outside the mesh got capture rules")
	}

	if _, err := add("demo", "ghost", "", podC, "10.253.3.13"); err == nil || !strings.Contains(err.Error(), "not in the node agent's cache") {
		t.Errorf("ADD for an unknown pod: %v", err)
	}
	if _, err := add("demo", "b", "uid-stale", podC, "10.253.3.13"); err == nil {
		t.Error("ADD with another pod's UID succeeded")
	}

	// A new sandbox for the same pod: ztunnel gets the new namespace.
	if resp, err := add("demo", "b", "uid-b", podB2, "10.253.3.14"); err != nil || !resp.Enrolled {
		t.Fatalf("second ADD b: %+v, %v", resp, err)
	}
	r = z.recv(zds.TypePodAdded)
	if nsIno(t, r.NetNS) != pathIno(t, podB2.path) || r.Pod.IPs[0].String() != "10.253.3.14" {
		t.Errorf("replacing PodAdded %+v", r.Pod)
	}
	z.ack()
	if got := a.Enrolled(); len(got) != 1 || got[0].NetNSInode != pathIno(t, podB2.path) {
		t.Errorf("enrolled %+v", got)
	}
	if got, err := env.hostAddrs(t); err != nil || len(got) != 1 || got[0].String() != "10.253.3.14" {
		t.Errorf("host set %v (%v)", got, err)
	}

	// The pod is deleted: ztunnel is told, the agent lets go.
	if err := env.client.CoreV1().Pods("demo").Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := z.recv(zds.TypePodRemoved); r.UID != "uid-b" {
		t.Errorf("PodRemoved %q", r.UID)
	}
	z.ack()
	waitFor(t, "b released", func() bool { return len(a.Enrolled()) == 0 })
	if installed(t, podB2.path) {
		t.Error("rules left in a deleted pod's namespace")
	}
}

// TestAgentCNIReady: once started, the agent answers the plugin's STATUS.
func TestAgentCNIReady(t *testing.T) {
	requireRoot(t)
	env := newAgentEnv(t, namespace("demo", "ambient"))
	env.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := (cniplugin.AgentClient{Socket: env.cfg.CNISocket}).Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// TestAgentCNIPluginOnExit: an agent that stops keeps the plugin in the
// node's CNI configuration (a restart: new pods wait for the next agent),
// unless RemovedFromNode says the mesh is leaving the node; then the
// plugin goes and new pods start with plain networking.
func TestAgentCNIPluginOnExit(t *testing.T) {
	requireRoot(t)
	for _, removed := range []bool{false, true} {
		t.Run(fmt.Sprintf("removed=%v", removed), func(t *testing.T) {
			env := newAgentEnv(t, namespace("demo", "ambient"))
			asked := false
			env.cfg.RemovedFromNode = func(context.Context) bool { asked = true; return removed }
			_, stop := env.start(t)
			conf := filepath.Join(env.cfg.CNI.ConfDir, "10-bridge.conflist")
			waitFor(t, "the plugin in the conflist", func() bool {
				b, _ := os.ReadFile(conf)
				return strings.Contains(string(b), cniplugin.PluginType)
			})
			stop()
			b, err := os.ReadFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			if !asked {
				t.Error("RemovedFromNode was not asked")
			}
			if got := strings.Contains(string(b), cniplugin.PluginType); got == removed {
				t.Errorf("plugin in the conflist after exit = %v, want %v:\n%s", got, !removed, b)
			}
		})
	}
}
