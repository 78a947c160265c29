package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupName is the cgroup every process the harness starts is placed in
// (containerd's shims inherit it); kubelet puts pods under kubepods.
const cgroupName = "ambient-lite"

// components in start order; Down stops them in reverse.
var components = []string{"containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

// proc is one recorded process: its PID and the start time the kernel gave
// it, so that a recycled PID is never mistaken for ours.
type proc struct {
	pid   int
	start uint64
}

func (c Config) pidFile(name string) string { return c.path("pids", name+".pid") }
func (c Config) logFile(name string) string { return c.path("logs", name+".log") }

// startProcess starts bin detached from the caller (its own session, stdin
// from /dev/null, output to the component's log), places it in the
// harness's cgroup and records it.
func startProcess(c Config, name, bin string, args ...string) error {
	for _, d := range []string{c.path("pids"), c.path("logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(c.logFile(name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	if err := joinCgroup(pid); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("place %s in cgroup: %w", name, err)
	}
	st, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("%s exited at once; see %s: %w", name, c.logFile(name), err)
	}
	// Reap it if it dies while we still run, so it does not linger as a zombie.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(c.pidFile(name), fmt.Appendf(nil, "%d %d\n", pid, st), 0o644)
}

// recorded returns the live process recorded for name, if any.
func recorded(c Config, name string) (proc, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return proc{}, false
	}
	var p proc
	if _, err := fmt.Sscan(string(b), &p.pid, &p.start); err != nil {
		return proc{}, false
	}
	st, err := startTime(p.pid)
	if err != nil || st != p.start || isZombie(p.pid) {
		return proc{}, false
	}
	return p, true
}

// stopRecorded signals the process recorded for name with SIGTERM, waits up
// to grace for it to exit, then SIGKILLs it, and removes the PID file.
func stopRecorded(c Config, name string, grace time.Duration) {
	if p, ok := recorded(c, name); ok {
		killAndWait([]int{p.pid}, grace)
	}
	_ = os.Remove(c.pidFile(name))
}

// killAndWait sends SIGTERM to pids, waits up to grace, then SIGKILLs the
// rest and waits for them to go.
func killAndWait(pids []int, grace time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	alive := func() []int {
		var out []int
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				out = append(out, pid)
			}
		}
		return out
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && len(alive()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range alive() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(alive()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
}

// startTime is field 22 of /proc/PID/stat: the process's start time in
// clock ticks since boot.
func startTime(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func isZombie(pid int) bool {
	f, err := procStat(pid)
	return err == nil && f[0] == "Z"
}

// procStat returns the fields of /proc/PID/stat after the command name,
// starting with the state (field 3).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return f, nil
}

// cgroupRoots are the directories under which the harness's cgroup is
// made: the unified hierarchy on cgroup v2, the pids hierarchy on v1 (one
// hierarchy is enough to find every process again).
func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	return []string{"/sys/fs/cgroup/pids"}
}

func joinCgroup(pid int) error {
	for _, root := range cgroupRoots() {
		dir := filepath.Join(root, cgroupName)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// cgroupProcs lists every process in the cgroup trees named (relative to
// each v1 hierarchy root or the v2 root).
func cgroupProcs(names ...string) []int {
	var pids []int
	for _, root := range allCgroupRoots() {
		for _, name := range names {
			_ = filepath.WalkDir(filepath.Join(root, name), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
					return nil
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return nil
				}
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
						pids = append(pids, pid)
					}
				}
				return nil
			})
		}
	}
	return pids
}

// allCgroupRoots is every mounted hierarchy: kubelet's cgroupfs driver makes
// kubepods in each of them.
func allCgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var roots []string
	for _, e := range entries {
		if e.IsDir() {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return roots
}

// removeCgroups removes the named cgroup trees, deepest first. A cgroup
// that still has processes cannot be removed; that is reported.
func removeCgroups(names ...string) error {
	var errs []error
	for _, root := range allCgroupRoots() {
		for _, name := range names {
			var dirs []string
			_ = filepath.WalkDir(filepath.Join(root, name), func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
					errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// run runs a command to completion and returns its combined output; the
// error includes that output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
