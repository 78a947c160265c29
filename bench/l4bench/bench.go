package l4bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// Targets from issue #4 (Istio publishes 0.06 vCPU and 12 MB per 1,000
// requests/s for ztunnel, and 0.17 ms added p90 for two hops).
const (
	targetCPUPer1k   = 0.06
	targetRSSMiB     = 20
	targetAddedP90ms = 0.1
)

// bench is one run: the namespaces, the processes and the results.
type bench struct {
	cfg   Config
	exe   string // this binary, re-executed for the roles
	dir   string // configs, certificates, access logs
	log   io.Writer
	certs certFiles
	pods  *pods

	children []*Child // in start order; stopped in reverse
	ztClient *Child
	ztServer *Child
}

// benchPath is one way from the client app to the server app.
type benchPath struct {
	res   *PathResult
	url   string   // the fortio echo server, as the client dials it
	sink  string   // the throughput sink, ip:port
	procs []*Child // the proxies on the path, client side first
}

func runBench(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, nftables, IP_TRANSPARENT): run make bench as root")
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is needed to build the pod namespaces (Debian: iproute2, util-linux): %w", bin, err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "l4bench-")
	if err != nil {
		return err
	}
	if cfg.KeepDir {
		fmt.Fprintf(stderr, "l4bench: run directory %s (kept)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{cfg: cfg, exe: exe, dir: dir, log: stderr}
	defer b.close()

	report := newReport(cfg)
	meter := StartHostMeter()
	paths, err := b.setUp(ctx)
	if err != nil {
		return err
	}
	if err := b.measure(ctx, paths); err != nil {
		return err
	}
	for _, p := range paths {
		for i, c := range p.procs {
			if m, err := ReadProcMemory(c.Pid()); err == nil {
				// VmHWM is updated lazily; never below what was sampled.
				p.res.Procs[i].PeakRSS = max(m.Peak, p.res.Procs[i].LatencyRSS)
			}
		}
		report.Paths = append(report.Paths, *p.res)
	}
	// Everything this run started has been waited for once stopped, so its
	// CPU time is in this process's children's time.
	b.stopChildren()
	report.Machine = append(report.Machine, meter.Note(), "load average at the end: "+LoadAvg())
	if err := report.Write(stdout); err != nil {
		return err
	}
	var failed []string
	for _, p := range paths {
		if len(p.res.Errors) > 0 {
			failed = append(failed, fmt.Sprintf("%s: %s", p.res.Name, strings.Join(p.res.Errors, "; ")))
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func newReport(cfg Config) *Report {
	r := &Report{Settings: Settings{
		QPS: cfg.QPS, Connections: cfg.Connections, Payload: cfg.Payload, LatencySeconds: cfg.LatencyDuration.Seconds(),
		ConnConcurrency: cfg.ConnConcurrency, ConnSeconds: cfg.ConnDuration.Seconds(), ThroughputSeconds: cfg.ThroughputDuration.Seconds(),
		TargetCPUPer1k: targetCPUPer1k, TargetRSSMiB: targetRSSMiB, TargetAddedP90Secs: targetAddedP90ms / 1e3,
	}}
	r.Machine = MachineNotes(peersNote()...)
	if cfg.ZtunnelGOMAXPROCS > 0 {
		r.Machine = append(r.Machine, fmt.Sprintf("the ztunnels run with GOMAXPROCS=%d", cfg.ZtunnelGOMAXPROCS))
	}
	return r
}

// setUp creates the certificates, the pods and every process, and returns
// the paths to measure, with their proxies' idle memory.
func (b *bench) setUp(ctx context.Context) ([]*benchPath, error) {
	b.progress("setting up: certificates, pod namespaces, capture rules, app, proxies")
	var err error
	if b.certs, err = writeCerts(b.dir, clientID, serverID); err != nil {
		return nil, err
	}
	if b.pods, err = setupPods(ctx); err != nil {
		return nil, err
	}
	if err := b.startApp(ctx); err != nil {
		return nil, err
	}
	paths, err := b.startPaths(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		for i, c := range p.procs {
			if m, err := ReadProcMemory(c.Pid()); err == nil {
				p.res.Procs[i].IdleRSS = m.RSS
			}
		}
	}
	return paths, nil
}

// measure runs each phase over every path in turn. A failed measurement is
// recorded on its path; only cancellation stops the run.
func (b *bench) measure(ctx context.Context, paths []*benchPath) error {
	phases := []struct {
		name string
		run  func(context.Context, *benchPath) error
	}{
		{"latency", b.measureLatency},
		{"connections", b.measureConnections},
		{"throughput", b.measureThroughput},
	}
	for _, ph := range phases {
		for _, p := range paths {
			if !p.res.measured() {
				continue
			}
			b.progress("%s: %s", ph.name, p.res.Name)
			if err := ph.run(ctx, p); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.progress("%s: %s failed: %v", ph.name, p.res.Name, err)
				p.res.Errors = append(p.res.Errors, ph.name+": "+err.Error())
			}
		}
	}
	return nil
}

// close stops every process and removes the namespaces.
func (b *bench) close() {
	b.stopChildren()
	if b.pods != nil {
		b.pods.Close()
	}
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "l4bench: "+format+"\n", args...)
}

// start starts a child and remembers it for the cleanup.
func (b *bench) start(name string, argv, env []string) (*Child, error) {
	c, err := StartChild(name, argv, env, b.log)
	if err != nil {
		return nil, err
	}
	b.children = append(b.children, c)
	return c, nil
}

// stopChildren stops every child still running, the last started first.
func (b *bench) stopChildren() {
	for _, c := range slices.Backward(b.children) {
		c.Stop(5 * time.Second)
	}
	b.children = nil
}

// InPod returns argv run inside ns with nsenter (which execs in place).
func InPod(ns *NetNS, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + ns.Path, "--"}, argv...)
}

func ports(ps ...uint16) string {
	var s []string
	for _, p := range ps {
		s = append(s, strconv.Itoa(int(p)))
	}
	return strings.Join(s, ",")
}

func (b *bench) startApp(ctx context.Context) error {
	c, err := b.start("app", InPod(b.pods.server, b.exe, "app",
		"-http", ports(portHTTP, portDirectHTTP), "-sink", ports(portSink, portDirectSink)), nil)
	if err != nil {
		return err
	}
	_, err = c.WaitLine(ctx, "ready", 10*time.Second)
	return err
}

// startPaths starts the proxies of every path asked for. A peer that is not
// installed, or does not start, becomes a path that is not measured (with
// the reason); ztunnel not starting is an error.
func (b *bench) startPaths(ctx context.Context) ([]*benchPath, error) {
	var out []*benchPath
	for _, name := range allPaths {
		if name != "direct" && !slices.Contains(b.cfg.Paths, name) {
			continue
		}
		p := &benchPath{res: &PathResult{Name: name}}
		out = append(out, p)
		switch name {
		case "direct":
			p.url = "http://" + hostPort(serverIP, portDirectHTTP) + "/"
			p.sink = hostPort(serverIP, portDirectSink)
		case "ztunnel":
			if err := b.startZtunnels(ctx); err != nil {
				return nil, err
			}
			p.url = "http://" + hostPort(serverIP, portHTTP) + "/"
			p.sink = hostPort(serverIP, portSink)
			p.procs = []*Child{b.ztClient, b.ztServer}
			p.res.Procs = []ProcResult{{Name: "ztunnel (client node)"}, {Name: "ztunnel (server node)"}}
		default:
			i := slices.IndexFunc(peers, func(pr peer) bool { return pr.name == name })
			pr := peers[i]
			p.url = "http://" + loopback(pr.ports.ClientHTTP) + "/"
			p.sink = loopback(pr.ports.ClientSink)
			procs, err := b.startPeer(ctx, pr)
			if err != nil {
				p.res.Skipped = err.Error()
				b.progress("%s: not measured: %v", name, err)
				continue
			}
			p.procs = procs
			p.res.Procs = []ProcResult{{Name: name + " (client side)"}, {Name: name + " (server side)"}}
		}
	}
	return out, nil
}

func (b *bench) startZtunnels(ctx context.Context) error {
	node := func(pod string, ns *NetNS, ip, peerIP fmt.Stringer, self, peer, cert string) []string {
		argv := []string{b.exe, "ztunnel", "-node", pod, "-pod", pod + "," + ip.String() + "," + ns.Path,
			"-identity", self, "-cert", cert, "-ca", b.certs.CA,
			"-peer-ip", peerIP.String(), "-peer-identity", peer, "-allow", peer,
			"-access-log", filepath.Join(b.dir, "ztunnel-"+pod+"-access.log")}
		if b.cfg.ProfileDir != "" {
			argv = append(argv, "-profile-dir", b.cfg.ProfileDir)
		}
		return argv
	}
	var env []string
	if b.cfg.ZtunnelGOMAXPROCS > 0 {
		env = []string{"GOMAXPROCS=" + strconv.Itoa(b.cfg.ZtunnelGOMAXPROCS)}
	}
	var err error
	// The ztunnels run in the host namespace and open their listeners in
	// the pod's, as the daemon does.
	if b.ztClient, err = b.start("ztunnel-client", node("client", b.pods.client, clientIP, serverIP, clientID.String(), serverID.String(), b.certs.Client), env); err != nil {
		return err
	}
	if b.ztServer, err = b.start("ztunnel-server", node("server", b.pods.server, serverIP, clientIP, serverID.String(), clientID.String(), b.certs.Server), env); err != nil {
		return err
	}
	for _, c := range []*Child{b.ztClient, b.ztServer} {
		if _, err := c.WaitLine(ctx, "ready", 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// startPeer renders both sides' configurations, starts them in their pods
// and waits until they listen.
func (b *bench) startPeer(ctx context.Context, pr peer) ([]*Child, error) {
	bin, err := pr.lookPath()
	if err != nil {
		return nil, fmt.Errorf("%s is not installed (Debian package %s; bench/install-peers.sh installs it)", pr.name, pr.pkg)
	}
	procs := make([]*Child, 2)
	// The server side first, so the client side's first connection finds it.
	for _, s := range []side{serverSide, clientSide} {
		cfg := peerConfig{ServerIP: serverIP, Ports: pr.ports, AppHTTP: portHTTP, AppSink: portSink,
			Cert: b.certs.Client, CA: b.certs.CA, Suite: TLSSuite}
		lo := netip.MustParseAddr("127.0.0.1")
		ns, listen := b.pods.client, []netip.AddrPort{netip.AddrPortFrom(lo, pr.ports.ClientHTTP), netip.AddrPortFrom(lo, pr.ports.ClientSink)}
		if s == serverSide {
			cfg.Cert = b.certs.Server
			ns, listen = b.pods.server, []netip.AddrPort{netip.AddrPortFrom(serverIP, pr.ports.ServerHTTP), netip.AddrPortFrom(serverIP, pr.ports.ServerSink)}
		}
		text, err := pr.render(s, cfg)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(b.dir, fmt.Sprintf("%s-%s.cfg", pr.name, s))
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, err
		}
		c, err := b.start(fmt.Sprintf("%s-%s", pr.name, s), InPod(ns, pr.command(bin, path)...), nil)
		if err != nil {
			return nil, err
		}
		for _, addr := range listen {
			if err := WaitListening(ctx, ns, addr, c); err != nil {
				return nil, err
			}
		}
		procs[s] = c
	}
	return procs, nil
}

// WaitListening polls the namespace's TCP table until addr is listening
// (or c exits). It never connects, so the peers log no aborted handshake.
func WaitListening(ctx context.Context, ns *NetNS, addr netip.AddrPort, c *Child) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var table []byte
		err := capture.WithNetNS(ns.Path, func() error {
			var err error
			// thread-self: the namespace of this (locked) thread, not
			// the process's.
			table, err = os.ReadFile("/proc/thread-self/net/tcp")
			return err
		})
		if err != nil {
			return err
		}
		ok, err := tcpListening(table, addr)
		if err != nil || ok {
			return err
		}
		if !c.Running() {
			return c.Exited()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not listen on %s after 10s", c.name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bench) measureLatency(ctx context.Context, p *benchPath) error {
	var res HTTPResult
	usage, err := b.load(ctx, p, "latency", &res, b.cfg.Warmup+b.cfg.LatencyDuration,
		"-mode", "http", "-url", p.url, "-qps", fmt.Sprint(b.cfg.QPS), "-c", strconv.Itoa(b.cfg.Connections),
		"-payload", strconv.Itoa(b.cfg.Payload), "-duration", b.cfg.LatencyDuration.String(), "-warmup", b.cfg.Warmup.String())
	if err != nil {
		return err
	}
	p.res.Latency = &res
	for i, u := range usage {
		p.res.Procs[i].LatencyCores = u.Cores
		p.res.Procs[i].LatencyRSS = u.MaxRSS
		p.res.Procs[i].LatencyAnon = u.MaxAnon
	}
	if p.res.Name == "ztunnel" {
		return b.checkZtunnelCarried(ctx)
	}
	return nil
}

// checkZtunnelCarried makes sure the ztunnel path went through both
// ztunnels: the server node's access log has lines (written when the
// fortio connections closed, at the end of the load).
func (b *bench) checkZtunnelCarried(ctx context.Context) error {
	log := filepath.Join(b.dir, "ztunnel-server-access.log")
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(log)
		if strings.Contains(string(data), `"direction":"inbound"`) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the server node's ztunnel logged no inbound connection (%s): traffic did not go through ztunnel", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bench) measureConnections(ctx context.Context, p *benchPath) error {
	var res HTTPResult
	warmup := min(b.cfg.Warmup, time.Second)
	usage, err := b.load(ctx, p, "connections", &res, warmup+b.cfg.ConnDuration,
		"-mode", "http", "-url", p.url, "-qps", "0", "-c", strconv.Itoa(b.cfg.ConnConcurrency),
		"-payload", "0", "-keepalive=false", "-duration", b.cfg.ConnDuration.String(), "-warmup", warmup.String())
	if err != nil {
		return err
	}
	p.res.Connect = &res
	for i, u := range usage {
		p.res.Procs[i].ConnectCores = u.Cores
	}
	return nil
}

func (b *bench) measureThroughput(ctx context.Context, p *benchPath) error {
	var res bulkResult
	usage, err := b.load(ctx, p, "throughput", &res, b.cfg.ThroughputDuration,
		"-mode", "bulk", "-addr", p.sink, "-duration", b.cfg.ThroughputDuration.String())
	if err != nil {
		return err
	}
	p.res.Throughput = &res
	for i, u := range usage {
		p.res.Procs[i].ThroughputCores = u.Cores
	}
	return nil
}

// load runs the load role in the client pod with args and returns the usage
// of p's proxies over the measured window; the ztunnels profile the phase
// when asked to. Expected is about how long the load runs.
func (b *bench) load(ctx context.Context, p *benchPath, phase string, result any, expected time.Duration, args ...string) ([]ProcUsage, error) {
	spec := LoadSpec{Exe: b.exe, NS: b.pods.client, Args: args, Expected: expected, Procs: p.procs, Log: b.log}
	if b.cfg.ProfileDir != "" && p.res.Name == "ztunnel" {
		spec.Profile, spec.Profiled = phase, p.procs
	}
	return RunLoad(ctx, spec, result)
}
