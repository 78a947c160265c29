package proxy

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// controllerEnv is what istiod-lite's waypoint controller sets on the
// container.
var controllerEnv = map[string]string{
	"POD_NAME":        "waypoint-7d9f-abcde",
	"POD_NAMESPACE":   "shop",
	"NODE_NAME":       "node-a",
	"INSTANCE_IP":     "10.244.0.12",
	"SERVICE_ACCOUNT": "waypoint",
	"TRUST_DOMAIN":    "cluster.local",
	"CA_ADDRESS":      "istiod.istio-system.svc:15012",
	"XDS_ADDRESS":     "istiod.istio-system.svc:15012",
	"GATEWAY_NAME":    "waypoint",
}

func TestParseOptions(t *testing.T) {
	fromEnv := Options{
		LogLevel:       "info",
		PodName:        "waypoint-7d9f-abcde",
		PodNamespace:   "shop",
		NodeName:       "node-a",
		InstanceIP:     "10.244.0.12",
		ServiceAccount: "waypoint",
		GatewayName:    "waypoint",
		TrustDomain:    "cluster.local",
		CAAddress:      "istiod.istio-system.svc:15012",
		XDSAddress:     "istiod.istio-system.svc:15012",
		TokenFile:      "/var/run/secrets/tokens/istio-token",
		RootCertFile:   "/var/run/secrets/istio/root-cert.pem",
		CertTTL:        24 * time.Hour,
		HBONEAddr:      ":15008",
		MetricsAddr:    ":15020",
		StatusAddr:     ":15021",
		DrainGrace:     5 * time.Second,
		MaxRequestBody: DefaultMaxRequestBody,
	}
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		want    func(*Options) // applied to fromEnv
		wantErr string
	}{
		{name: "the controller's environment", env: controllerEnv, want: func(*Options) {}},
		{
			name: "defaults without TRUST_DOMAIN and addresses",
			env:  map[string]string{"POD_NAMESPACE": "shop", "SERVICE_ACCOUNT": "waypoint"},
			want: func(o *Options) { o.PodName, o.NodeName, o.InstanceIP, o.GatewayName = "", "", "", "" },
		},
		{
			name: "flags override the environment",
			env:  controllerEnv,
			args: []string{"--pod-namespace=other", "--trust-domain=example.org", "--ca-address=10.0.0.1:15012",
				"--log-level=debug", "--drain-grace=30s", "--hbone-addr=127.0.0.1:15008"},
			want: func(o *Options) {
				o.PodNamespace, o.TrustDomain, o.CAAddress = "other", "example.org", "10.0.0.1:15012"
				o.LogLevel, o.DrainGrace, o.HBONEAddr = "debug", 30*time.Second, "127.0.0.1:15008"
			},
		},
		{
			name: "configuration server and body limit",
			env:  controllerEnv,
			args: []string{"--xds-address=10.0.0.2:15012", "--xds-server-name=istiod.istio-system.svc", "--max-request-body-bytes=0"},
			want: func(o *Options) {
				o.XDSAddress, o.XDSServerName, o.MaxRequestBody = "10.0.0.2:15012", "istiod.istio-system.svc", 0
			},
		},
		{name: "bad xDS address", env: controllerEnv, args: []string{"--xds-address=istiod"}, wantErr: `--xds-address "istiod": want host:port`},
		{name: "negative body limit", env: controllerEnv, args: []string{"--max-request-body-bytes=-1"}, wantErr: "--max-request-body-bytes"},
		{name: "no namespace", env: map[string]string{"SERVICE_ACCOUNT": "waypoint"}, wantErr: "--pod-namespace (env POD_NAMESPACE) is required"},
		{name: "no service account", env: map[string]string{"POD_NAMESPACE": "shop"}, wantErr: "--service-account (env SERVICE_ACCOUNT) is required"},
		{name: "unknown flag", env: controllerEnv, args: []string{"--bogus"}, wantErr: "flag provided but not defined: -bogus"},
		{name: "extra argument", env: controllerEnv, args: []string{"serve"}, wantErr: "unexpected arguments"},
		{name: "bad log level", env: controllerEnv, args: []string{"--log-level=loud"}, wantErr: `--log-level "loud"`},
		{name: "bad CA address", env: controllerEnv, args: []string{"--ca-address=istiod"}, wantErr: `--ca-address "istiod": want host:port`},
		{name: "bad listener", env: controllerEnv, args: []string{"--status-addr=15021"}, wantErr: `--status-addr "15021"`},
		{name: "negative grace", env: controllerEnv, args: []string{"--drain-grace=-1s"}, wantErr: "--drain-grace"},
		{name: "slash in namespace", env: controllerEnv, args: []string{"--pod-namespace=a/b"}, wantErr: "identity"},
		{name: "bad instance IP", env: map[string]string{"POD_NAMESPACE": "shop", "SERVICE_ACCOUNT": "waypoint", "INSTANCE_IP": "pod"}, wantErr: "--instance-ip"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseOptions(c.args, func(k string) string { return c.env[k] }, &stderr)
			if c.wantErr != "" {
				if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want ErrUsage with %q", err, c.wantErr)
				}
				if !strings.Contains(stderr.String(), "-service-account") {
					t.Errorf("usage not printed; stderr:\n%s", stderr.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := fromEnv
			c.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOptionsLimits(t *testing.T) {
	if got := (Options{MaxRequestBody: 0}).limits().MaxRequestBody; got >= 0 {
		t.Errorf("--max-request-body-bytes=0 gives limit %d, want none (negative)", got)
	}
	if got := (Options{MaxRequestBody: 10}).limits().MaxRequestBody; got != 10 {
		t.Errorf("limit %d, want 10", got)
	}
}

func TestRunUsage(t *testing.T) {
	var stderr bytes.Buffer
	err := Run(context.Background(), []string{"--drain-grace=soon"}, &bytes.Buffer{}, &stderr)
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("Run with a bad flag: %v, want ErrUsage", err)
	}
	if !strings.Contains(stderr.String(), "Usage of waypoint") {
		t.Errorf("no usage on stderr:\n%s", stderr.String())
	}
	if err := Run(context.Background(), []string{"-h"}, &bytes.Buffer{}, &stderr); err != nil {
		t.Errorf("Run -h: %v, want nil", err)
	}
}
