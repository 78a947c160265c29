package l7bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambientlite/mesh/internal/golden"
	"github.com/ambientlite/mesh/istiod-lite/ca"
)

// goldenFiles are fixed paths for the rendered configurations.
var goldenFiles = meshFiles{Root: "/run/l7bench/root-cert.pem", Client: "/run/l7bench/client.pem",
	Reviews: "/run/l7bench/reviews.pem", Waypoint: "/run/l7bench/waypoint.pem"}

func TestPeerConfigs(t *testing.T) {
	for _, path := range []string{"haproxy", "haproxy-mtls"} {
		for _, p := range peerProcesses(path, goldenFiles) {
			t.Run(p.file, func(t *testing.T) {
				got, err := p.cfg.render()
				if err != nil {
					t.Fatal(err)
				}
				golden.Check(t, filepath.Join("testdata", p.file+".golden"), []byte(got), *update)
			})
		}
	}
}

// TestHAProxyAcceptsConfigs has HAProxy check every rendered configuration
// (haproxy -c loads the certificates too), when it is installed.
func TestHAProxyAcceptsConfigs(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (bench/install-peers.sh)")
	}
	dir := t.TempDir()
	a, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	files, err := writeMeshFiles(context.Background(), dir, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"haproxy", "haproxy-mtls"} {
		for _, p := range peerProcesses(path, files) {
			text, err := p.cfg.render()
			if err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(dir, p.file)
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
				t.Errorf("haproxy -c %s: %v\n%s\n%s", p.file, err, out, text)
			}
		}
	}
}
