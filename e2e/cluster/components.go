package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeConfigs writes every component's configuration file into StateDir.
func writeConfigs(c Config, p *pki) error {
	server := fmt.Sprintf("https://%s:%d", c.NodeIP, apiPort)
	for _, kc := range []struct{ file, cert string }{
		{"kubeconfig", "admin"},
		{"controller-manager.kubeconfig", "controller-manager"},
		{"scheduler.kubeconfig", "scheduler"},
		{"kube-proxy.kubeconfig", "kube-proxy"},
		{"kubelet.kubeconfig", "kubelet-client"},
	} {
		if err := p.kubeconfig(c.path(kc.file), server, kc.cert); err != nil {
			return fmt.Errorf("write %s: %w", kc.file, err)
		}
	}
	files := map[string]string{
		"containerd.toml":        containerdConfig(c),
		"kubelet.yaml":           kubeletConfig(c),
		"kube-proxy.yaml":        kubeProxyConfig(c),
		"resolv.conf":            "# The cluster has no upstream DNS: nothing leaves the machine.\noptions ndots:1\n",
		"cni/10-bridge.conflist": cniConfig(c),
	}
	for name, content := range files {
		path := c.path(name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func containerdConfig(c Config) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%s/pause:%s"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, c.path("containerd"), containerdState, containerdSocket, c.ImagePrefix, c.ImageTag, c.path("cni"))
}

func cniConfig(c Config) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "ambient-lite",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, bridgeName, c.path("cni-ipam"), c.PodCIDR.Masked().String(), c.bridgeIP().String())
}

func kubeletConfig(c Config) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]q}
authorization: {mode: Webhook}
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
clusterDNS: [%[5]s]
clusterDomain: %[6]s
resolvConf: %[7]q
containerRuntimeEndpoint: unix://%[8]s
cgroupDriver: cgroupfs
# The machines are cgroup v1 VMs without swap accounting.
failCgroupV1: false
failSwapOn: false
podLogsDir: /var/log/pods
# Images cannot be pulled again, so never collect them, and never evict.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 200
`, c.NodeIP, filepath.Join(c.path("pki"), "ca.crt"), filepath.Join(c.path("pki"), "kubelet.crt"),
		filepath.Join(c.path("pki"), "kubelet.key"), c.dnsServiceIP(), c.ClusterDomain, c.path("resolv.conf"), containerdSocket)
}

func kubeProxyConfig(c Config) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
hostnameOverride: %s
clusterCIDR: %s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: ["%s/32"]
# Leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.path("kube-proxy.kubeconfig"), c.NodeName, c.PodCIDR.Masked(), c.NodeIP)
}

// componentArgs returns the command line of each component.
func componentArgs(c Config, name string) []string {
	pki := func(f string) string { return filepath.Join(c.path("pki"), f) }
	switch name {
	case "containerd":
		return []string{"--config", c.path("containerd.toml")}
	case "etcd":
		return []string{
			"--name=ambient-lite", "--data-dir=" + c.path("etcd"),
			"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=ambient-lite=http://127.0.0.1:2380",
			"--unsafe-no-fsync", "--log-level=warn",
		}
	case "kube-apiserver":
		return []string{
			"--etcd-servers=http://127.0.0.1:2379",
			"--bind-address=" + c.NodeIP.String(), "--advertise-address=" + c.NodeIP.String(),
			fmt.Sprintf("--secure-port=%d", apiPort),
			"--service-cluster-ip-range=" + c.ServiceCIDR.Masked().String(),
			"--client-ca-file=" + pki("ca.crt"),
			"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
			"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
			"--service-account-issuer=https://kubernetes.default.svc." + c.ClusterDomain,
			"--service-account-key-file=" + pki("sa.pub"),
			"--service-account-signing-key-file=" + pki("sa.key"),
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--profiling=false",
			"--v=1",
		}
	case "kube-controller-manager":
		kc := c.path("controller-manager.kubeconfig")
		return []string{
			"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1", "--leader-elect=false",
			"--service-account-private-key-file=" + pki("sa.key"),
			"--root-ca-file=" + pki("ca.crt"),
			"--cluster-signing-cert-file=" + pki("ca.crt"), "--cluster-signing-key-file=" + pki("ca.key"),
			"--use-service-account-credentials=true",
			"--service-cluster-ip-range=" + c.ServiceCIDR.Masked().String(),
			"--controllers=*,-node-ipam-controller",
			"--profiling=false", "--v=1",
		}
	case "kube-scheduler":
		kc := c.path("scheduler.kubeconfig")
		return []string{
			"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
		}
	case "kubelet":
		return []string{
			"--config=" + c.path("kubelet.yaml"),
			"--kubeconfig=" + c.path("kubelet.kubeconfig"),
			"--node-ip=" + c.NodeIP.String(),
			"--hostname-override=" + c.NodeName,
			"--root-dir=" + kubeletRoot,
			"--v=1",
		}
	case "kube-proxy":
		return []string{"--config=" + c.path("kube-proxy.yaml"), "--v=1"}
	}
	panic("unknown component " + name)
}

// binary returns the path of a component's executable.
func binary(c Config, name string) string {
	if name == "containerd" {
		return "containerd"
	}
	return filepath.Join(c.ToolsDir, name)
}

// kubectl returns a kubectl command line against the cluster.
func (c Config) kubectl(args ...string) []string {
	return append([]string{filepath.Join(c.ToolsDir, "kubectl"), "--kubeconfig=" + c.KubeconfigPath()}, args...)
}

// addonsManifest is CoreDNS, serving cluster.local from the API with no
// upstream forwarding (nothing leaves the machine).
func addonsManifest(c Config) string {
	return strings.NewReplacer(
		"$DNS_IP", c.dnsServiceIP().String(),
		"$DOMAIN", c.ClusterDomain,
		"$IMAGE", c.Image("coredns"),
	).Replace(corednsManifest)
}
