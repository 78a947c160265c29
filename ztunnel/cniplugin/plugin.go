// Package cniplugin is ambient-cni, the chained CNI plugin of Ambient Lite,
// and its installer.
//
// The container runtime runs the plugin after the node's own network plugins
// (e.g. bridge), for every pod sandbox. On ADD it asks the node agent (over
// the agent's unix socket) to capture the pod if it is enrolled in the
// ambient mesh; the agent answers only once the capture rules are in the
// sandbox's network namespace, so an enrolled pod's containers never run
// uncaptured. If the agent cannot be reached the ADD fails, the sandbox is
// torn down and the kubelet tries again later (fail closed, as Istio does).
// DEL, CHECK, GC and STATUS follow the CNI spec; ADD passes the previous
// result through unchanged.
//
// The protocol with the runtime is implemented here by hand (it is small):
// CNI_* environment variables, the network configuration with prevResult on
// stdin, the result or a CNI error on stdout.
package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// PluginType is the plugin's "type" in a conflist and its binary's name.
const PluginType = "ambient-cni"

// supportedVersions are the CNI spec versions the plugin speaks. (0.1.0 and
// 0.2.0 results have another shape; no current runtime sends them.)
var supportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// CNI error codes (spec, "Error" section).
const (
	ErrCodeIncompatibleVersion = 1
	ErrCodeUnsupportedField    = 2
	ErrCodeInvalidEnvironment  = 4
	ErrCodeIOFailure           = 5
	ErrCodeDecodingFailure     = 6
	ErrCodeInvalidNetConfig    = 7
	ErrCodeTryAgainLater       = 11
	ErrCodeNotAvailable        = 50
	ErrCodeInternal            = 999
)

// Error is a CNI error; Run prints it as the spec's error object.
type Error struct {
	CNIVersion string `json:"cniVersion"`
	Code       int    `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// NetConf is the plugin's entry in the conflist plus what the runtime adds
// (name, cniVersion, prevResult).
type NetConf struct {
	CNIVersion string          `json:"cniVersion,omitempty"`
	Name       string          `json:"name,omitempty"`
	Type       string          `json:"type"`
	PrevResult json.RawMessage `json:"prevResult,omitempty"`

	// AgentSocket is the node agent's socket. Default DefaultAgentSocket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// AgentTimeout bounds the wait for the node agent on ADD, as a Go
	// duration ("30s"). Default 30s.
	AgentTimeout string `json:"agentTimeout,omitempty"`
	// ExcludeNamespaces are namespaces whose pods the plugin lets through
	// without asking the node agent (they are never enrolled). Default none;
	// the installer writes the agent's list (kube-system by default).
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
}

// env is the CNI_* environment of one invocation.
type env struct {
	command, containerID, netns, ifName, args, path string
}

func readEnv(environ []string) env {
	get := func(k string) string {
		for _, kv := range slices.Backward(environ) {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
	return env{
		command: get("CNI_COMMAND"), containerID: get("CNI_CONTAINERID"), netns: get("CNI_NETNS"),
		ifName: get("CNI_IFNAME"), args: get("CNI_ARGS"), path: get("CNI_PATH"),
	}
}

// k8sArgs are the Kubernetes keys of CNI_ARGS ("K8S_POD_NAMESPACE=…;…").
type k8sArgs struct {
	namespace, name, uid, infraContainerID string
}

func parseArgs(s string) (k8sArgs, error) {
	var a k8sArgs
	if s == "" {
		return a, nil
	}
	for pair := range strings.SplitSeq(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return a, fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", pair)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.namespace = v
		case "K8S_POD_NAME":
			a.name = v
		case "K8S_POD_UID":
			a.uid = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			a.infraContainerID = v
		}
	}
	return a, nil
}

// Run is one invocation of the plugin: environ holds the CNI_* variables,
// stdin the network configuration. The result (ADD, VERSION) or a CNI error
// object is written to stdout; diagnostics go to stderr. A non-nil error
// (an *Error) means the caller must exit non-zero.
func Run(ctx context.Context, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := readEnv(environ)
	raw, err := io.ReadAll(stdin)
	if err != nil {
		return fail(stdout, &Error{Code: ErrCodeIOFailure, Msg: "read network configuration from stdin", Details: err.Error()})
	}
	var conf NetConf
	if e.command != "VERSION" || len(strings.TrimSpace(string(raw))) > 0 {
		if err := json.Unmarshal(raw, &conf); err != nil {
			return fail(stdout, &Error{Code: ErrCodeDecodingFailure, Msg: "decode network configuration", Details: err.Error()})
		}
	}
	perr := run(ctx, e, conf, stdout, stderr)
	if perr == nil {
		return nil
	}
	if perr.CNIVersion == "" {
		perr.CNIVersion = conf.CNIVersion
	}
	if perr.CNIVersion == "" || !slices.Contains(supportedVersions, perr.CNIVersion) {
		perr.CNIVersion = supportedVersions[len(supportedVersions)-1]
	}
	fmt.Fprintf(stderr, "%s: %s\n", PluginType, perr.Error())
	return fail(stdout, perr)
}

func fail(stdout io.Writer, e *Error) error {
	if e.CNIVersion == "" {
		e.CNIVersion = supportedVersions[len(supportedVersions)-1]
	}
	b, _ := json.Marshal(e)
	stdout.Write(append(b, '\n'))
	return e
}

func run(ctx context.Context, e env, conf NetConf, stdout, stderr io.Writer) *Error {
	if e.command == "VERSION" {
		b, _ := json.Marshal(struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}{supportedVersions[len(supportedVersions)-1], supportedVersions})
		stdout.Write(append(b, '\n'))
		return nil
	}
	if e.command == "" {
		return &Error{Code: ErrCodeInvalidEnvironment, Msg: "CNI_COMMAND is not set; this is a CNI plugin, run by the container runtime"}
	}
	if !slices.Contains(supportedVersions, conf.CNIVersion) {
		return &Error{Code: ErrCodeIncompatibleVersion, Msg: fmt.Sprintf("unsupported cniVersion %q", conf.CNIVersion),
			Details: "supported: " + strings.Join(supportedVersions, ", ")}
	}
	switch e.command {
	case "ADD":
		return cmdAdd(ctx, e, conf, stdout, stderr)
	case "DEL", "GC":
		// Nothing to undo: the node agent releases a pod when it is deleted
		// from the API server, and the namespace's rules go with it.
		return nil
	case "CHECK":
		if versionLess(conf.CNIVersion, "0.4.0") {
			return &Error{Code: ErrCodeIncompatibleVersion, Msg: "CHECK needs cniVersion 0.4.0 or later"}
		}
		if len(conf.PrevResult) == 0 {
			return &Error{Code: ErrCodeInvalidNetConfig, Msg: "CHECK without prevResult: ambient-cni must be chained after the network plugin"}
		}
		return nil
	case "STATUS":
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := (AgentClient{Socket: conf.AgentSocket}).Ready(ctx); err != nil {
			return &Error{Code: ErrCodeNotAvailable, Msg: "the Ambient Lite node agent is not ready", Details: err.Error()}
		}
		return nil
	default:
		return &Error{Code: ErrCodeInvalidEnvironment, Msg: fmt.Sprintf("unknown CNI_COMMAND %q", e.command)}
	}
}

func cmdAdd(ctx context.Context, e env, conf NetConf, stdout, stderr io.Writer) *Error {
	for _, v := range []struct{ name, value string }{
		{"CNI_CONTAINERID", e.containerID}, {"CNI_NETNS", e.netns}, {"CNI_IFNAME", e.ifName},
	} {
		if v.value == "" {
			return &Error{Code: ErrCodeInvalidEnvironment, Msg: v.name + " is not set"}
		}
	}
	args, err := parseArgs(e.args)
	if err != nil {
		return &Error{Code: ErrCodeInvalidEnvironment, Msg: err.Error()}
	}
	ips, err := prevResultIPs(conf.PrevResult)
	if err != nil {
		return &Error{Code: ErrCodeDecodingFailure, Msg: "decode prevResult", Details: err.Error()}
	}
	switch {
	case args.namespace == "" || args.name == "":
		// Not a Kubernetes pod: nothing to enrol.
	case slices.Contains(conf.ExcludeNamespaces, args.namespace):
	default:
		timeout := defaultAgentTimeout
		if conf.AgentTimeout != "" {
			d, err := time.ParseDuration(conf.AgentTimeout)
			if err != nil || d <= 0 {
				return &Error{Code: ErrCodeInvalidNetConfig, Msg: fmt.Sprintf("agentTimeout %q is not a positive duration", conf.AgentTimeout)}
			}
			timeout = d
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		client := AgentClient{Socket: conf.AgentSocket}
		resp, err := client.Add(ctx, AddRequest{
			ContainerID: e.containerID, NetNS: e.netns, IfName: e.ifName,
			PodNamespace: args.namespace, PodName: args.name, PodUID: args.uid, IPs: ips,
		})
		pod := args.namespace + "/" + args.name
		var unreachable *AgentUnreachableError
		switch {
		case errors.As(err, &unreachable):
			// The plugin cannot tell whether the pod is enrolled without the
			// agent; letting it start might run an enrolled pod uncaptured.
			return &Error{Code: ErrCodeTryAgainLater,
				Msg:     fmt.Sprintf("pod %s not started: %v; the kubelet retries until the agent (in the ztunnel DaemonSet) runs on this node", pod, err),
				Details: "if Ambient Lite was uninstalled, remove the " + PluginType + " entry from the node's CNI network configuration"}
		case err != nil:
			return &Error{Code: ErrCodeInternal, Msg: fmt.Sprintf("capture pod %s", pod), Details: err.Error()}
		case resp.Enrolled:
			fmt.Fprintf(stderr, "%s: pod %s enrolled, traffic captured\n", PluginType, pod)
		}
	}
	if len(conf.PrevResult) == 0 {
		b, _ := json.Marshal(struct {
			CNIVersion string `json:"cniVersion"`
		}{conf.CNIVersion})
		stdout.Write(append(b, '\n'))
		return nil
	}
	stdout.Write(append(slices.Clone(conf.PrevResult), '\n'))
	return nil
}

// prevResultIPs reads the addresses of a 0.3.0 and later result.
func prevResultIPs(raw json.RawMessage) ([]netip.Addr, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return nil, fmt.Errorf("ips[].address %q: %w", ip.Address, err)
		}
		ips = append(ips, p.Addr())
	}
	return ips, nil
}

// versionLess compares dotted CNI versions numerically.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		var x, y int
		if i < len(pa) {
			fmt.Sscan(pa[i], &x)
		}
		if i < len(pb) {
			fmt.Sscan(pb[i], &y)
		}
		if x != y {
			return x < y
		}
	}
	return false
}
