package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Leftovers lists what of a cluster remains on the host: processes it
// started, their cgroups, mounts, network namespaces, the pod bridge, the
// node address, firewall rules and tables. After Down it is empty; `cluster
// status` and the lifecycle e2e test use it.
func Leftovers(ctx context.Context, cfg Config) ([]string, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var left []string
	for _, name := range components {
		if p, ok := recorded(c, name); ok {
			left = append(left, fmt.Sprintf("process %s (pid %d)", name, p.pid))
		}
	}
	for _, pid := range cgroupProcs("kubepods", cgroupName) {
		if !isZombie(pid) {
			left = append(left, fmt.Sprintf("process %d in the cluster's cgroups", pid))
		}
	}
	for _, root := range allCgroupRoots() {
		for _, name := range []string{"kubepods", cgroupName} {
			if _, err := os.Stat(filepath.Join(root, name)); err == nil {
				left = append(left, "cgroup "+filepath.Join(root, name))
			}
		}
	}
	mounts, err := clusterMounts(c)
	if err != nil {
		return nil, err
	}
	for _, mp := range mounts {
		left = append(left, "mount "+mp)
	}
	if m, _ := filepath.Glob("/run/netns/cni-*"); len(m) > 0 {
		left = append(left, fmt.Sprintf("%d network namespaces /run/netns/cni-*", len(m)))
	}
	if out, err := run(ctx, "ip", "link", "show", bridgeName); err == nil && strings.Contains(out, bridgeName) {
		left = append(left, "bridge "+bridgeName)
	}
	if out, err := run(ctx, "ip", "-4", "addr", "show", "dev", "lo"); err == nil && strings.Contains(out, " "+c.NodeIP.String()+"/32") {
		left = append(left, "address "+c.NodeIP.String()+"/32 on lo")
	}
	if tables, err := nftTables(ctx); err == nil {
		for _, t := range tables {
			if t == "inet "+guardTable || t == "inet "+meshHostTable || strings.HasSuffix(t, " kube-proxy") {
				left = append(left, "nftables table "+t)
			}
		}
	}
	if _, err := os.Stat(meshCNIPlugin); err == nil {
		left = append(left, "mesh CNI plugin "+meshCNIPlugin)
	}
	for _, save := range []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, save).Output()
		if err != nil {
			continue
		}
		n := 0
		for _, line := range strings.Split(string(out), "\n") {
			if isClusterRule(line) {
				n++
			}
		}
		if n > 0 {
			left = append(left, fmt.Sprintf("%d KUBE-/CNI- lines in %s", n, save))
		}
	}
	for _, dir := range []string{kubeletRoot, containerdState} {
		if _, err := os.Stat(dir); err == nil {
			left = append(left, "directory "+dir)
		}
	}
	return left, nil
}
