package l4bench

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambientlite/mesh/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenPeerConfig is what the bench renders, with fixed file paths.
var goldenPeerConfig = peerConfig{
	ServerIP: serverIP, AppHTTP: portHTTP, AppSink: portSink,
	CA: "/run/l4bench/ca.pem", Suite: TLSSuite,
}

func TestPeerConfigs(t *testing.T) {
	for _, pr := range peers {
		for _, s := range []side{clientSide, serverSide} {
			name := pr.name + "-" + s.String()
			t.Run(name, func(t *testing.T) {
				c := goldenPeerConfig
				c.Ports = pr.ports
				c.Cert = "/run/l4bench/" + s.String() + ".pem"
				got, err := pr.render(s, c)
				if err != nil {
					t.Fatal(err)
				}
				golden.Check(t, filepath.Join("testdata", name+".cfg.golden"), []byte(got), *update)
			})
		}
	}
}

// TestHAProxyAcceptsConfigs has HAProxy itself check both rendered
// configurations (haproxy -c loads the certificates too), when installed.
func TestHAProxyAcceptsConfigs(t *testing.T) {
	bin, err := peers[0].lookPath()
	if err != nil {
		t.Skip("haproxy is not installed (bench/install-peers.sh)")
	}
	dir := t.TempDir()
	certs, err := writeCerts(dir, clientID, serverID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []side{clientSide, serverSide} {
		c := goldenPeerConfig
		c.Ports, c.CA, c.Cert = haproxyPorts, certs.CA, certs.Client
		if s == serverSide {
			c.Cert = certs.Server
		}
		text, err := renderHAProxy(s, c)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, s.String()+".cfg")
		writeFile(t, path, text)
		out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput()
		if err != nil {
			t.Errorf("haproxy -c, %s side: %v\n%s\n%s", s, err, out, text)
		}
	}
}

func TestPeerServicesForwardToTheApp(t *testing.T) {
	c := goldenPeerConfig
	c.Ports = stunnelPorts
	for _, s := range c.services(serverSide) {
		if !strings.HasPrefix(s.Connect, "127.0.0.1:") || !strings.HasPrefix(s.Listen, serverIP.String()+":") {
			t.Errorf("server side %s: listen %s, connect %s; want the pod IP in, loopback out", s.Name, s.Listen, s.Connect)
		}
	}
	for _, s := range c.services(clientSide) {
		if !strings.HasPrefix(s.Listen, "127.0.0.1:") || !strings.HasPrefix(s.Connect, serverIP.String()+":") {
			t.Errorf("client side %s: listen %s, connect %s; want loopback in, the server pod out", s.Name, s.Listen, s.Connect)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
