package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// touchedSysctls are the kernel settings the cluster's components change
// (kubelet: overcommit, panic and keys; kube-proxy and the bridge: forwarding
// and netfilter). Their values before the first Up are saved and restored by
// Down.
var touchedSysctls = []string{
	"vm.overcommit_memory",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
}

// hostSnapshot is what the host looked like before the cluster changed it.
// It is written once, before the first change, and removed by a Down that
// restored it; an Up after a crash keeps the original.
type hostSnapshot struct {
	Sysctls map[string]string `json:"sysctls"`
	// NftTables are the nftables tables that existed ("family name").
	// iptables-nft creates its tables on first use; Down removes those
	// that were not here before and hold no rule.
	NftTables []string `json:"nftTables"`
}

// hostSnapshotPath is outside StateDir's wiped parts so a crash never loses it.
func (c Config) hostSnapshotPath() string { return c.path("host-snapshot.json") }

func saveHostSnapshot(c Config) error {
	if _, err := os.Stat(c.hostSnapshotPath()); err == nil {
		return nil
	}
	s := hostSnapshot{Sysctls: map[string]string{}}
	for _, k := range touchedSysctls {
		if v, err := readSysctl(k); err == nil {
			s.Sysctls[k] = v
		}
	}
	tables, err := nftTables(context.Background())
	if err != nil {
		return err
	}
	s.NftTables = tables
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.hostSnapshotPath(), b, 0o644)
}

// restoreHostSnapshot puts the saved sysctls back and removes the nftables
// tables made since. The snapshot is kept when keep is set (an earlier step
// of Down failed, so the next Down must restore again) or restoring failed.
func restoreHostSnapshot(c Config, keep bool) error {
	b, err := os.ReadFile(c.hostSnapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var s hostSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("read %s: %w", c.hostSnapshotPath(), err)
	}
	var errs []error
	if err := removeNewEmptyTables(s.NftTables); err != nil {
		errs = append(errs, err)
	}
	keys := make([]string, 0, len(s.Sysctls))
	for k := range s.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if cur, err := readSysctl(k); err == nil && cur == s.Sysctls[k] {
			continue
		}
		if err := writeSysctl(k, s.Sysctls[k]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && !keep {
		_ = os.Remove(c.hostSnapshotPath())
	}
	return errors.Join(errs...)
}

// nftTables lists the nftables tables as "family name".
func nftTables(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	var tables []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	return tables, nil
}

// removeNewEmptyTables deletes the tables iptables-nft made during the run
// (not in before) once they hold no rule.
func removeNewEmptyTables(before []string) error {
	ctx := context.Background()
	now, err := nftTables(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range now {
		if slices.Contains(before, t) {
			continue
		}
		f := strings.Fields(t)
		out, err := run(ctx, "nft", "list", "table", f[0], f[1])
		if err != nil || tableHasRules(out) {
			continue
		}
		if _, err := run(ctx, "nft", "delete", "table", f[0], f[1]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tableHasRules reports whether `nft list table` output holds anything but
// chain and table declarations.
func tableHasRules(listing string) bool {
	for _, line := range strings.Split(listing, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case l == "", l == "}", strings.HasPrefix(l, "table "), strings.HasPrefix(l, "chain "),
			strings.HasPrefix(l, "type ") && strings.Contains(l, "hook "):
		default:
			return true
		}
	}
	return false
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(key, value string) error {
	if err := os.WriteFile(sysctlPath(key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// setupHostNetwork adds the node address to lo, installs the guard table and
// turns on the forwarding the pod bridge needs.
func setupHostNetwork(ctx context.Context, c Config) error {
	if err := installGuard(ctx, c); err != nil {
		return err
	}
	if out, err := run(ctx, "ip", "-4", "addr", "show", "dev", "lo"); err != nil || !strings.Contains(out, " "+c.NodeIP.String()+"/32") {
		if _, err := run(ctx, "ip", "addr", "add", c.NodeIP.String()+"/32", "dev", "lo"); err != nil {
			return fmt.Errorf("add node address to lo: %w", err)
		}
	}
	for k, v := range map[string]string{
		"net.ipv4.ip_forward":                "1",
		"net.bridge.bridge-nf-call-iptables": "1",
	} {
		if err := writeSysctl(k, v); err != nil {
			return fmt.Errorf("%w (is the br_netfilter module loaded?)", err)
		}
	}
	return nil
}

// guardRules is the nftables table that keeps cluster traffic on the
// machine: a packet to or from the node, pod or service range may only
// leave through lo or the pod bridge (and the bridge's veth ports).
func guardRules(c Config) string {
	ranges := fmt.Sprintf("%s/32, %s, %s", c.NodeIP, c.PodCIDR.Masked(), c.ServiceCIDR.Masked())
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain egress {
		type filter hook postrouting priority -300; policy accept;
		oifname { "lo", "%[2]s", "veth*" } accept
		ip daddr { %[3]s } counter drop comment "cluster traffic must not leave the machine"
		ip saddr { %[3]s } counter drop comment "cluster traffic must not leave the machine"
	}
	chain forward {
		type filter hook forward priority -300; policy accept;
		iifname "%[2]s" oifname != { "lo", "%[2]s", "veth*" } counter drop comment "pods reach nothing off the machine"
	}
}
`, guardTable, bridgeName, ranges)
}

func installGuard(ctx context.Context, c Config) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(guardRules(c))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install guard nftables table: %w: %s", err, out)
	}
	return nil
}

func removeGuard(ctx context.Context) error {
	out, err := run(ctx, "nft", "list", "tables")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "inet "+guardTable) {
		return nil
	}
	_, err = run(ctx, "nft", "delete", "table", "inet", guardTable)
	return err
}

// meshHostTable is the nftables table the mesh's node agent (ztunnel's
// DaemonSet) keeps in the host namespace, and meshCNIPlugin the chained CNI
// plugin it copies into the runtime's plugin directory. A cluster that is
// torn down with the mesh still installed leaves both; Down removes them.
const (
	meshHostTable = "ambient_lite_host"
	meshCNIPlugin = "/usr/lib/cni/ambient-cni"
)

// removeMeshHostState removes what the mesh's node agent left on the host.
func removeMeshHostState(ctx context.Context) error {
	var errs []error
	if out, err := run(ctx, "nft", "list", "tables"); err == nil && strings.Contains(out, "inet "+meshHostTable) {
		if _, err := run(ctx, "nft", "delete", "table", "inet", meshHostTable); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(meshCNIPlugin); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanIptables removes every chain and rule that kube-proxy, kubelet and
// the CNI plugins made (chains named KUBE-* and CNI-*), table by table, in
// both the nft and the legacy back end, and kube-proxy's own nft tables.
func cleanIptables(ctx context.Context) error {
	var errs []error
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, backend := range []string{"-nft", "-legacy"} {
			save, restore := fam+backend+"-save", fam+backend+"-restore"
			if _, err := exec.LookPath(save); err != nil {
				continue
			}
			for _, table := range []string{"filter", "nat", "mangle", "raw"} {
				out, err := exec.CommandContext(ctx, save, "-t", table).Output() // stdout only: the save tools warn on stderr
				if err != nil {
					continue
				}
				if !strings.Contains(string(out), "KUBE-") && !strings.Contains(string(out), "CNI-") {
					continue
				}
				cmd := exec.CommandContext(ctx, restore, "-T", table)
				cmd.Stdin = strings.NewReader(withoutClusterRules(string(out)))
				if b, err := cmd.CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s -T %s: %w: %s", restore, table, err, b))
				}
			}
		}
	}
	if out, err := run(ctx, "nft", "list", "tables"); err == nil {
		for _, t := range []string{"ip kube-proxy", "ip6 kube-proxy"} {
			if strings.Contains(out, "table "+t+"\n") {
				if _, err := run(ctx, "nft", append([]string{"delete", "table"}, strings.Fields(t)...)...); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// withoutClusterRules drops from iptables-save output the chain declarations
// and rules that mention a KUBE-* or CNI-* chain.
func withoutClusterRules(save string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(save))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if isClusterRule(line) {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// isClusterRule reports whether a line of iptables-save output declares or
// uses a chain of kube-proxy, kubelet or the CNI plugins.
func isClusterRule(line string) bool {
	return (strings.HasPrefix(line, ":") || strings.HasPrefix(line, "-A ")) &&
		(strings.Contains(line, "KUBE-") || strings.Contains(line, "CNI-"))
}

// clusterMountPrefixes are where the cluster's mounts live: kubelet's pod
// volumes (and its root, which it bind-mounts onto itself), containerd's
// rootfs and shm mounts, CNI's network namespaces. A prefix ending in "/"
// also covers the directory itself.
func clusterMountPrefixes(c Config) []string {
	return []string{kubeletRoot + "/", containerdState + "/", "/run/netns/cni-", c.StateDir + "/"}
}

// clusterMounts lists the mounts under the cluster's prefixes, deepest first.
func clusterMounts(c Config) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, p := range clusterMountPrefixes(c) {
			under := strings.HasPrefix(mp, p) || strings.HasSuffix(p, "/") && mp == strings.TrimSuffix(p, "/")
			if under && !slices.Contains(points, mp) {
				points = append(points, mp)
			}
		}
	}
	sort.SliceStable(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	return points, nil
}

// unmountAll unmounts every mount under the cluster's prefixes, deepest first.
func unmountAll(c Config) error {
	// A mount point can carry several stacked mounts (e.g. after
	// `ip netns add` bind-mounted /run/netns onto itself with the
	// cluster's namespaces in it): unmount until none is left.
	var errs []error
	for range 8 {
		points, err := clusterMounts(c)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		errs = errs[:0]
		hidden := false
		for _, mp := range points {
			err := syscall.Unmount(mp, syscall.MNT_DETACH)
			switch {
			case err == nil || errors.Is(err, syscall.ENOENT):
			case errors.Is(err, syscall.EINVAL):
				// Listed but "not mounted": a later mount covers it.
				hidden = true
			default:
				errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		if hidden && isMountPoint("/run/netns") {
			// `ip netns add` bind-mounts /run/netns onto itself; the pods'
			// namespaces mounted before that are underneath. Detach the
			// bind (iproute2 makes it again when it needs it).
			if err := syscall.Unmount("/run/netns", syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount /run/netns covering the cluster's network namespaces: %w", err)
			}
		}
	}
	points, _ := clusterMounts(c)
	return fmt.Errorf("still mounted after repeated unmounts: %v", points)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountPoint reports whether path is itself a mount point.
func isMountPoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}
