package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Down stops every process the cluster started and restores the host:
// mounts, network namespaces, the pod bridge, firewall rules, the node
// address, sysctls and cgroups. It is safe on a cluster that is half up,
// already down, or whose processes were killed by hand.
func Down(ctx context.Context, cfg Config, out io.Writer) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("stopping the local cluster needs root")
	}
	start := time.Now()
	if err := down(ctx, c); err != nil {
		return err
	}
	fmt.Fprintf(out, "cluster is down (%.1fs); logs of the last run are in %s\n", time.Since(start).Seconds(), c.path("logs"))
	return nil
}

func down(ctx context.Context, c Config) error {
	// Control plane and node agents first, so nothing restarts containers.
	// kube-apiserver waits up to a minute for its watchers to go on SIGTERM;
	// its state is in etcd, which Down discards, so it gets little grace.
	for _, name := range slices.Backward(components[1:]) {
		grace := 5 * time.Second
		if name == "kube-apiserver" {
			grace = time.Second
		}
		stopRecorded(c, name, grace)
	}
	// Then every container (kubelet's pods), then containerd and its shims.
	killAndWait(cgroupProcs("kubepods"), 2*time.Second)
	stopRecorded(c, "containerd", 10*time.Second)
	killAndWait(cgroupProcs("kubepods", cgroupName), 5*time.Second)

	var errs []error
	if err := unmountAll(c); err != nil {
		errs = append(errs, err)
	}
	if matches, _ := filepath.Glob("/run/netns/cni-*"); len(matches) > 0 {
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if out, err := run(ctx, "ip", "link", "show", bridgeName); err == nil && strings.Contains(out, bridgeName) {
		if _, err := run(ctx, "ip", "link", "delete", bridgeName); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cleanIptables(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := removeGuard(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := removeMeshHostState(ctx); err != nil {
		errs = append(errs, err)
	}
	if out, err := run(ctx, "ip", "-4", "addr", "show", "dev", "lo"); err == nil && strings.Contains(out, " "+c.NodeIP.String()+"/32") {
		if _, err := run(ctx, "ip", "addr", "del", c.NodeIP.String()+"/32", "dev", "lo"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := restoreHostSnapshot(c, len(errs) > 0); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups("kubepods", cgroupName); err != nil {
		errs = append(errs, err)
	}
	// Files: everything the run made except the logs, the record of the
	// tools and the host snapshot (gone already unless restoring failed).
	for _, dir := range []string{kubeletRoot, containerdState, "/var/log/pods", "/var/log/containers"} {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	entries, _ := os.ReadDir(c.StateDir)
	for _, e := range entries {
		if keep := []string{"logs", "tools-dir", filepath.Base(c.hostSnapshotPath())}; slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.StateDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
