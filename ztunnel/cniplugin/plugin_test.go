package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeAgent serves the real plugin protocol (AgentHandler) on a unix socket
// and records the requests.
type fakeAgent struct {
	socket string
	mu     sync.Mutex
	reqs   []AddRequest
	netns  []uint64 // inode of the namespace passed with each request, 0: none
	answer func(AddRequest) (AddResponse, error)
}

func newFakeAgent(t *testing.T, answer func(AddRequest) (AddResponse, error)) *fakeAgent {
	t.Helper()
	a := &fakeAgent{socket: filepath.Join(t.TempDir(), "cni.sock"), answer: answer}
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: AgentHandler(func(ctx context.Context, r AddRequest, netns *os.File) (AddResponse, error) {
		var ino uint64
		if netns != nil {
			ino = fileIno(t, netns)
			netns.Close()
		}
		a.mu.Lock()
		a.reqs = append(a.reqs, r)
		a.netns = append(a.netns, ino)
		a.mu.Unlock()
		return a.answer(r)
	}, nil), ConnContext: AgentConnContext}
	go srv.Serve(AgentListener(ln))
	t.Cleanup(func() { srv.Close() })
	return a
}

func fileIno(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func pathIno(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return fileIno(t, f)
}

func (a *fakeAgent) passed() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]uint64(nil), a.netns...)
}

func (a *fakeAgent) requests() []AddRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AddRequest(nil), a.reqs...)
}

const prevResult = `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/cni-1"}],"ips":[{"version":"4","interface":0,"address":"10.244.0.7/24","gateway":"10.244.0.1"},{"version":"6","interface":0,"address":"fd00::7/64"}],"dns":{}}`

func stdinConf(t *testing.T, version, socket string, extra map[string]any) string {
	t.Helper()
	m := map[string]any{"cniVersion": version, "name": "ambient-lite", "type": PluginType, "agentSocket": socket}
	if version != "" {
		m["prevResult"] = json.RawMessage(strings.Replace(prevResult, "0.4.0", version, 1))
	}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testNetNS stands for the sandbox's namespace file: the plugin opens
// CNI_NETNS and passes the open file, which the agent gets even where it
// could not open the path.
const testNetNS = "/proc/self/ns/net"

func addEnv(cmd string) []string {
	return []string{
		"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=abc123", "CNI_NETNS=" + testNetNS, "CNI_IFNAME=eth0",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1",
		"CNI_PATH=/opt/cni/bin",
	}
}

func runPlugin(t *testing.T, env []string, stdin string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = Run(context.Background(), env, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestAddEnrolled(t *testing.T) {
	agent := newFakeAgent(t, func(AddRequest) (AddResponse, error) { return AddResponse{Enrolled: true}, nil })
	conf := stdinConf(t, "0.4.0", agent.socket, nil)
	out, _, err := runPlugin(t, addEnv("ADD"), conf)
	if err != nil {
		t.Fatalf("ADD: %v (stdout %s)", err, out)
	}
	// The previous result passes through unchanged.
	if diff := cmp.Diff(prevResult, strings.TrimSpace(out)); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	want := []AddRequest{{
		ContainerID: "abc123", NetNS: testNetNS, IfName: "eth0",
		PodNamespace: "demo", PodName: "web-0", PodUID: "uid-1",
		IPs: []netip.Addr{netip.MustParseAddr("10.244.0.7"), netip.MustParseAddr("fd00::7")},
	}}
	if diff := cmp.Diff(want, agent.requests(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("agent got (-want +got):\n%s", diff)
	}
	if got, wantIno := agent.passed(), pathIno(t, testNetNS); len(got) != 1 || got[0] != wantIno {
		t.Errorf("namespace passed to the agent: inodes %v, want [%d]", got, wantIno)
	}
}

// TestAddNetNSUnopenable: a CNI_NETNS the plugin cannot open fails the ADD
// before the agent is asked.
func TestAddNetNSUnopenable(t *testing.T) {
	agent := newFakeAgent(t, func(AddRequest) (AddResponse, error) { return AddResponse{Enrolled: true}, nil })
	env := addEnv("ADD")
	for i, kv := range env {
		if strings.HasPrefix(kv, "CNI_NETNS=") {
			env[i] = "CNI_NETNS=" + filepath.Join(t.TempDir(), "gone")
		}
	}
	_, _, err := runPlugin(t, env, stdinConf(t, "1.0.0", agent.socket, nil))
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.Code != ErrCodeInternal || !strings.Contains(cerr.Error(), "network namespace") {
		t.Fatalf("err = %v, want a CNI error naming the network namespace", err)
	}
	if n := len(agent.requests()); n != 0 {
		t.Errorf("agent asked %d times", n)
	}
}

// TestAgentOldPlugin: a plugin that speaks plain HTTP (no preamble) is
// still served, without a namespace file.
func TestAgentOldPlugin(t *testing.T) {
	agent := newFakeAgent(t, func(AddRequest) (AddResponse, error) { return AddResponse{Enrolled: true}, nil })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", agent.socket)
	}}}
	body := `{"containerID":"x","netns":"/var/run/netns/cni-1","ifName":"eth0","podNamespace":"demo","podName":"p"}`
	resp, err := c.Post("http://node-agent"+addPath, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := agent.passed(); len(got) != 1 || got[0] != 0 {
		t.Errorf("namespace inodes %v, want [0] (none passed)", got)
	}
}

func TestAddNotEnrolledPassesThrough(t *testing.T) {
	agent := newFakeAgent(t, func(AddRequest) (AddResponse, error) { return AddResponse{}, nil })
	out, _, err := runPlugin(t, addEnv("ADD"), stdinConf(t, "1.0.0", agent.socket, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"10.244.0.7/24"`) || !strings.Contains(out, `"cniVersion":"1.0.0"`) {
		t.Errorf("prevResult not passed through: %s", out)
	}
}

// TestAddAgentUnreachable: without the node agent an ADD fails with "try
// again later", so an enrolled pod never starts uncaptured.
func TestAddAgentUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	out, stderr, err := runPlugin(t, addEnv("ADD"), stdinConf(t, "1.0.0", sock, nil))
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.Code != ErrCodeTryAgainLater {
		t.Fatalf("err = %v, want a CNI error with code 11", err)
	}
	var printed Error
	if err := json.Unmarshal([]byte(out), &printed); err != nil {
		t.Fatalf("stdout is not a CNI error object: %q", out)
	}
	if printed.Code != ErrCodeTryAgainLater || printed.CNIVersion != "1.0.0" || !strings.Contains(printed.Msg, sock) || !strings.Contains(printed.Msg, "demo/web-0") {
		t.Errorf("error object %+v", printed)
	}
	if !strings.Contains(stderr, "node agent") {
		t.Errorf("stderr %q does not explain", stderr)
	}
}

func TestAddAgentError(t *testing.T) {
	agent := newFakeAgent(t, func(AddRequest) (AddResponse, error) {
		return AddResponse{}, errors.New("apply capture rules: permission denied")
	})
	out, _, err := runPlugin(t, addEnv("ADD"), stdinConf(t, "0.4.0", agent.socket, nil))
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.Code != ErrCodeInternal || !strings.Contains(cerr.Details, "permission denied") {
		t.Fatalf("err = %v, want the agent's reason", err)
	}
	if !strings.Contains(out, `"code":999`) {
		t.Errorf("stdout %s", out)
	}
}

// TestAddSkipsWithoutAgent: pods in excluded namespaces and non-Kubernetes
// sandboxes never need the node agent.
func TestAddSkipsWithoutAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	t.Run("excluded namespace", func(t *testing.T) {
		conf := stdinConf(t, "0.4.0", sock, map[string]any{"excludeNamespaces": []string{"kube-system", "demo"}})
		if out, _, err := runPlugin(t, addEnv("ADD"), conf); err != nil {
			t.Fatalf("ADD: %v %s", err, out)
		}
	})
	t.Run("no pod args", func(t *testing.T) {
		env := addEnv("ADD")
		env[4] = "CNI_ARGS="
		if out, _, err := runPlugin(t, env, stdinConf(t, "0.4.0", sock, nil)); err != nil {
			t.Fatalf("ADD: %v %s", err, out)
		}
	})
}

func TestAddWithoutPrevResult(t *testing.T) {
	agent := newFakeAgent(t, func(AddRequest) (AddResponse, error) { return AddResponse{Enrolled: true}, nil })
	out, _, err := runPlugin(t, addEnv("ADD"), stdinConf(t, "1.0.0", agent.socket, map[string]any{"prevResult": nil}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != `{"cniVersion":"1.0.0"}` {
		t.Errorf("stdout %s", out)
	}
	if got := agent.requests(); len(got) != 1 || len(got[0].IPs) != 0 {
		t.Errorf("agent got %+v", got)
	}
}

func TestCommands(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	ready := newFakeAgent(t, func(AddRequest) (AddResponse, error) { return AddResponse{}, nil })
	tests := []struct {
		name     string
		env      []string
		stdin    string
		wantCode int // 0: success
		wantOut  string
	}{
		{name: "DEL needs no agent", env: addEnv("DEL"), stdin: stdinConf(t, "1.0.0", missing, nil)},
		{name: "DEL without netns", env: []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=x", "CNI_IFNAME=eth0"}, stdin: stdinConf(t, "0.4.0", missing, nil)},
		{name: "GC", env: []string{"CNI_COMMAND=GC"}, stdin: stdinConf(t, "1.1.0", missing, nil)},
		{name: "CHECK", env: addEnv("CHECK"), stdin: stdinConf(t, "0.4.0", missing, nil)},
		{name: "CHECK old version", env: addEnv("CHECK"), stdin: stdinConf(t, "0.3.1", missing, nil), wantCode: ErrCodeIncompatibleVersion},
		{name: "CHECK without prevResult", env: addEnv("CHECK"), stdin: stdinConf(t, "1.0.0", missing, map[string]any{"prevResult": nil}), wantCode: ErrCodeInvalidNetConfig},
		{name: "VERSION", env: []string{"CNI_COMMAND=VERSION"}, stdin: `{"cniVersion":"1.0.0"}`,
			wantOut: `{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`},
		{name: "VERSION empty stdin", env: []string{"CNI_COMMAND=VERSION"}, stdin: "",
			wantOut: `{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`},
		{name: "STATUS agent ready", env: []string{"CNI_COMMAND=STATUS"}, stdin: stdinConf(t, "1.1.0", ready.socket, nil)},
		{name: "STATUS agent missing", env: []string{"CNI_COMMAND=STATUS"}, stdin: stdinConf(t, "1.1.0", missing, nil), wantCode: ErrCodeNotAvailable},
		{name: "unsupported version", env: addEnv("ADD"), stdin: `{"cniVersion":"0.2.0","name":"n","type":"ambient-cni"}`, wantCode: ErrCodeIncompatibleVersion},
		{name: "bad json", env: addEnv("ADD"), stdin: `{`, wantCode: ErrCodeDecodingFailure},
		{name: "no command", env: nil, stdin: stdinConf(t, "1.0.0", missing, nil), wantCode: ErrCodeInvalidEnvironment},
		{name: "unknown command", env: []string{"CNI_COMMAND=FROB"}, stdin: stdinConf(t, "1.0.0", missing, nil), wantCode: ErrCodeInvalidEnvironment},
		{name: "ADD without netns", env: []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_IFNAME=eth0"}, stdin: stdinConf(t, "1.0.0", missing, nil), wantCode: ErrCodeInvalidEnvironment},
		{name: "bad agentTimeout", env: addEnv("ADD"), stdin: stdinConf(t, "1.0.0", missing, map[string]any{"agentTimeout": "soon"}), wantCode: ErrCodeInvalidNetConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runPlugin(t, tc.env, tc.stdin)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("err = %v, stdout %s", err, out)
				}
				if strings.TrimSpace(out) != tc.wantOut {
					t.Errorf("stdout %q, want %q", out, tc.wantOut)
				}
				return
			}
			var cerr *Error
			if !errors.As(err, &cerr) || cerr.Code != tc.wantCode {
				t.Fatalf("err = %v, want code %d", err, tc.wantCode)
			}
			var printed Error
			if err := json.Unmarshal([]byte(out), &printed); err != nil || printed.Code != tc.wantCode || printed.Msg == "" {
				t.Errorf("stdout %q is not the CNI error (%v)", out, err)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{{"0.3.1", "0.4.0", true}, {"0.4.0", "0.4.0", false}, {"1.0.0", "0.4.0", false}, {"0.10.0", "0.9.0", false}} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}
