package images

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// echoRef is the reference the Gateway API conformance suite's mesh pods
// run (sigs.k8s.io/gateway-api/conformance mesh/manifests.yaml).
const echoRef = "registry.k8s.io/gateway-api/echo-advanced:v1.5.1"

// TestEchoAdvanced builds the echo-advanced image with the command, pushing
// it to an in-process registry, then checks the tarball (its reference,
// entrypoint, binaries and TLS pair) and runs the server and client it
// holds against each other on loopback, the way the conformance suite runs
// them in a pod.
func TestEchoAdvanced(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: compiles Istio's echo server and client (about 2 minutes cold)")
	}
	if runtime.GOOS != "linux" {
		t.Skipf("the image's binaries are built for linux; this is %s", runtime.GOOS)
	}
	host := newRegistry(t)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := Run(t.Context(), []string{"--out", out, "--tag", "v1", "--push", host + "/mesh", "--only", "echo-advanced"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Run: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("built and pushed echo-advanced in %s", time.Since(start).Round(time.Second))
	tarPath := filepath.Join(out, "echo-advanced.tar")
	// With --push the table shows where the image went, not its fixed ref.
	wantOut := regexp.MustCompile(`(?m)^echo-advanced +` + regexp.QuoteMeta(host) + `/mesh/echo-advanced:v1 +sha256:[0-9a-f]{64} .* ` + regexp.QuoteMeta(tarPath) + `\n`)
	if !wantOut.MatchString(stdout.String()) {
		t.Errorf("stdout does not match %s:\n%s", wantOut, stdout.String())
	}

	// The tarball is tagged with the fixed reference, whatever the prefix.
	tag, err := name.NewTag(echoRef)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tarball.ImageFromPath(tarPath, &tag); err != nil {
		t.Errorf("tarball has no image tagged %s: %v", echoRef, err)
	}
	img, files, bodies := readImage(t, tarPath)
	pushed := pull(t, host+"/mesh/echo-advanced:v1")
	if got, want := digestOf(t, pushed), digestOf(t, img); got != want {
		t.Errorf("pushed image digest %s, tarball's %s", got, want)
	}

	t.Run("image", func(t *testing.T) {
		pair, err := selfSigned("echo")
		if err != nil {
			t.Fatal(err)
		}
		wantFiles := []file{
			{Name: "cert.crt", Mode: "-rw-r--r--", Body: string(pair.cert)},
			{Name: "cert.key", Mode: "-rw-r--r--", Body: string(pair.key)},
			baseFiles[0], baseFiles[1], baseFiles[2], baseFiles[3], baseFiles[4],
			{Name: "usr/", Mode: "drwxr-xr-x"},
			{Name: "usr/local/", Mode: "drwxr-xr-x"},
			{Name: "usr/local/bin/", Mode: "drwxr-xr-x"},
			{Name: "usr/local/bin/client", Mode: "-rwxr-xr-x"},
			{Name: "usr/local/bin/server", Mode: "-rwxr-xr-x"},
		}
		if diff := cmp.Diff(wantFiles, files); diff != "" {
			t.Errorf("files (-want +got):\n%s", diff)
		}
		for _, bin := range []string{"/usr/local/bin/server", "/usr/local/bin/client"} {
			if !bytes.HasPrefix(bodies[bin], []byte("\x7fELF")) {
				t.Errorf("%s is not an ELF binary", bin)
			}
		}
		parseSelfSigned(t, selfSignedPair{cert: bodies["/cert.crt"], key: bodies["/cert.key"]}, "echo")

		cf := configOf(t, img)
		want := v1.Config{
			Entrypoint: []string{"/usr/local/bin/server"},
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			Labels:     map[string]string{SourceLabel: Source},
		}
		if diff := cmp.Diff(want, cf.Config); diff != "" {
			t.Errorf("config (-want +got):\n%s", diff)
		}
	})

	t.Run("server answers client", func(t *testing.T) {
		root := t.TempDir()
		for p, body := range bodies {
			dst := filepath.Join(root, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, body, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		testEchoPair(t, root)
	})
}

// testEchoPair runs the echo server extracted under root with the flags
// the conformance suite gives it, on loopback and free ports, and sends it
// requests with the client, as the suite's mesh tests do from inside a pod.
func testEchoPair(t *testing.T, root string) {
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 4)
	httpPort, tlsPort, grpcPort, tcpPort := ports[0], ports[1], ports[2], ports[3]
	args := []string{
		"--tcp=" + tcpPort, "--port=" + httpPort, "--grpc=" + grpcPort, "--port=" + tlsPort, "--tls=" + tlsPort,
		"--crt=" + filepath.Join(root, "cert.crt"), "--key=" + filepath.Join(root, "cert.key"),
		"--bind-localhost=" + strings.Join(ports, ","), "--version=v-test",
	}
	server := exec.Command(filepath.Join(root, "usr/local/bin/server"), args...)
	var serverLog syncBuffer
	server.Stdout, server.Stderr = &serverLog, &serverLog
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", serverLog.String())
		}
	})

	// client runs the image's /usr/local/bin/client as `client`, the name
	// `kubectl exec <pod> -- client URL ...` finds on the image's PATH.
	client := func(args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), filepath.Join(root, "usr/local/bin/client"), args...)
		cmd.Args[0] = "client"
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("client %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String(), nil
	}

	// The server is ready when the client gets an answer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := client("http://127.0.0.1:"+httpPort+"/", "--timeout=2s")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	common := []string{"[0 body] ServiceVersion=v-test", "[0 body] Hostname=" + hostname}
	for _, tc := range []struct {
		name string
		args []string
		want []string // lines of the client's output
	}{
		{
			// The form the suite's MeshPod requests take.
			name: "http, as the conformance suite calls it",
			args: []string{"http://127.0.0.1:" + httpPort + "/path", "--method=GET", "-H", "X-Test:yes"},
			want: []string{"[0] StatusCode=200", "[0 body] URL=/path", "[0 body] Method=GET", "[0 body] RequestHeader=X-Test:yes", "[0 body] ServicePort=" + httpPort},
		},
		{
			name: "https verified with the image's certificate",
			args: []string{"https://127.0.0.1:" + tlsPort + "/", "--ca=" + filepath.Join(root, "cert.crt"), "--server-name=echo"},
			want: []string{"[0] StatusCode=200", "[0 body] ServicePort=" + tlsPort},
		},
		{
			name: "batch of three",
			args: []string{"http://127.0.0.1:" + httpPort + "/", "--count=3"},
			want: []string{"[0] StatusCode=200", "[1] StatusCode=200", "[2] StatusCode=200"},
		},
		{
			name: "grpc",
			args: []string{"grpc://127.0.0.1:" + grpcPort},
			want: []string{"[0 body] Proto=GRPC", "[0 body] ServicePort=" + grpcPort},
		},
		{
			name: "tcp",
			args: []string{"tcp://127.0.0.1:" + tcpPort},
			want: []string{"[0 body] Proto=TCP", "[0 body] ServicePort=" + tcpPort},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := client(tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(out, "\n")
			for _, want := range append(tc.want, common...) {
				if !slices.Contains(lines, want) {
					t.Errorf("client output lacks the line %q:\n%s", want, out)
				}
			}
		})
	}

	// A client that does not trust the certificate is refused.
	if out, err := client("https://127.0.0.1:"+tlsPort+"/", "--ca="+filepath.Join(root, "cert.crt"), "--server-name=not-echo"); err == nil {
		t.Errorf("https for the wrong name succeeded:\n%s", out)
	}
}

// freePorts returns n ports free on 127.0.0.1 a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// pull reads the image ref from its registry.
func pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// syncBuffer is a bytes.Buffer a process's stdout and stderr can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
