package l4bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MachineNotes describe where the numbers were taken: the date, the
// machine, then extra (what was measured with, e.g. the peers' versions),
// then the load average at the start.
func MachineNotes(extra ...string) []string {
	notes := []string{
		"date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("machine: %d × %s, Linux %s, %s", runtime.NumCPU(), cpuModel(), kernelRelease(), runtime.Version()),
	}
	notes = append(notes, extra...)
	return append(notes, "load average at the start: "+LoadAvg())
}

// peersNote names the peers installed, with their versions.
func peersNote() []string {
	var versions []string
	for _, pr := range peers {
		if bin, err := pr.lookPath(); err == nil {
			versions = append(versions, PeerVersion(bin))
		}
	}
	if len(versions) == 0 {
		return nil
	}
	return []string{"peers: " + strings.Join(versions, "; ") + "; TLS 1.3 " + TLSSuite + " everywhere"}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// LoadAvg is the 1, 5 and 15 minute load average.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// PeerVersion is the first line of a peer's version output that names it
// ("HAProxy version 2.6.12…", "stunnel 5.68 on x86_64…").
func PeerVersion(bin string) string {
	flag := "-v"
	if strings.Contains(bin, "stunnel") {
		flag = "-version"
	}
	out, _ := exec.Command(bin, flag).CombinedOutput()
	for l := range bytes.Lines(out) {
		s := strings.TrimSpace(string(l))
		if low := strings.ToLower(s); strings.HasPrefix(low, "haproxy version") || strings.HasPrefix(low, "stunnel ") {
			if i := strings.Index(s, " - "); i > 0 {
				s = s[:i]
			}
			return s
		}
	}
	return bin
}
