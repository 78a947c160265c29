package nodeagent

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestPodUIDFromCgroup(t *testing.T) {
	tests := []struct {
		name, cgroup, want string
	}{
		{"cgroup v1 cgroupfs (this machine)", "9:name=systemd:/kubepods/burstable/pod167ae171-f881-4db5-8f2c-ef4c7c18e3ca/719ab1efc6800e36834f9938fca2a66df2006422d15ac2911d43173d5f08957a\n" +
			"8:pids:/kubepods/burstable/pod167ae171-f881-4db5-8f2c-ef4c7c18e3ca/719ab1efc6800e36834f9938fca2a66df2006422d15ac2911d43173d5f08957a\n", "167ae171-f881-4db5-8f2c-ef4c7c18e3ca"},
		{"besteffort", "0::/kubepods/besteffort/pod2c48913c-b29f-11e7-9350-020968147796/9bca8d63d5fa", "2c48913c-b29f-11e7-9350-020968147796"},
		{"systemd driver", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-9bca.scope", "2c48913c-b29f-11e7-9350-020968147796"},
		{"not a pod", "9:name=systemd:/\n8:pids:/user.slice\n", ""},
		{"cgroups disagree", "1:a:/kubepods/pod11111111-1111-1111-1111-111111111111/x\n2:b:/kubepods/pod22222222-2222-2222-2222-222222222222/y\n", ""},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := podUIDFromCgroup(tc.cgroup); got != tc.want {
				t.Errorf("podUIDFromCgroup = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMatchPod(t *testing.T) {
	ip := netip.MustParseAddr
	byIP := map[netip.Addr]types.UID{ip("10.0.0.1"): "a", ip("10.0.0.2"): "b", ip("fd00::1"): "a"}
	tests := []struct {
		name  string
		addrs []netip.Addr
		cg    types.UID
		want  types.UID
		ok    bool
	}{
		{"by IP", []netip.Addr{ip("127.0.0.1"), ip("10.0.0.1")}, "", "a", true},
		{"by IPv6", []netip.Addr{ip("fd00::1")}, "", "a", true},
		{"cgroup agrees", []netip.Addr{ip("10.0.0.2")}, "b", "b", true},
		{"cgroup names another pod", []netip.Addr{ip("10.0.0.2")}, "a", "", false},
		{"no pod address", []netip.Addr{ip("127.0.0.1")}, "", "", false},
		{"two pods' addresses", []netip.Addr{ip("10.0.0.1"), ip("10.0.0.2")}, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := matchPod(tc.addrs, byIP, tc.cg)
			if got != tc.want || ok != tc.ok {
				t.Errorf("matchPod = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestProcFinder finds a real namespace, by the address inside it, through
// a process running in it, and never returns the host's namespace.
func TestProcFinder(t *testing.T) {
	pod := newTestNS(t, "pod")
	run(t, "ip", "-n", pod.name, "addr", "add", "10.253.9.7/32", "dev", "lo")
	sleeper(t, pod)

	f := procFinder{procDir: "/proc"}
	found, err := f.find(map[types.UID][]netip.Addr{
		"uid-pod":     {netip.MustParseAddr("10.253.9.7")},
		"uid-missing": {netip.MustParseAddr("10.253.9.8")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range found {
			f.Close()
		}
	}()
	if len(found) != 1 || found["uid-pod"] == nil {
		t.Fatalf("found %v, want only uid-pod", found)
	}
	got, err := fstatNS(found["uid-pod"])
	if err != nil {
		t.Fatal(err)
	}
	want, err := statNS(pod.path)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("found namespace %v, want %v (%s)", got, want, pod.path)
	}

	// The host's addresses never match: its namespace is skipped.
	hostAddrs, err := namespaceAddrs(mustOpen(t, "/proc/self/ns/net"))
	if err != nil {
		t.Fatal(err)
	}
	hostAddrs = slices.DeleteFunc(hostAddrs, func(a netip.Addr) bool { return a.IsLoopback() || a.IsLinkLocalUnicast() })
	if len(hostAddrs) > 0 {
		found, err := f.find(map[types.UID][]netip.Addr{"uid-host": hostAddrs[:1]})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range found {
			f.Close()
		}
		if len(found) != 0 {
			t.Errorf("the host namespace was returned for %v", hostAddrs[0])
		}
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
