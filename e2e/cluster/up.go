package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// requiredCommands are what the host must provide (Debian packages
// containerd, runc, containernetworking-plugins, iptables, nftables,
// conntrack, iproute2); install-deps.sh installs them.
var requiredCommands = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "iptables-save", "iptables-restore", "nft", "conntrack", "ip", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap", "/usr/lib/cni/loopback"}

// Up brings the cluster up and returns the configuration it used (defaults
// filled in). Progress and phase timings go to out.
func Up(ctx context.Context, cfg Config, out io.Writer) (Config, error) {
	t := newTimer(out)
	c, err := prepare(ctx, cfg, out, t)
	if err != nil {
		return c, err
	}
	if err := healthy(ctx, c); err == nil {
		fmt.Fprintf(out, "cluster is already up\nkubeconfig: %s\n", c.KubeconfigPath())
		return c, nil
	}
	t.phase("clean up remains of an earlier run")
	if err := down(ctx, c); err != nil {
		return c, fmt.Errorf("clean up an earlier run: %w", err)
	}
	if err := checkHostFree(ctx); err != nil {
		return c, err
	}

	t.phase("host network (node address, guard rules, sysctls)")
	if err := saveHostSnapshot(c); err != nil {
		return c, fmt.Errorf("save host state: %w", err)
	}
	if err := setupHostNetwork(ctx, c); err != nil {
		return c, err
	}

	t.phase("certificates and configuration")
	if err := os.WriteFile(c.path("config-hash"), []byte(configHash(c)), 0o644); err != nil {
		return c, err
	}
	p, err := newPKI(c.path("pki"), c)
	if err != nil {
		return c, fmt.Errorf("make certificates: %w", err)
	}
	if err := writeConfigs(c, p); err != nil {
		return c, err
	}

	t.phase("containerd")
	if err := startProcess(c, "containerd", binary(c, "containerd"), componentArgs(c, "containerd")...); err != nil {
		return c, err
	}
	if err := waitFor(ctx, 20*time.Second, "containerd", c, func(ctx context.Context) error {
		_, err := run(ctx, "ctr", "--address", containerdSocket, "version")
		return err
	}); err != nil {
		return c, err
	}

	t.phase("etcd and kube-apiserver")
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := startProcess(c, name, binary(c, name), componentArgs(c, name)...); err != nil {
			return c, err
		}
	}
	t.phase("cluster images (pause, coredns)")
	if err := loadClusterImages(ctx, c, out); err != nil {
		return c, err
	}
	t.phase("wait for kube-apiserver")
	client, err := adminClient(c)
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, 60*time.Second, "kube-apiserver", c, func(ctx context.Context) error {
		return getOK(ctx, client, fmt.Sprintf("https://%s:%d/readyz", c.NodeIP, apiPort))
	}); err != nil {
		return c, err
	}

	t.phase("controller-manager, scheduler, kubelet, kube-proxy")
	for _, name := range []string{"kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if err := startProcess(c, name, binary(c, name), componentArgs(c, name)...); err != nil {
			return c, err
		}
	}
	if err := waitFor(ctx, 60*time.Second, "node Ready", c, func(ctx context.Context) error {
		return nodeReady(ctx, c)
	}); err != nil {
		return c, err
	}

	t.phase("CoreDNS and the default service account")
	if _, err := c.Kubectl(ctx, strings.NewReader(addonsManifest(c)), "apply", "-f", "-"); err != nil {
		return c, fmt.Errorf("apply CoreDNS: %w", err)
	}
	if err := waitFor(ctx, 60*time.Second, "CoreDNS ready and default service account", c, func(ctx context.Context) error {
		if _, err := c.Kubectl(ctx, nil, "-n", "default", "get", "serviceaccount", "default"); err != nil {
			return err
		}
		return corednsReady(ctx, c)
	}); err != nil {
		return c, err
	}
	t.done()
	fmt.Fprintf(out, "cluster is up (%s)\nkubeconfig: %s\n  export KUBECONFIG=%s\n", t.total().Round(100*time.Millisecond), c.KubeconfigPath(), c.KubeconfigPath())
	return c, nil
}

// prepare fills in defaults, checks the host and finds (or builds) the
// upstream binaries.
func prepare(ctx context.Context, cfg Config, out io.Writer, t *timer) (Config, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return c, err
	}
	if os.Geteuid() != 0 {
		return c, errors.New("the local cluster needs root (it runs containerd and kubelet, and changes the host's network)")
	}
	if missing := missingCommands(); len(missing) > 0 {
		t.phase("install host packages")
		cmd := exec.CommandContext(ctx, filepath.Join(c.ModuleRoot, "e2e/cluster/install-deps.sh"))
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			return c, fmt.Errorf("missing %s and install-deps.sh failed: %w", strings.Join(missing, ", "), err)
		}
		if missing := missingCommands(); len(missing) > 0 {
			return c, fmt.Errorf("missing on this host after install-deps.sh: %s", strings.Join(missing, ", "))
		}
	}
	if c.ToolsDir == "" {
		t.phase("upstream binaries (Kubernetes, etcd, CoreDNS)")
		cmd := exec.CommandContext(ctx, filepath.Join(c.ModuleRoot, "e2e/cluster/build-tools.sh"))
		cmd.Stderr = out
		b, err := cmd.Output()
		if err != nil {
			return c, fmt.Errorf("build the upstream binaries (e2e/cluster/build-tools.sh): %w", err)
		}
		c.ToolsDir = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return c, err
	}
	if err := os.WriteFile(c.toolsDirFile(), []byte(c.ToolsDir+"\n"), 0o644); err != nil {
		return c, err
	}
	for _, name := range components[1:] {
		if _, err := os.Stat(binary(c, name)); err != nil {
			return c, fmt.Errorf("upstream binary %s is missing from %s: run e2e/cluster/build-tools.sh", name, c.ToolsDir)
		}
	}
	return c, nil
}

func missingCommands() []string {
	var missing []string
	for _, cmd := range requiredCommands {
		if strings.HasPrefix(cmd, "/") {
			if _, err := os.Stat(cmd); err != nil {
				missing = append(missing, cmd)
			}
		} else if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, cmd)
		}
	}
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		missing = append(missing, "the br_netfilter kernel module")
	}
	return missing
}

// checkHostFree fails when something that is not ours holds what the
// cluster needs: a containerd on the fixed socket, or the fixed ports.
func checkHostFree(ctx context.Context) error {
	if _, err := os.Stat(containerdSocket); err == nil {
		if _, err := run(ctx, "ctr", "--address", containerdSocket, "version"); err == nil {
			return fmt.Errorf("a containerd that ambient-lite did not start is serving %s; stop it first (e.g. systemctl stop containerd)", containerdSocket)
		}
	}
	for _, addr := range []string{"127.0.0.1:2379", "127.0.0.1:2380", "127.0.0.1:10257", "127.0.0.1:10259", "127.0.0.1:10248"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("port %s is taken by a process ambient-lite did not start: %w", addr, err)
		} else {
			l.Close()
		}
	}
	return nil
}

// healthy reports nil when every component runs with the current
// configuration and the cluster serves.
func healthy(ctx context.Context, c Config) error {
	for _, name := range components {
		if _, ok := recorded(c, name); !ok {
			return fmt.Errorf("%s is not running", name)
		}
	}
	if b, err := os.ReadFile(c.path("config-hash")); err != nil || string(b) != configHash(c) {
		return errors.New("the cluster runs with another configuration")
	}
	client, err := adminClient(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := getOK(ctx, client, fmt.Sprintf("https://%s:%d/readyz", c.NodeIP, apiPort)); err != nil {
		return err
	}
	if err := nodeReady(ctx, c); err != nil {
		return err
	}
	return corednsReady(ctx, c)
}

// configHash identifies what the components run: their command lines, the
// configuration files and the binaries' directory. A running cluster with
// another hash is restarted by Up.
func configHash(c Config) string {
	h := sha256.New()
	fmt.Fprintln(h, c.ToolsDir, containerdConfig(c), kubeletConfig(c), kubeProxyConfig(c), cniConfig(c), addonsManifest(c), guardRules(c))
	for _, name := range components {
		fmt.Fprintln(h, name, strings.Join(componentArgs(c, name), " "))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func nodeReady(ctx context.Context, c Config) error {
	out, err := c.Kubectl(ctx, nil, "get", "node", c.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "True" {
		return fmt.Errorf("node %s is not Ready", c.NodeName)
	}
	return nil
}

func corednsReady(ctx context.Context, c Config) error {
	out, err := c.Kubectl(ctx, nil, "-n", "kube-system", "get", "deployment", "coredns", "-o", "jsonpath={.status.readyReplicas}")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "1" {
		return errors.New("CoreDNS is not ready")
	}
	return nil
}

// Kubectl runs the cluster's kubectl with the admin kubeconfig and returns
// its combined output; the error includes that output.
func (c Config) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	argv := c.kubectl(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdin
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// adminClient is an HTTPS client holding the admin certificate.
func adminClient(c Config) (*http.Client, error) {
	pkiDir := c.path("pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "admin.crt"), filepath.Join(pkiDir, "admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}},
	}, nil
}

func getOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// waitFor polls check until it succeeds or timeout passes. It fails early,
// naming the log to read, when a component it depends on has died.
func waitFor(ctx context.Context, timeout time.Duration, what string, c Config, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		for _, name := range components {
			if _, err := os.Stat(c.pidFile(name)); err == nil {
				if _, ok := recorded(c, name); !ok {
					return fmt.Errorf("waiting for %s: %s exited; see %s\n%s", what, name, c.logFile(name), tail(c.logFile(name), 15))
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// timer prints phases and how long each took.
type timer struct {
	out   io.Writer
	start time.Time
	name  string
	at    time.Time
}

func newTimer(out io.Writer) *timer { now := time.Now(); return &timer{out: out, start: now, at: now} }

func (t *timer) phase(name string) {
	t.done()
	t.name, t.at = name, time.Now()
	fmt.Fprintf(t.out, "==> %s\n", name)
}

func (t *timer) done() {
	if t.name != "" {
		fmt.Fprintf(t.out, "    %s: %.1fs\n", t.name, time.Since(t.at).Seconds())
		t.name = ""
	}
}

func (t *timer) total() time.Duration { return time.Since(t.start) }
