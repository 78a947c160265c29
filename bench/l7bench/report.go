package l7bench

import (
	"fmt"
	"io"
	"strings"

	"github.com/ambientlite/mesh/bench/l4bench"
)

// Targets from issue #5 (Istio's published figures for its Envoy
// waypoint): per 1,000 requests/s at most 0.25 cores and 60 MB, and more
// requests per core than the peer.
const (
	targetCPUPer1k = 0.25
	targetRSSMiB   = 60
)

// Report is one run's results, rendered as markdown by Write.
type Report struct {
	Machine  []string // notes on the machine and the run, one per line
	Settings Settings
	Paths    []PathResult // direct first
}

// Settings are the load parameters the numbers depend on.
type Settings struct {
	QPS               float64
	Connections       int
	Payload           int
	LatencySeconds    float64
	SaturationSeconds float64
	WaypointLogLevel  string
}

// PathResult is what was measured on one path. A nil measurement was not
// taken (see Skipped and Errors).
type PathResult struct {
	Name    string
	Hops    string   // what the request crosses, e.g. "ztunnel → waypoint → ztunnel"
	Skipped string   // why the path was not measured at all
	Errors  []string // measurements that failed
	// Latency is the fixed-rate phase, Saturation the as-fast-as-possible
	// one.
	Latency, Saturation *l4bench.HTTPResult
	// V1 and V2 are the requests each backend served during this path's
	// measurements (warm-ups included).
	V1, V2 int64
	Procs  []ProcResult // the path's proxy processes, client side first
}

// ProcResult is the cost of one proxy process.
type ProcResult struct {
	Name string
	// L7 marks the process that does the routing (the waypoint, HAProxy's
	// L7 proxy): the one the targets are about.
	L7 bool
	// LatencyCores and SaturationCores are the CPU used during each
	// phase, in cores (CPU seconds per second).
	LatencyCores, SaturationCores float64
	// IdleRSS is VmRSS once set up, before any load.
	IdleRSS int64
	// LatencyRSS is the largest VmRSS sampled during the fixed-rate phase,
	// LatencyAnon the largest RssAnon.
	LatencyRSS, LatencyAnon int64
	// PeakRSS is VmHWM at the end of the run (after saturation).
	PeakRSS int64
	// LatencySched is how the process's threads were scheduled during the
	// fixed-rate phase.
	LatencySched l4bench.SchedStat
}

func (p *PathResult) measured() bool { return p.Skipped == "" }

// l7 returns the path's routing process, or nil.
func (p *PathResult) l7() *ProcResult {
	for i := range p.Procs {
		if p.Procs[i].L7 {
			return &p.Procs[i]
		}
	}
	return nil
}

// total sums a path's processes into one row.
func (p *PathResult) total() ProcResult {
	s := ProcResult{Name: p.Name + ": all proxies"}
	for _, pr := range p.Procs {
		s.LatencyCores += pr.LatencyCores
		s.SaturationCores += pr.SaturationCores
		s.IdleRSS += pr.IdleRSS
		s.LatencyRSS += pr.LatencyRSS
		s.LatencyAnon += pr.LatencyAnon
		s.PeakRSS += pr.PeakRSS
		s.LatencySched.Run += pr.LatencySched.Run
		s.LatencySched.Wait += pr.LatencySched.Wait
		s.LatencySched.Slices += pr.LatencySched.Slices
	}
	return s
}

// v2Share is the fraction of the requests the v2 backend served; false if
// the backends served none.
func (p *PathResult) v2Share() (float64, bool) {
	if p.V1+p.V2 == 0 {
		return 0, false
	}
	return float64(p.V2) / float64(p.V1+p.V2), true
}

func (r *Report) path(name string) *PathResult {
	for i := range r.Paths {
		if r.Paths[i].Name == name && r.Paths[i].measured() {
			return &r.Paths[i]
		}
	}
	return nil
}

// qps is a phase's achieved rate; 0 when it was not measured.
func qps(h *l4bench.HTTPResult) float64 {
	if h == nil {
		return 0
	}
	return h.QPS
}

// perCore is requests per second per core of CPU; 0 when unknown.
func perCore(rate, cores float64) float64 {
	if rate <= 0 || cores <= 0 {
		return 0
	}
	return rate / cores
}

// Write renders the report as markdown.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	for _, m := range r.Machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	body := fmt.Sprintf("%d-byte POST bodies echoed back", s.Payload)
	if s.Payload == 0 {
		body = "small GETs"
	}
	fmt.Fprintf(&b, "- load: fortio over %d keep-alive connections, %s; latency: %s req/s, %s measured per path; "+
		"saturation: as fast as the path carries, %s measured per path; the waypoint's log level: %s\n\n",
		s.Connections, body, l4bench.Num(s.QPS, 0), secs(s.LatencySeconds), secs(s.SaturationSeconds), s.WaypointLogLevel)

	direct := r.path("direct")
	b.WriteString("| path | hops | req/s at saturation | × direct | p50 | p90 | p99 | added p90 | req/s | v2 share |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for i := range r.Paths {
		p := &r.Paths[i]
		if !p.measured() {
			fmt.Fprintf(&b, "| %s | %s | not measured: %s | | | | | | | |\n", p.Name, p.Hops, p.Skipped)
			continue
		}
		cells := []string{p.Name, p.Hops}
		if sat := p.Saturation; sat != nil {
			cells = append(cells, withErrors(l4bench.Num(sat.QPS, 0), sat.Errors), l4bench.Ratio(sat.QPS, qps(direct.saturation())))
		} else {
			cells = append(cells, "–", "–")
		}
		if l := p.Latency; l != nil {
			added := "–"
			if direct != nil && direct.Latency != nil && p != direct {
				added = fmt.Sprintf("%+.3f ms", (l.P90-direct.Latency.P90)*1e3)
			}
			cells = append(cells, l4bench.Millis(l.P50), l4bench.Millis(l.P90), l4bench.Millis(l.P99), added, withErrors(l4bench.Num(l.QPS, 0), l.Errors))
		} else {
			cells = append(cells, "–", "–", "–", "–", "–")
		}
		share := "–"
		if f, ok := p.v2Share(); ok && p.V2 > 0 {
			share = fmt.Sprintf("%.1f%% (%s of %s)", 100*f, l4bench.Num(float64(p.V2), 0), l4bench.Num(float64(p.V1+p.V2), 0))
		}
		cells = append(cells, share)
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}

	fmt.Fprintf(&b, "\nProxy processes (CPU from /proc/<pid>/stat over each measured window; RSS: VmRSS before any load and the largest sampled during the %s req/s phase, with its anonymous part (RssAnon: without the executable's pages); peak: VmHWM at the end of the run; requests per core: the path's rate at saturation over the process's cores then):\n\n", l4bench.Num(s.QPS, 0))
	b.WriteString("| process | cores at " + l4bench.Num(s.QPS, 0) + " req/s | cores per 1,000 req/s | RSS idle | RSS at " + l4bench.Num(s.QPS, 0) + " req/s | peak RSS | cores at saturation | requests per core at saturation |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for i := range r.Paths {
		p := &r.Paths[i]
		if !p.measured() || len(p.Procs) == 0 {
			continue
		}
		rows := p.Procs
		if len(p.Procs) > 1 {
			rows = append(rows[:len(rows):len(rows)], p.total())
		}
		for _, pr := range rows {
			name := pr.Name
			if pr.L7 {
				name = "**" + name + "**"
			}
			fmt.Fprintf(&b, "| %s | %.3f | %.3f | %s | %s (anon %s) | %s | %.3f | %s |\n", name, pr.LatencyCores, l4bench.Per1k(pr.LatencyCores, qps(p.Latency)),
				l4bench.MiB(pr.IdleRSS), l4bench.MiB(pr.LatencyRSS), l4bench.MiB(pr.LatencyAnon), l4bench.MiB(pr.PeakRSS),
				pr.SaturationCores, l4bench.Num(perCore(qps(p.Saturation), pr.SaturationCores), 0))
		}
	}

	r.writeScheduling(&b)

	b.WriteString("\nRatios, the waypoint path's number over the other path's (same run; req/s and requests per core: higher is better; p90, CPU and RSS: lower is better):\n\n")
	for _, l := range r.ratios() {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	b.WriteString("\nTargets (issue #5, Istio's Envoy waypoint figures):\n\n")
	b.WriteString("| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t[0], t[1], t[2])
	}
	for i := range r.Paths {
		for _, e := range r.Paths[i].Errors {
			fmt.Fprintf(&b, "\nerror on %s: %s\n", r.Paths[i].Name, e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeScheduling adds the table of how the proxies' threads were
// scheduled at the fixed rate: on a shared machine, a process that wakes
// often waits often for a CPU, and that waiting is latency.
func (r *Report) writeScheduling(b *strings.Builder) {
	var rows []string
	for i := range r.Paths {
		p := &r.Paths[i]
		if !p.measured() || p.Latency == nil || p.Latency.Requests == 0 {
			continue
		}
		for _, pr := range p.Procs {
			st := pr.LatencySched
			if st.Slices == 0 {
				continue
			}
			n := float64(p.Latency.Requests)
			rows = append(rows, fmt.Sprintf("| %s | %s | %.1f | %s µs | %s µs | %.2f |", p.Name, pr.Name, float64(st.Slices)/n,
				l4bench.Num(float64(st.Run.Microseconds())/n, 0), l4bench.Num(float64(st.Wait.Microseconds())/n, 0), st.Wait.Seconds()/p.Latency.Seconds))
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "\nScheduling during the %s req/s phase (/proc/<pid>/task/*/schedstat, summed over the process's threads): times a thread was put on a CPU, CPU time and time spent ready but waiting for a CPU, per request; threads waiting on average:\n\n", l4bench.Num(r.Settings.QPS, 0))
	b.WriteString("| path | process | CPU slices per request | CPU per request | run-queue wait per request | threads waiting |\n|---|---|---|---|---|---|\n")
	for _, row := range rows {
		b.WriteString(row + "\n")
	}
}

func (p *PathResult) saturation() *l4bench.HTTPResult {
	if p == nil {
		return nil
	}
	return p.Saturation
}

// ratios are the comparison lines: the waypoint path against direct, the
// L4 path and each peer; against a peer also its L7 process and all its
// processes.
func (r *Report) ratios() []string {
	wp := r.path("waypoint")
	if wp == nil {
		return []string{"waypoint not measured: no ratio"}
	}
	var out []string
	for _, name := range []string{"direct", "ztunnel", "haproxy", "haproxy-mtls"} {
		o := r.path(name)
		if o == nil {
			continue
		}
		var parts []string
		if wp.Saturation != nil && o.Saturation != nil {
			parts = append(parts, "req/s at saturation "+l4bench.Ratio(wp.Saturation.QPS, o.Saturation.QPS))
		}
		if wp.Latency != nil && o.Latency != nil {
			parts = append(parts, "p90 "+l4bench.Ratio(wp.Latency.P90, o.Latency.P90))
		}
		if a, b := wp.l7(), o.l7(); a != nil && b != nil {
			parts = append(parts, "L7 process: "+r.procRatios(wp, o, *a, *b))
		}
		if len(o.Procs) > 0 {
			parts = append(parts, "all proxies: "+r.procRatios(wp, o, wp.total(), o.total()))
		}
		out = append(out, fmt.Sprintf("waypoint/%s: %s", name, strings.Join(parts, ", ")))
	}
	return out
}

func (r *Report) procRatios(wp, o *PathResult, a, b ProcResult) string {
	return fmt.Sprintf("CPU per 1,000 req/s %s, RSS %s, requests per core %s",
		l4bench.Ratio(l4bench.Per1k(a.LatencyCores, qps(wp.Latency)), l4bench.Per1k(b.LatencyCores, qps(o.Latency))),
		l4bench.Ratio(float64(a.LatencyRSS), float64(b.LatencyRSS)),
		l4bench.Ratio(perCore(qps(wp.Saturation), a.SaturationCores), perCore(qps(o.Saturation), b.SaturationCores)))
}

// targets are issue #5's targets, each {target, measured, verdict}.
func (r *Report) targets() [][3]string {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	wp := r.path("waypoint")
	var w *ProcResult
	if wp != nil {
		w = wp.l7()
	}
	if w == nil || wp.Latency == nil {
		return [][3]string{{"waypoint targets", "not measured", ""}}
	}
	cpu := l4bench.Per1k(w.LatencyCores, wp.Latency.QPS)
	rss := float64(w.LatencyRSS) / (1 << 20)
	out := [][3]string{
		{fmt.Sprintf("waypoint CPU ≤ %s cores per 1,000 req/s", l4bench.Num(targetCPUPer1k, 2)), fmt.Sprintf("%.3f", cpu), verdict(cpu <= targetCPUPer1k)},
		{fmt.Sprintf("waypoint RSS ≤ %d MiB at 1,000 req/s", targetRSSMiB), fmt.Sprintf("%.1f MiB (anon %s)", rss, l4bench.MiB(w.LatencyAnon)), verdict(rss <= targetRSSMiB)},
	}
	mine := perCore(qps(wp.Saturation), w.SaturationCores)
	for _, name := range []string{"haproxy-mtls", "haproxy"} {
		target := "waypoint requests per core > " + name + "'s L7 process"
		o := r.path(name)
		if o == nil || o.l7() == nil || mine == 0 {
			out = append(out, [3]string{target, "not measured", ""})
			continue
		}
		theirs := perCore(qps(o.Saturation), o.l7().SaturationCores)
		out = append(out, [3]string{target, fmt.Sprintf("%s vs %s (%s)", l4bench.Num(mine, 0), l4bench.Num(theirs, 0), l4bench.Ratio(mine, theirs)), verdict(mine > theirs)})
	}
	return out
}

func withErrors(s string, errors int64) string {
	if errors > 0 {
		return s + fmt.Sprintf(" (%d errors)", errors)
	}
	return s
}

func secs(s float64) string { return l4bench.Num(s, 0) + " s" }
