package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// Finding a running pod's network namespace.
//
// A pod created after the CNI plugin was installed is handed to the agent
// with its namespace path (CNI_NETNS). For every other pod — running before
// the agent started, or enrolled later by a label — the agent finds the
// namespace the way Istio does, without the CRI: it walks /proc, and for
// each distinct network namespace other than the host's
//
//   - reads the process's cgroup path; under the kubelet it names the pod
//     ("…/pod<uid>/<container id>"). A namespace whose process belongs to a
//     pod the agent is not looking for is skipped without being opened;
//   - opens /proc/<pid>/ns/net and lists the addresses inside it over
//     netlink (on a thread that entered it; no nsenter);
//   - accepts it for a pod only if it holds one of the pod's IPs, and, when
//     the cgroup names a pod, only for that pod (a process of another pod
//     may be visiting the namespace; a stale namespace may hold a reused IP).
//
// The open file is the agent's handle on the namespace from then on: the
// pod's processes may come and go, the namespace stays the same.

// netnsFinder finds the network namespaces of running pods.
type netnsFinder interface {
	// find returns an open handle for each pod of want (uid → its IPs) whose
	// namespace it found. The caller owns the files.
	find(want map[types.UID][]netip.Addr) (map[types.UID]*os.File, error)
}

// procFinder implements netnsFinder over a /proc directory.
type procFinder struct {
	procDir string
}

type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

func fstatNS(f *os.File) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

func (p procFinder) find(want map[types.UID][]netip.Addr) (map[types.UID]*os.File, error) {
	found := map[types.UID]*os.File{}
	if len(want) == 0 {
		return found, nil
	}
	byIP := map[netip.Addr]types.UID{}
	for uid, ips := range want {
		for _, ip := range ips {
			byIP[ip.Unmap()] = uid
		}
	}
	// Never the host's namespace: init's, and ours (the agent runs there).
	seen := map[nsID]bool{}
	for _, host := range []string{filepath.Join(p.procDir, "1/ns/net"), "/proc/self/ns/net"} {
		if id, err := statNS(host); err == nil {
			seen[id] = true
		}
	}
	entries, err := os.ReadDir(p.procDir)
	if err != nil {
		return nil, fmt.Errorf("find pod network namespaces: %w", err)
	}
	for _, e := range entries {
		if len(found) == len(want) {
			break
		}
		if _, err := strconv.Atoi(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		pidDir := filepath.Join(p.procDir, e.Name())
		nsPath := filepath.Join(pidDir, "ns/net")
		id, err := statNS(nsPath)
		if err != nil || seen[id] {
			continue // gone, a kernel thread, or done already
		}
		cgUID := ""
		if cg, err := os.ReadFile(filepath.Join(pidDir, "cgroup")); err == nil {
			cgUID = podUIDFromCgroup(string(cg))
		}
		if cgUID != "" {
			if _, ok := want[types.UID(cgUID)]; !ok {
				seen[id] = true // another pod's namespace
				continue
			}
			if _, done := found[types.UID(cgUID)]; done {
				continue
			}
		}
		f, err := os.Open(nsPath)
		if err != nil {
			continue
		}
		if got, err := fstatNS(f); err != nil || got != id {
			f.Close() // the pid was reused in between
			continue
		}
		addrs, err := namespaceAddrs(f)
		if err != nil {
			f.Close()
			continue
		}
		uid, ok := matchPod(addrs, byIP, types.UID(cgUID))
		if !ok || found[uid] != nil {
			f.Close()
			if cgUID == "" {
				seen[id] = true
			}
			continue
		}
		seen[id] = true
		found[uid] = f
	}
	return found, nil
}

// matchPod picks the pod whose IP the namespace holds; with a cgroup uid,
// only that pod qualifies.
func matchPod(addrs []netip.Addr, byIP map[netip.Addr]types.UID, cgUID types.UID) (types.UID, bool) {
	var match types.UID
	for _, a := range addrs {
		uid, ok := byIP[a.Unmap()]
		if !ok {
			continue
		}
		if cgUID != "" && uid != cgUID {
			continue
		}
		if match != "" && match != uid {
			return "", false // two pods' addresses in one namespace: refuse
		}
		match = uid
	}
	return match, match != ""
}

// namespaceAddrs lists the addresses of every interface in the namespace f.
func namespaceAddrs(f *os.File) ([]netip.Addr, error) {
	var out []netip.Addr
	err := capture.WithNetNS(fdPath(f), func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, p.Addr().Unmap())
			}
		}
		return nil
	})
	return out, err
}

// fdPath names an open namespace file so that capture's path-based calls
// reach exactly that namespace.
func fdPath(f *os.File) string {
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd())
}

// podCgroupRE finds the pod UID in a kubelet cgroup path: cgroupfs
// ("/kubepods/burstable/pod<uid>/<id>") and systemd
// ("kubepods-burstable-pod<uid_with_underscores>.slice") drivers.
var podCgroupRE = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)

// podUIDFromCgroup returns the pod UID named by /proc/<pid>/cgroup, or ""
// when the process is not in a pod's cgroup (or the cgroups disagree).
func podUIDFromCgroup(cgroup string) string {
	uid := ""
	for line := range strings.SplitSeq(cgroup, "\n") {
		_, path, ok := cutLast(line)
		if !ok {
			continue
		}
		m := podCgroupRE.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		u := strings.ReplaceAll(m[1], "_", "-")
		if uid != "" && uid != u {
			return ""
		}
		uid = u
	}
	return uid
}

// cutLast splits "id:controllers:path" at the second colon.
func cutLast(line string) (string, string, bool) {
	parts := strings.SplitN(line, ":", 3)
	if len(parts) != 3 {
		return "", "", false
	}
	return parts[0] + ":" + parts[1], parts[2], true
}

// errNetnsNotFound: the pod runs but its namespace was not found (yet).
var errNetnsNotFound = errors.New("network namespace not found")
