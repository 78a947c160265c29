package nodeagent

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Test namespaces. Tests that need root build throw-away network namespaces
// ("host", "pod…") joined by veth pairs and nothing else: no link to the
// machine's real namespace, its rules, its CNI bridge or its uplink. The
// addresses are 10.253.0.0/16, used nowhere else.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and nftables rules; run `go test` as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip(8) command from iproute2 is needed to build the test namespaces")
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func randSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// testNS is one throw-away network namespace.
type testNS struct {
	name string // for ip -n
	path string // /var/run/netns/<name>
}

func newTestNS(t *testing.T, role string) testNS {
	t.Helper()
	requireRoot(t)
	n := testNS{name: "alna-" + role + "-" + randSuffix()}
	n.path = "/var/run/netns/" + n.name
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.name, err, out)
		}
	})
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

// link joins pod to host with a veth pair: eth0 in pod with podCIDR's
// address, vethN in host with hostCIDR's; the pod's default route goes to
// the host end, as a CNI bridge's gateway would.
func link(t *testing.T, host, pod testNS, hostIf, hostCIDR, podCIDR string) {
	t.Helper()
	run(t, "ip", "-n", pod.name, "link", "add", "eth0", "type", "veth", "peer", "name", hostIf, "netns", host.name)
	run(t, "ip", "-n", pod.name, "addr", "add", podCIDR, "dev", "eth0")
	run(t, "ip", "-n", host.name, "addr", "add", hostCIDR, "dev", hostIf)
	run(t, "ip", "-n", pod.name, "link", "set", "eth0", "up")
	run(t, "ip", "-n", host.name, "link", "set", hostIf, "up")
	gw := strings.Split(hostCIDR, "/")[0]
	run(t, "ip", "-n", pod.name, "route", "add", "default", "via", gw)
}

// sleeper starts a process inside ns, as a pod's container would be, so
// that the namespace shows up in /proc. It is killed at cleanup.
func sleeper(t *testing.T, ns testNS) int {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.name, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// ip netns exec execs sleep in the same process once it joined ns.
	proc := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	waitFor(t, "the sleeper to enter "+ns.name, func() bool {
		a, err1 := os.Stat(proc)
		b, err2 := os.Stat(ns.path)
		return err1 == nil && err2 == nil && os.SameFile(a, b)
	})
	return cmd.Process.Pid
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
