package l7bench

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unknown command", []string{"serve"}},
		{"unknown flag", []string{"-nope"}},
		{"unknown path", []string{"-paths", "direct,envoy"}},
		{"zero duration", []string{"-saturation-duration", "0s"}},
		{"bad log level", []string{"-waypoint-log-level", "loud"}},
		{"argument", []string{"-qps", "10", "extra"}},
		{"load: unknown mode", []string{"load", "-mode", "udp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), tc.args, strings.NewReader(""), &stdout, &stderr)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("err = %v, want ErrUsage", err)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %q, want nothing", stdout.String())
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{LatencyDuration: time.Second, SaturationDuration: time.Second, QPS: 1000, Connections: 16,
		Payload: 1024, Paths: allPaths, WaypointLogLevel: "info"}
	if err := ok.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	bad := ok
	bad.ProfileDir = "/nonexistent/l7bench"
	if err := bad.Validate(); err == nil {
		t.Error("a missing profile directory is accepted")
	}
}

// TestCapturedPorts: the direct path and the peers' hops bypass capture
// (else ztunnel would carry them), the mesh's ports do not, and capture
// accepts every pod's configuration.
func TestCapturedPorts(t *testing.T) {
	for _, p := range []uint16{portDirect, portHAProxy, portHAProxyTLS} {
		if !slices.Contains(clientExcluded, p) {
			t.Errorf("client pod: port %d is captured", p)
		}
	}
	for _, p := range []uint16{portDirect, portBackendTLS} {
		if !slices.Contains(serverExcluded, p) {
			t.Errorf("server pods: port %d is captured", p)
		}
	}
	for _, p := range []uint16{portApp, portService} {
		if slices.Contains(clientExcluded, p) || slices.Contains(serverExcluded, p) {
			t.Errorf("port %d (the mesh's) is left out of capture", p)
		}
	}
	for _, s := range pods() {
		if s.capture == nil {
			continue
		}
		if err := s.capture.Validate(); err != nil {
			t.Errorf("pod %s: %v", s.name, err)
		}
	}
}
