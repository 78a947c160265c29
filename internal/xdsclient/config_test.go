package xdsclient

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "address only", cfg: Config{Address: "istiod.istio-system.svc:15012"}},
		{name: "no address", cfg: Config{}, wantErr: "want host:port"},
		{name: "no port", cfg: Config{Address: "istiod"}, wantErr: "want host:port"},
		{name: "bad port", cfg: Config{Address: "istiod:http"}, wantErr: "want host:port"},
		{name: "negative backoff", cfg: Config{Address: "a:1", Backoff: Backoff{Initial: -1}}, wantErr: "negative"},
		{name: "max below initial", cfg: Config{Address: "a:1", Backoff: Backoff{Initial: time.Second, Max: time.Millisecond}}, wantErr: "less than"},
		{name: "jitter 1", cfg: Config{Address: "a:1", Backoff: Backoff{Jitter: 1}}, wantErr: "Jitter"},
		{name: "invalid ip", cfg: Config{Address: "a:1", Node: Node{IPs: []netip.Addr{{}}}}, wantErr: "invalid address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	got := Config{Address: "istiod.istio-system.svc:15012"}.withDefaults()
	got.Logger = nil
	want := Config{
		Address:          "istiod.istio-system.svc:15012",
		ServerName:       "istiod.istio-system.svc",
		RootCertFile:     DefaultRootCertFile,
		ClusterID:        DefaultClusterID,
		MaxMessageSize:   DefaultMaxMessageSize,
		Keepalive:        DefaultKeepalive,
		KeepaliveTimeout: DefaultKeepaliveTimeout,
		Backoff:          Backoff{Initial: 100 * time.Millisecond, Max: 15 * time.Second, Jitter: 0.2, ResetAfter: 10 * time.Second},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
}

// The node is what ztunnel sends (src/xds/client.rs, Config::node).
func TestNodeProto(t *testing.T) {
	n := Node{
		IPs:          []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		PodName:      "ztunnel-abcde",
		PodNamespace: "istio-system",
		NodeName:     "node-a",
		Metadata:     map[string]string{"CLUSTER_ID": "Kubernetes", "NAME": "ignored"},
	}
	p := n.Proto()
	if got := p.GetId(); got != testNodeID {
		t.Errorf("id %q, want %q", got, testNodeID)
	}
	got := map[string]string{}
	for k, v := range p.GetMetadata().GetFields() {
		got[k] = v.GetStringValue()
	}
	want := map[string]string{
		"NAME": "ztunnel-abcde", "NAMESPACE": "istio-system", "INSTANCE_IPS": "10.0.0.1,fd00::1",
		"NODE_NAME": "node-a", "CLUSTER_ID": "Kubernetes",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("metadata (-want +got):\n%s", d)
	}
	wp := Node{Type: "waypoint", IPs: n.IPs[:1], PodName: "waypoint-1", PodNamespace: "shop", ClusterDomain: "example.org"}
	if got, want := wp.ID(), "waypoint~10.0.0.1~waypoint-1.shop~shop.svc.example.org"; got != want {
		t.Errorf("waypoint id %q, want %q", got, want)
	}
}

func TestFileToken(t *testing.T) {
	f := filepath.Join(t.TempDir(), "istio-token")
	src := FileToken(f)
	if _, err := src(t.Context()); err == nil {
		t.Error("a missing token file gave a token")
	}
	if err := os.WriteFile(f, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := src(t.Context()); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: %v", err)
	}
	for _, tok := range []string{"first", "rotated"} {
		if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := src(t.Context()); err != nil || got != tok {
			t.Errorf("token = %q, %v; want %q (read on every call)", got, err, tok)
		}
	}
}
