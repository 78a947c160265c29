package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/cniplugin"
	"github.com/ambientlite/mesh/ztunnel/nodeagent/zds"
)

// Defaults of Config.
const (
	DefaultZtunnelSocket     = "/var/run/ambient-lite/ztunnel.sock"
	DefaultProcDir           = "/proc"
	DefaultPodLookupTimeout  = 10 * time.Second
	DefaultReconcileInterval = time.Minute
)

// DefaultExcludeNamespaces is Istio's default list (its CNI chart's
// excludeNamespaces): pods there are never enrolled, and the CNI plugin lets
// them start without asking the agent.
var DefaultExcludeNamespaces = []string{"kube-system"}

// Config configures the node agent. Every field but NodeName has a default.
type Config struct {
	// NodeName is the node the agent runs on (from the downward API,
	// spec.nodeName). Only pods scheduled there are considered. Required.
	NodeName string

	// ZtunnelSocket is where the agent listens for ztunnel (package zds).
	// Default /var/run/ambient-lite/ztunnel.sock.
	ZtunnelSocket string
	// CNISocket is where the agent answers the CNI plugin. Default
	// /var/run/ambient-lite/cni.sock (cniplugin.DefaultAgentSocket).
	CNISocket string

	// Capture is the in-pod redirection every enrolled pod gets. The zero
	// value is Istio's default (capture.Config).
	Capture capture.Config

	// ExcludeNamespaces are namespaces whose pods are never enrolled, even
	// when labelled. nil means DefaultExcludeNamespaces (kube-system); an
	// empty, non-nil slice excludes nothing.
	ExcludeNamespaces []string

	// ProcDir is the host's /proc, used to find running pods' network
	// namespaces. The agent needs the host's PID namespace (hostPID) or the
	// host's /proc mounted here. Default /proc.
	ProcDir string

	// Host configures the kubelet-probe SNAT in the host namespace.
	Host HostConfig

	// CNI configures the chained plugin the agent installs at start. Its
	// AgentSocket defaults to CNISocket and its ExcludeNamespaces to the
	// agent's.
	CNI cniplugin.InstallConfig
	// DisableCNIInstall leaves the runtime's CNI configuration alone (the
	// plugin is installed some other way, or not at all: then only running
	// pods are captured, once the agent sees them). Default false.
	DisableCNIInstall bool
	// UninstallCNIOnExit removes the plugin when Run returns. Default false:
	// during an agent restart or upgrade the plugin stays, and new pods wait
	// (their ADD fails and is retried) until an agent is back — fail closed.
	// Set it only when the mesh is being removed from the node.
	UninstallCNIOnExit bool
	// RemovedFromNode, if set, is asked when Run returns (and
	// UninstallCNIOnExit is false) whether the mesh is being removed from
	// this node — e.g. the DaemonSet is being deleted — rather than the
	// agent restarting; true removes the plugin, so that new pods start
	// with plain networking once no agent will come back for them.
	RemovedFromNode func(context.Context) bool

	// PodLookupTimeout bounds how long a CNI ADD waits for the pod and its
	// namespace to show up in the agent's informer caches. Default 10s.
	PodLookupTimeout time.Duration
	// ReconcileInterval is how often the agent re-checks the plugin's
	// conflist entry and every enrolled pod's capture rules (re-applying
	// them when they drifted). Default 1m.
	ReconcileInterval time.Duration
	// AckTimeout is how long ztunnel has to ack each message. Default 5s.
	AckTimeout time.Duration
}

// HostConfig configures the host side of kubelet probes: an nftables table
// inet ambient_lite_host that SNATs the node's own TCP connections to
// enrolled pod IPs to the probe source addresses, which the in-pod rules let
// through uncaptured.
type HostConfig struct {
	// Disabled leaves the host namespace alone: kubelet probes of enrolled
	// pods then go through ztunnel like any node traffic. Default false.
	Disabled bool
	// NetNS is the path of the namespace that gets the table. Default "":
	// the agent's own, which is the host's (the agent runs with
	// hostNetwork). Tests point it at a throw-away namespace.
	NetNS string
	// ProbeSourceV4 and ProbeSourceV6 are the SNAT addresses. Defaults:
	// Capture's probe sources (169.254.7.127 and
	// fd16:9254:7127:1337:ffff:ffff:ffff:ffff).
	ProbeSourceV4, ProbeSourceV6 netip.Addr
	// ProbeUID, if set, limits the SNAT to sockets owned by that user (the
	// kubelet's), like Istio's nftables mode. Default nil: every locally
	// created socket, like Istio's iptables mode (-m owner --socket-exists).
	ProbeUID *uint32
}

func (c Config) withDefaults() Config {
	if c.ZtunnelSocket == "" {
		c.ZtunnelSocket = DefaultZtunnelSocket
	}
	if c.CNISocket == "" {
		c.CNISocket = cniplugin.DefaultAgentSocket
	}
	if c.ExcludeNamespaces == nil {
		c.ExcludeNamespaces = DefaultExcludeNamespaces
	}
	if c.ProcDir == "" {
		c.ProcDir = DefaultProcDir
	}
	if !c.Host.ProbeSourceV4.IsValid() {
		c.Host.ProbeSourceV4 = c.Capture.ProbeSourceV4
		if !c.Host.ProbeSourceV4.IsValid() {
			c.Host.ProbeSourceV4 = capture.DefaultProbeSourceV4
		}
	}
	if !c.Host.ProbeSourceV6.IsValid() {
		c.Host.ProbeSourceV6 = c.Capture.ProbeSourceV6
		if !c.Host.ProbeSourceV6.IsValid() {
			c.Host.ProbeSourceV6 = capture.DefaultProbeSourceV6
		}
	}
	if c.CNI.AgentSocket == "" {
		c.CNI.AgentSocket = c.CNISocket
	}
	if c.CNI.ExcludeNamespaces == nil {
		c.CNI.ExcludeNamespaces = c.ExcludeNamespaces
	}
	if c.PodLookupTimeout <= 0 {
		c.PodLookupTimeout = DefaultPodLookupTimeout
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = zds.DefaultAckTimeout
	}
	return c
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("NodeName is required: set it from the downward API (spec.nodeName)"))
	}
	if err := c.Capture.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Capture: %w", err))
	}
	d := c.withDefaults()
	if !d.Host.ProbeSourceV4.Is4() {
		errs = append(errs, fmt.Errorf("Host.ProbeSourceV4 %s is not an IPv4 address", d.Host.ProbeSourceV4))
	}
	if !d.Host.ProbeSourceV6.Is6() || d.Host.ProbeSourceV6.Is4In6() {
		errs = append(errs, fmt.Errorf("Host.ProbeSourceV6 %s is not an IPv6 address", d.Host.ProbeSourceV6))
	}
	if d.ZtunnelSocket == d.CNISocket {
		errs = append(errs, fmt.Errorf("ZtunnelSocket and CNISocket are both %s", d.CNISocket))
	}
	return errors.Join(errs...)
}
