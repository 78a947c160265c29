package l7bench

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

	"github.com/ambientlite/mesh/bench/l4bench"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// bench is one run: the namespaces, the control plane, the processes and
// the results.
type bench struct {
	cfg Config
	exe string // this binary, re-executed for the roles
	dir string // configurations, certificates, tokens, logs
	log io.Writer
	net *podNetwork
	cp  *controlPlane

	children []*l4bench.Child // in start order; stopped in reverse
	// apps are the two backends, by version.
	apps               map[string]*l4bench.Child
	ztClient, ztServer *l4bench.Child
	waypoint           *l4bench.Child
}

// benchPath is one way from the client pod to the backends.
type benchPath struct {
	res   *PathResult
	url   string           // what the load generator requests
	procs []*l4bench.Child // the proxies on the path, client side first
}

// pods are the benchmark's pods: the client and both backends captured by
// ztunnel's rules (the ports of the direct path and of the peers left
// out), the waypoint's pod not (as Istio's waypoints are not).
func pods() []podSpec {
	return []podSpec{
		{name: "client", workload: "client-0", ip: clientIP, capture: &capture.Config{ExcludeOutboundPorts: clientExcluded}, routes: []netip.Prefix{vipPrefix}},
		{name: "v1", workload: "reviews-v1-0", ip: v1IP, capture: &capture.Config{ExcludeInboundPorts: serverExcluded}},
		{name: "waypoint", workload: "waypoint-0", ip: waypointIP},
		{name: "v2", workload: "reviews-v2-0", ip: v2IP, capture: &capture.Config{ExcludeInboundPorts: serverExcluded}},
	}
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
	if cfg.WaypointBin == "" {
		cfg.WaypointBin = filepath.Join(filepath.Dir(exe), "l7bench-waypoint")
	}
	if _, err := os.Stat(cfg.WaypointBin); err != nil && slices.Contains(cfg.Paths, "waypoint") {
		return fmt.Errorf("the waypoint's binary: %w (build it next to l7bench: go build -o %s ./bench/cmd/l7bench-waypoint, or give -waypoint-bin)", err, filepath.Dir(exe))
	}
	dir, err := os.MkdirTemp("", "l7bench-")
	if err != nil {
		return err
	}
	if cfg.KeepDir {
		fmt.Fprintf(stderr, "l7bench: run directory %s (kept)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{cfg: cfg, exe: exe, dir: dir, log: stderr, apps: map[string]*l4bench.Child{}}
	defer b.close()

	report := &Report{Machine: l4bench.MachineNotes(peerNote()...), Settings: Settings{
		QPS: cfg.QPS, Connections: cfg.Connections, Payload: cfg.Payload, LatencySeconds: cfg.LatencyDuration.Seconds(),
		SaturationSeconds: cfg.SaturationDuration.Seconds(), WaypointLogLevel: cfg.WaypointLogLevel,
	}}
	meter := l4bench.StartHostMeter()
	paths, err := b.setUp(ctx)
	if err != nil {
		return err
	}
	if err := b.measure(ctx, paths); err != nil {
		return err
	}
	for _, p := range paths {
		for i, c := range p.procs {
			if m, err := l4bench.ReadProcMemory(c.Pid()); err == nil {
				// VmHWM is updated lazily; never below what was sampled.
				p.res.Procs[i].PeakRSS = max(m.Peak, p.res.Procs[i].LatencyRSS)
			}
		}
		report.Paths = append(report.Paths, *p.res)
	}
	// Everything this run started has been waited for once stopped, so its
	// CPU time is in this process's children's time.
	b.stopChildren()
	report.Machine = append(report.Machine, meter.Note(), "load average at the end: "+l4bench.LoadAvg())
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

// peerNote names HAProxy's version, when installed.
func peerNote() []string {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil
	}
	return []string{"peer: " + l4bench.PeerVersion(bin) + "; its mutual-TLS variant TLS 1.3 " + l4bench.TLSSuite + " only"}
}

// setUp creates the pods, the control plane, the apps and every proxy, and
// returns the paths to measure, with their proxies' idle memory.
func (b *bench) setUp(ctx context.Context) ([]*benchPath, error) {
	b.progress("setting up: pod namespaces on a bridge, capture rules, istiod-lite's CA and xDS server, apps, proxies")
	res, err := compileMesh()
	if err != nil {
		return nil, err
	}
	if b.net, err = setupPodNetwork(ctx, pods()); err != nil {
		return nil, err
	}
	if b.cp, err = startControlPlane(ctx, b.dir, res); err != nil {
		return nil, err
	}
	if err := b.cp.serveIn(b.net.pod("waypoint")); err != nil {
		return nil, err
	}
	for _, v := range []string{"v1", "v2"} {
		c, err := b.start("app-"+v, l4bench.InPod(b.net.pod(v), b.exe, "app", "-http", ports(portApp, portDirect)), nil)
		if err != nil {
			return nil, err
		}
		if _, err := c.WaitLine(ctx, "ready", 10*time.Second); err != nil {
			return nil, err
		}
		b.apps[v] = c
	}
	paths, err := b.startPaths(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		for i, c := range p.procs {
			if m, err := l4bench.ReadProcMemory(c.Pid()); err == nil {
				p.res.Procs[i].IdleRSS = m.RSS
			}
		}
	}
	return paths, nil
}

// startPaths starts the proxies of every path asked for. A peer that is not
// installed or does not start becomes a path that is not measured (with
// the reason); the ztunnels or the waypoint not starting is an error.
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
			p.res.Hops = "none (v1's port left out of capture)"
			p.url = "http://" + netip.AddrPortFrom(v1IP, portDirect).String() + "/"
		case "ztunnel":
			if err := b.startZtunnels(ctx); err != nil {
				return nil, err
			}
			p.res.Hops = "ztunnel → ztunnel (v1's pod address)"
			p.url = "http://" + netip.AddrPortFrom(v1IP, portApp).String() + "/"
			p.procs = []*l4bench.Child{b.ztClient, b.ztServer}
			p.res.Procs = []ProcResult{{Name: "ztunnel (client node)"}, {Name: "ztunnel (server node)"}}
		case "waypoint":
			if err := b.startZtunnels(ctx); err != nil {
				return nil, err
			}
			if err := b.startWaypoint(ctx); err != nil {
				return nil, err
			}
			p.res.Hops = "ztunnel → waypoint → ztunnel (reviews VIP, 90/10)"
			p.url = "http://" + netip.AddrPortFrom(reviewsVIP, portService).String() + "/"
			p.procs = []*l4bench.Child{b.ztClient, b.waypoint, b.ztServer}
			p.res.Procs = []ProcResult{{Name: "ztunnel (client node)"}, {Name: "waypoint", L7: true}, {Name: "ztunnel (server node)"}}
		default:
			procs, err := b.startPeer(ctx, name)
			if err != nil {
				p.res.Skipped = err.Error()
				b.progress("%s: not measured: %v", name, err)
				continue
			}
			p.procs = procs
			for _, pp := range peerProcesses(name, b.cp.files) {
				p.res.Procs = append(p.res.Procs, ProcResult{Name: pp.name, L7: pp.cfg.Mode == "http"})
			}
			if name == "haproxy" {
				p.res.Hops = "HAProxy, plain HTTP both hops, 90/10"
				p.url = "http://" + netip.AddrPortFrom(waypointIP, portHAProxy).String() + "/"
			} else {
				p.res.Hops = "HAProxy sidecar → HAProxy → HAProxy sidecar, mutual TLS both hops, 90/10"
				p.url = "http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), portSidecar).String() + "/"
			}
		}
	}
	return out, nil
}

// startZtunnels starts the two nodes' ztunnels (once): the client node's
// serves the client pod, the server node's both backends' pods. They run
// in the host namespace, open their listeners in the pods' and take their
// configuration from the control plane over delta ADS.
func (b *bench) startZtunnels(ctx context.Context) error {
	if b.ztClient != nil {
		return nil
	}
	node := func(name string, id fmt.Stringer, cert string, served ...string) []string {
		argv := []string{b.exe, "ztunnel", "-node", name, "-identity", id.String(), "-cert", cert, "-ca", b.cp.files.Root,
			"-xds-address", b.cp.hostAddr, "-xds-server-name", caServerName, "-token-file", b.cp.files.ZtunnelToken,
			"-access-log", filepath.Join(b.dir, "ztunnel-"+name+"-access.log")}
		for _, s := range pods() {
			if slices.Contains(served, s.name) {
				argv = append(argv, "-pod", s.workload+","+s.ip.String()+","+b.net.pod(s.name).Path)
			}
		}
		return argv
	}
	var err error
	if b.ztClient, err = b.start("ztunnel-client", node("client", clientID, b.cp.files.Client, "client"), nil); err != nil {
		return err
	}
	if b.ztServer, err = b.start("ztunnel-server", node("server", reviewsID, b.cp.files.Reviews, "v1", "v2"), nil); err != nil {
		return err
	}
	for _, c := range []*l4bench.Child{b.ztClient, b.ztServer} {
		if _, err := c.WaitLine(ctx, "ready", 15*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// startWaypoint starts the waypoint in its pod, with the flags istiod-lite's
// waypoint controller would give it (pointed at the bench's control plane
// on the pod's loopback), and waits until it is ready.
func (b *bench) startWaypoint(ctx context.Context) error {
	argv := []string{b.cfg.WaypointBin, "-log", filepath.Join(b.dir, "waypoint.log"),
		"-ready-url", fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", portWaypointRdy)}
	if b.cfg.ProfileDir != "" {
		argv = append(argv, "-profile-dir", b.cfg.ProfileDir)
	}
	control := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), portControl).String()
	argv = append(argv, "--",
		"--log-level", b.cfg.WaypointLogLevel,
		"--pod-name", "waypoint-0", "--pod-namespace", waypointID.Namespace, "--service-account", waypointID.ServiceAccount,
		"--node-name", "server", "--instance-ip", waypointIP.String(), "--gateway-name", "waypoint",
		"--ca-address", control, "--ca-server-name", caServerName, "--xds-address", control, "--xds-server-name", caServerName,
		"--token-file", b.cp.files.WaypointToken, "--root-cert-file", b.cp.files.Root,
		"--hbone-addr", fmt.Sprintf(":%d", portHBONE),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", portWaypointMet), "--status-addr", fmt.Sprintf("127.0.0.1:%d", portWaypointRdy),
		"--drain-grace", "1s")
	var err error
	if b.waypoint, err = b.start("waypoint", l4bench.InPod(b.net.pod("waypoint"), argv...), nil); err != nil {
		return err
	}
	_, err = b.waypoint.WaitLine(ctx, "ready", 30*time.Second)
	return err
}

// startPeer renders the configurations of a peer path's processes, starts
// them in their pods (the server side first) and waits until they listen.
func (b *bench) startPeer(ctx context.Context, name string) ([]*l4bench.Child, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, errors.New("haproxy is not installed (Debian package haproxy; bench/install-peers.sh installs it)")
	}
	procs := peerProcesses(name, b.cp.files)
	children := make([]*l4bench.Child, len(procs))
	for i := len(procs) - 1; i >= 0; i-- {
		pp := procs[i]
		text, err := pp.cfg.render()
		if err != nil {
			return nil, err
		}
		path := filepath.Join(b.dir, pp.file)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, err
		}
		ns := b.net.pod(pp.pod)
		// -db: in the foreground, one process (its threads: one per CPU
		// by default).
		c, err := b.start(strings.TrimSuffix(pp.file, ".cfg"), l4bench.InPod(ns, bin, "-db", "-f", path), nil)
		if err != nil {
			return nil, err
		}
		if err := l4bench.WaitListening(ctx, ns, pp.cfg.Listen, c); err != nil {
			return nil, err
		}
		children[i] = c
	}
	return children, nil
}

// measure runs each phase over every path in turn. A failed measurement is
// recorded on its path; only cancellation stops the run.
func (b *bench) measure(ctx context.Context, paths []*benchPath) error {
	phases := []struct {
		name string
		run  func(context.Context, *benchPath) error
	}{
		{"latency", b.measureLatency},
		{"saturation", b.measureSaturation},
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
	for _, p := range paths {
		if err := checkSplit(p.res); err != nil {
			p.res.Errors = append(p.res.Errors, err.Error())
		}
	}
	return nil
}

func (b *bench) measureLatency(ctx context.Context, p *benchPath) error {
	var res l4bench.HTTPResult
	usage, err := b.load(ctx, p, "latency", &res, b.cfg.Warmup+b.cfg.LatencyDuration,
		"-qps", fmt.Sprint(b.cfg.QPS), "-duration", b.cfg.LatencyDuration.String(), "-warmup", b.cfg.Warmup.String())
	if err != nil {
		return err
	}
	p.res.Latency = &res
	for i, u := range usage {
		p.res.Procs[i].LatencyCores = u.Cores
		p.res.Procs[i].LatencyRSS = u.MaxRSS
		p.res.Procs[i].LatencyAnon = u.MaxAnon
		p.res.Procs[i].LatencySched = u.Sched
	}
	switch p.res.Name {
	case "ztunnel", "waypoint":
		return b.checkCarried(ctx, p.res.Name)
	}
	return nil
}

func (b *bench) measureSaturation(ctx context.Context, p *benchPath) error {
	var res l4bench.HTTPResult
	warmup := min(b.cfg.Warmup, time.Second)
	usage, err := b.load(ctx, p, "saturation", &res, warmup+b.cfg.SaturationDuration,
		"-qps", "0", "-duration", b.cfg.SaturationDuration.String(), "-warmup", warmup.String())
	if err != nil {
		return err
	}
	p.res.Saturation = &res
	for i, u := range usage {
		p.res.Procs[i].SaturationCores = u.Cores
	}
	return nil
}

// load runs the HTTP load role in the client pod against p's URL with
// args added, and returns the usage of p's proxies over the measured
// window; the waypoint profiles the phase when asked to. The requests each
// backend served meanwhile are added to p's counts.
func (b *bench) load(ctx context.Context, p *benchPath, phase string, result *l4bench.HTTPResult, expected time.Duration, args ...string) ([]l4bench.ProcUsage, error) {
	spec := l4bench.LoadSpec{Exe: b.exe, NS: b.net.pod("client"), Expected: expected, Procs: p.procs, Log: b.log,
		Args: append([]string{"-mode", "http", "-url", p.url, "-c", strconv.Itoa(b.cfg.Connections), "-payload", strconv.Itoa(b.cfg.Payload)}, args...)}
	if b.cfg.ProfileDir != "" && p.res.Name == "waypoint" {
		spec.Profile, spec.Profiled = phase, []*l4bench.Child{b.waypoint}
	}
	v1, v2, err := b.counts(ctx)
	if err != nil {
		return nil, err
	}
	usage, err := l4bench.RunLoad(ctx, spec, result)
	if err != nil {
		return nil, err
	}
	v1After, v2After, err := b.counts(ctx)
	if err != nil {
		return nil, err
	}
	p.res.V1 += v1After - v1
	p.res.V2 += v2After - v2
	return usage, nil
}

// counts asks both apps how many requests they have served.
func (b *bench) counts(ctx context.Context) (v1, v2 int64, err error) {
	var n [2]int64
	for i, v := range []string{"v1", "v2"} {
		app := b.apps[v]
		if err := app.Send("count"); err != nil {
			return 0, 0, fmt.Errorf("app %s: %w", v, err)
		}
		line, err := app.WaitLine(ctx, "count ", 5*time.Second)
		if err != nil {
			return 0, 0, err
		}
		if n[i], err = strconv.ParseInt(strings.TrimPrefix(line, "count "), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("app %s: %q: %w", v, line, err)
		}
	}
	return n[0], n[1], nil
}

// checkSplit makes sure every request reached the backend it should: v1
// alone on the direct and L4 paths; on the split paths, both, v2 getting a
// share near the route's 10% (the waypoint picks by weight at random per
// request, HAProxy by weighted round robin). Only a split that cannot come
// from the route is an error (a path that bypassed its L7 proxy sends
// everything to one backend, the Service without the route about half to
// each); the share is printed either way.
func checkSplit(p *PathResult) error {
	if !p.measured() || p.Latency == nil {
		return nil
	}
	share, ok := p.v2Share()
	switch p.Name {
	case "direct", "ztunnel":
		if p.V2 > 0 || !ok {
			return fmt.Errorf("v1 served %d requests, v2 %d: want all on v1", p.V1, p.V2)
		}
	default:
		if !ok || share <= 0 || share >= 0.3 {
			return fmt.Errorf("v1 served %d requests, v2 %d: not the route's 90/10 split", p.V1, p.V2)
		}
	}
	return nil
}

// checkCarried makes sure the L4 path went through the server node's
// ztunnel (its access log has inbound lines once the load's connections
// closed) and, at a log level that logs requests, that the waypoint applied
// the route on the waypoint path. (checkSplit covers the rest.)
func (b *bench) checkCarried(ctx context.Context, path string) error {
	file, want := filepath.Join(b.dir, "ztunnel-server-access.log"), `"direction":"inbound"`
	if path == "waypoint" {
		if b.cfg.WaypointLogLevel != "info" && b.cfg.WaypointLogLevel != "debug" {
			return nil
		}
		file, want = filepath.Join(b.dir, "waypoint.log"), `"route":"HTTPRoute/bench/reviews#0"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(file)
		if strings.Contains(string(data), want) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s has no %s: traffic did not go where it should", file, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// close stops every process and removes the namespaces.
func (b *bench) close() {
	b.stopChildren()
	b.cp.close()
	if b.net != nil {
		b.net.Close()
	}
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "l7bench: "+format+"\n", args...)
}

// start starts a child and remembers it for the cleanup.
func (b *bench) start(name string, argv, env []string) (*l4bench.Child, error) {
	c, err := l4bench.StartChild(name, argv, env, b.log)
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

func ports(ps ...uint16) string {
	var s []string
	for _, p := range ps {
		s = append(s, strconv.Itoa(int(p)))
	}
	return strings.Join(s, ",")
}
