package l4bench

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unknown command", []string{"serve"}},
		{"unknown flag", []string{"-nope"}},
		{"unknown path", []string{"-paths", "direct,envoy"}},
		{"zero duration", []string{"-duration", "0s"}},
		{"argument", []string{"-qps", "10", "extra"}},
		{"load: unknown mode", []string{"load", "-mode", "udp"}},
		{"ztunnel: bad pod", []string{"ztunnel", "-pod", "client,x,/proc/1/ns/net"}},
		{"ztunnel: no pod", []string{"ztunnel", "-identity", "spiffe://cluster.local/ns/a/sa/b"}},
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
	ok := Config{LatencyDuration: time.Second, ConnDuration: time.Second, ThroughputDuration: time.Second,
		QPS: 1000, Connections: 16, ConnConcurrency: 8, Payload: 1024, Paths: allPaths}
	if err := ok.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	bad := ok
	bad.ProfileDir = "/nonexistent/l4bench"
	if err := bad.Validate(); err == nil {
		t.Error("a missing profile directory is accepted")
	}
}

// TestExcludedPorts checks that the direct path and both peers' TLS hops
// bypass capture (else ztunnel would carry them), that the ztunnel path's
// ports do not, and that capture accepts the resulting configurations.
func TestExcludedPorts(t *testing.T) {
	ex := excludedPorts()
	for _, p := range []uint16{portDirectHTTP, portDirectSink, haproxyPorts.ServerHTTP, haproxyPorts.ServerSink, stunnelPorts.ServerHTTP, stunnelPorts.ServerSink} {
		if !slices.Contains(ex, p) {
			t.Errorf("port %d is captured", p)
		}
	}
	for _, p := range []uint16{portHTTP, portSink} {
		if slices.Contains(ex, p) {
			t.Errorf("port %d (ztunnel's path) is excluded from capture", p)
		}
	}
	for _, c := range []capture.Config{{ExcludeOutboundPorts: ex}, {ExcludeInboundPorts: ex}} {
		if err := c.Validate(); err != nil {
			t.Error(err)
		}
	}
}
