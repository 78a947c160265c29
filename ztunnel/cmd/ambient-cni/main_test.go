package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambientlite/mesh/ztunnel/cniplugin"
)

// TestBinary builds the real plugin and runs it the way a container runtime
// does (CNI_* environment, configuration with prevResult on stdin), against
// a node-agent socket that speaks the real protocol.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds the plugin binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, cniplugin.PluginType)
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	sock := filepath.Join(dir, "cni.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan cniplugin.AddRequest, 1)
	passed := make(chan bool, 1)
	srv := &http.Server{Handler: cniplugin.AgentHandler(func(_ context.Context, r cniplugin.AddRequest, netns *os.File) (cniplugin.AddResponse, error) {
		passed <- netns != nil
		if netns != nil {
			netns.Close()
		}
		got <- r
		return cniplugin.AddResponse{Enrolled: r.PodNamespace == "demo"}, nil
	}, nil), ConnContext: cniplugin.AgentConnContext}
	go srv.Serve(cniplugin.AgentListener(ln))
	defer srv.Close()

	const prev = `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","interface":0,"address":"10.244.0.9/24"}],"dns":{}}`
	conf := `{"cniVersion":"0.4.0","name":"ambient-lite","type":"ambient-cni","agentSocket":"` + sock + `","prevResult":` + prev + `}`
	run := func(env ...string) (string, error) {
		cmd := exec.Command(bin)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(conf)
		var out bytes.Buffer
		cmd.Stdout = &out
		err := cmd.Run()
		return out.String(), err
	}
	// The plugin opens CNI_NETNS and passes it to the agent; any file the
	// plugin can open stands in for the sandbox's namespace here.
	const netns = "/proc/self/ns/net"
	base := []string{"CNI_CONTAINERID=c1", "CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin"}

	out, err := run(append(base, "CNI_COMMAND=ADD", "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0")...)
	if err != nil {
		t.Fatalf("ADD: %v, stdout %s", err, out)
	}
	if strings.TrimSpace(out) != prev {
		t.Errorf("ADD stdout %s, want prevResult %s", out, prev)
	}
	r := <-got
	if r.PodNamespace != "demo" || r.PodName != "web-0" || r.NetNS != netns || len(r.IPs) != 1 || r.IPs[0].String() != "10.244.0.9" {
		t.Errorf("agent got %+v", r)
	}
	if !<-passed {
		t.Error("the plugin did not pass the network namespace as a file")
	}

	out, err = run("CNI_COMMAND=VERSION")
	if err != nil || !strings.Contains(out, `"supportedVersions"`) {
		t.Errorf("VERSION: %v %s", err, out)
	}

	// Agent gone: ADD fails with a CNI error, exit status 1.
	srv.Close()
	os.Remove(sock)
	out, err = run(append(base, "CNI_COMMAND=ADD", "CNI_ARGS=K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1")...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("ADD without agent: err %v, want exit status 1", err)
	}
	var cerr cniplugin.Error
	if err := json.Unmarshal([]byte(out), &cerr); err != nil || cerr.Code != cniplugin.ErrCodeTryAgainLater {
		t.Errorf("stdout %q is not a code-11 CNI error", out)
	}
	// DEL still succeeds, with no output.
	out, err = run(append(base, "CNI_COMMAND=DEL", "CNI_ARGS=K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1")...)
	if err != nil || out != "" {
		t.Errorf("DEL without agent: %v, stdout %q", err, out)
	}
}
