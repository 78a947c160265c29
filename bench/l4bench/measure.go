package l4bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"
)

// LoadSpec is one run of the load role and the processes measured over it.
type LoadSpec struct {
	// Exe is the binary whose "load" role generates the load (RunRole), run
	// inside NS.
	Exe string
	NS  *NetNS
	// Args are the load role's flags.
	Args []string
	// Expected is about how long the load runs, warm-up included; each
	// wait for its output is given a minute more.
	Expected time.Duration
	// Procs are the processes sampled from the load's "measuring" line to
	// its result: CPU time and resident memory.
	Procs []*Child
	// Profile, when set, is sent as "profile <Profile>" to each of
	// Profiled when the measured part starts and "stop" when it ends (the
	// commands of package profiling).
	Profile  string
	Profiled []*Child
	// Log gets the load role's stderr.
	Log io.Writer
}

// ProcUsage is what a process used over a measured window.
type ProcUsage struct {
	Cores   float64 // CPU seconds per second
	MaxRSS  int64   // largest VmRSS sampled (every 200 ms)
	MaxAnon int64   // largest RssAnon sampled
	// Sched is how its threads were scheduled over the window; zero where
	// the kernel does not say.
	Sched SchedStat
}

// RunLoad runs the load role as spec says, decodes its result line into
// result (an HTTPResult for -mode http) and returns the usage of each of
// spec.Procs over the measured window, in their order. A process that
// exited during the window is an error.
func RunLoad(ctx context.Context, spec LoadSpec, result any) ([]ProcUsage, error) {
	c, err := StartChild("load", InPod(spec.NS, append([]string{spec.Exe, "load"}, spec.Args...)...), nil, spec.Log)
	if err != nil {
		return nil, err
	}
	defer c.Stop(2 * time.Second)
	if _, err := c.WaitLine(ctx, "measuring", spec.Expected+time.Minute); err != nil {
		return nil, err
	}
	if spec.Profile != "" {
		for _, z := range spec.Profiled {
			_ = z.Send("profile " + spec.Profile)
		}
	}
	start := time.Now()
	before := make([]float64, len(spec.Procs))
	schedBefore := make([]SchedStat, len(spec.Procs))
	for i, pc := range spec.Procs {
		if before[i], err = ProcCPU(pc.Pid()); err != nil {
			return nil, fmt.Errorf("%s: %w", pc.name, err)
		}
		schedBefore[i], _ = ReadSchedStat(pc.Pid())
	}
	maxRSS, maxAnon := make([]int64, len(spec.Procs)), make([]int64, len(spec.Procs))
	var wg sync.WaitGroup
	sampling := make(chan struct{})
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			for i, pc := range spec.Procs {
				if m, err := ReadProcMemory(pc.Pid()); err == nil {
					maxRSS[i] = max(maxRSS[i], m.RSS)
					maxAnon[i] = max(maxAnon[i], m.Anon)
				}
			}
			select {
			case <-sampling:
				return
			case <-t.C:
			}
		}
	})
	line, err := c.WaitLine(ctx, "result ", spec.Expected+time.Minute)
	close(sampling)
	wg.Wait()
	elapsed := time.Since(start)
	usage := make([]ProcUsage, len(spec.Procs))
	for i, pc := range spec.Procs {
		after, cerr := ProcCPU(pc.Pid())
		if cerr != nil || !pc.Running() {
			return nil, pc.Exited()
		}
		usage[i] = ProcUsage{Cores: (after - before[i]) / elapsed.Seconds(), MaxRSS: maxRSS[i], MaxAnon: maxAnon[i]}
		if s, err := ReadSchedStat(pc.Pid()); err == nil && schedBefore[i].Slices > 0 {
			usage[i].Sched = s.Sub(schedBefore[i])
		}
	}
	if spec.Profile != "" {
		for _, z := range spec.Profiled {
			_ = z.Send("stop")
		}
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "result ")), result); err != nil {
		return nil, fmt.Errorf("load result: %w", err)
	}
	return usage, nil
}

// HostMeter tells how busy the machine was between StartHostMeter and Note,
// and how much of that was this process and the children it has waited
// for, so that a reader can tell a quiet run from one sharing the cores
// with other work.
type HostMeter struct {
	start time.Time
	host  hostCPU
	self  procTimes
	err   error
}

// StartHostMeter starts measuring.
func StartHostMeter() HostMeter {
	m := HostMeter{start: time.Now()}
	var err1, err2 error
	m.host, err1 = readHostCPU()
	m.self, err2 = readProcTimes("self")
	m.err = errors.Join(err1, err2)
	return m
}

// Note is the line for the report. Children still running are not counted
// as this benchmark's: stop them first.
func (m HostMeter) Note() string {
	wall := time.Since(m.start)
	hostAfter, err1 := readHostCPU()
	selfAfter, err2 := readProcTimes("self")
	if m.err != nil || err1 != nil || err2 != nil || wall <= 0 {
		return "host CPU during the run: unknown"
	}
	sec := wall.Seconds()
	busy := (hostAfter.Busy - m.host.Busy) / sec
	ours := (selfAfter.Self + selfAfter.Children - m.self.Self - m.self.Children) / sec
	return fmt.Sprintf("host CPU during the run (%s): %.2f of %d cores busy, %.2f of them this benchmark's processes, %.2f other work",
		wall.Round(time.Second), busy, runtime.NumCPU(), ours, max(busy-ours, 0))
}
