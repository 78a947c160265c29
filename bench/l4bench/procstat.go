package l4bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports (the kernel exports
// USER_HZ, not its internal HZ, precisely so that it never changes).
const clockTicks = 100

// procTimes is the CPU time of a process, in seconds: its own, all its
// threads' including those that exited (utime+stime), and that of the
// children it has waited for (cutime+cstime).
type procTimes struct {
	Self, Children float64
}

// ProcCPU is the CPU time pid has used itself, from /proc/<pid>/stat.
func ProcCPU(pid int) (float64, error) {
	t, err := readProcTimes(fmt.Sprint(pid))
	return t.Self, err
}

// readProcTimes reads /proc/<pid>/stat; pid may be "self".
func readProcTimes(pid string) (procTimes, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procTimes{}, err
	}
	return parseStat(b)
}

// parseStat reads the CPU times from the content of /proc/<pid>/stat. The
// command name (field 2) is in parentheses and may itself contain spaces
// and parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procTimes, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procTimes{}, fmt.Errorf("proc stat: no ')' after the command name in %q", truncate(b))
	}
	// After ") ", field 3 (state) is index 0: utime (14), stime (15),
	// cutime (16) and cstime (17) are indexes 11 to 14.
	fields := strings.Fields(string(b[end+1:]))
	if len(fields) < 15 {
		return procTimes{}, fmt.Errorf("proc stat: %d fields after the command name, want at least 15", len(fields))
	}
	var ticks [4]uint64
	for i := range ticks {
		n, err := strconv.ParseUint(fields[11+i], 10, 64)
		if err != nil {
			return procTimes{}, fmt.Errorf("proc stat: field %d %q: %w", 14+i, fields[11+i], err)
		}
		ticks[i] = n
	}
	return procTimes{
		Self:     float64(ticks[0]+ticks[1]) / clockTicks,
		Children: float64(ticks[2]+ticks[3]) / clockTicks,
	}, nil
}

// hostCPU is the machine's CPU time since boot, in seconds summed over all
// CPUs, from the "cpu" line of /proc/stat.
type hostCPU struct {
	Busy, Total float64
}

func readHostCPU() (hostCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return hostCPU{}, err
	}
	return parseHostCPU(b)
}

// parseHostCPU reads "cpu  user nice system idle iowait irq softirq steal
// guest guest_nice" (ticks); idle and iowait are not busy, guest time is
// already part of user.
func parseHostCPU(b []byte) (hostCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return hostCPU{}, fmt.Errorf("proc stat: first line %q is not the cpu total", truncate(line))
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[1+i], 10, 64)
		if err != nil {
			return hostCPU{}, fmt.Errorf("proc stat: cpu field %d: %w", i+1, err)
		}
		v[i] = n
	}
	idle := v[3] + v[4]
	total := v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]
	return hostCPU{Busy: float64(total-idle) / clockTicks, Total: float64(total) / clockTicks}, nil
}

// ProcMemory is a process's resident memory now (VmRSS), the anonymous
// part of it (RssAnon: heap and stacks, not the executable's pages, which
// processes running the same binary share) and at its peak (VmHWM), in
// bytes, from /proc/<pid>/status.
type ProcMemory struct {
	RSS, Anon, Peak int64
}

// ReadProcMemory reads ProcMemory from /proc/<pid>/status.
func ReadProcMemory(pid int) (ProcMemory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMemory{}, err
	}
	return parseStatusMemory(b)
}

// parseStatusMemory reads VmRSS, RssAnon and VmHWM ("VmRSS:\t  1234 kB")
// from the content of /proc/<pid>/status. RssAnon is 0 on kernels before
// 4.5, which do not have it.
func parseStatusMemory(b []byte) (ProcMemory, error) {
	var m ProcMemory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		case "RssAnon":
			dst = &m.Anon
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return ProcMemory{}, fmt.Errorf("proc status: %s: unexpected value %q", key, val)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return ProcMemory{}, fmt.Errorf("proc status: %s: %w", key, err)
		}
		*dst = kb << 10
		if key != "RssAnon" {
			seen++
		}
	}
	if seen != 2 {
		return ProcMemory{}, fmt.Errorf("proc status: VmRSS or VmHWM missing (a kernel thread or a zombie?)")
	}
	return m, nil
}

// SchedStat is how a process's threads were scheduled, summed over them,
// from /proc/<pid>/task/*/schedstat: time on a CPU, time waiting in a run
// queue for one (ready to run, but the CPUs were taken), and the number of
// times a thread was put on a CPU. Threads that exited are not counted.
type SchedStat struct {
	Run, Wait time.Duration
	Slices    int64
}

// Sub is s minus an earlier reading.
func (s SchedStat) Sub(before SchedStat) SchedStat {
	return SchedStat{Run: s.Run - before.Run, Wait: s.Wait - before.Wait, Slices: s.Slices - before.Slices}
}

// ReadSchedStat reads SchedStat for pid; it fails on kernels without
// CONFIG_SCHED_INFO.
func ReadSchedStat(pid int) (SchedStat, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return SchedStat{}, fmt.Errorf("no schedstat for pid %d (kernel without CONFIG_SCHED_INFO, or the process is gone)", pid)
	}
	var sum SchedStat
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		s, err := parseSchedStat(b)
		if err != nil {
			return SchedStat{}, fmt.Errorf("%s: %w", t, err)
		}
		sum.Run += s.Run
		sum.Wait += s.Wait
		sum.Slices += s.Slices
	}
	return sum, nil
}

// parseSchedStat reads "run_ns wait_ns slices" (one line).
func parseSchedStat(b []byte) (SchedStat, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return SchedStat{}, fmt.Errorf("schedstat: %q: want three numbers", truncate(b))
	}
	var v [3]int64
	for i := range v {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return SchedStat{}, fmt.Errorf("schedstat: %w", err)
		}
		v[i] = n
	}
	return SchedStat{Run: time.Duration(v[0]), Wait: time.Duration(v[1]), Slices: v[2]}, nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// tcpListening reports whether the content of /proc/net/tcp holds a socket
// in LISTEN state on addr (or on 0.0.0.0 with addr's port). Addresses there
// are hex, the IPv4 address as the kernel's 32-bit word in host (little
// endian) order, the port big endian: "0100007F:2760" is 127.0.0.1:10080.
func tcpListening(procNetTCP []byte, addr netip.AddrPort) (bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(procNetTCP))
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		const listen = "0A"
		if f[3] != listen {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(f[1], ":")
		if !ok || len(hexIP) != 8 {
			return false, fmt.Errorf("proc net tcp: local address %q", f[1])
		}
		word, err := strconv.ParseUint(hexIP, 16, 32)
		if err != nil {
			return false, fmt.Errorf("proc net tcp: local address %q: %w", f[1], err)
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return false, fmt.Errorf("proc net tcp: local port %q: %w", f[1], err)
		}
		ip := netip.AddrFrom4([4]byte{byte(word), byte(word >> 8), byte(word >> 16), byte(word >> 24)})
		if uint16(port) == addr.Port() && (ip == addr.Addr() || ip.IsUnspecified()) {
			return true, nil
		}
	}
	return false, sc.Err()
}
