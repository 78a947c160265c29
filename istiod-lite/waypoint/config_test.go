package waypoint

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

func validConfig() Config {
	kube, gw := kubefake.NewClientset(), gatewayfake.NewSimpleClientset()
	return Config{
		Kube: kube, Gateway: gw,
		KubeInformers:    informers.NewSharedInformerFactory(kube, 0),
		GatewayInformers: gatewayinformers.NewSharedInformerFactory(gw, 0),
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"everything set", func(c *Config) {
			c.Image, c.ImagePullPolicy, c.XDSAddress, c.CAAddress = "r/w:1", corev1.PullNever, "x.y:15012", "[fd00::1]:15012"
			c.TrustDomain, c.DomainSuffix, c.LogLevel = "example.org", "corp.example", "debug"
		}, ""},
		{"no clients", func(c *Config) { *c = Config{} }, "Kube client is required"},
		{"pull policy", func(c *Config) { c.ImagePullPolicy = "Sometimes" }, "ImagePullPolicy"},
		{"xds address without port", func(c *Config) { c.XDSAddress = "istiod" }, "XDSAddress"},
		{"ca address bad port", func(c *Config) { c.CAAddress = "ca:http" }, "CAAddress"},
		{"trust domain", func(c *Config) { c.TrustDomain = "spiffe://x" }, "TrustDomain"},
		{"domain suffix", func(c *Config) { c.DomainSuffix = ".cluster.local" }, "DomainSuffix"},
		{"log level", func(c *Config) { c.LogLevel = "verbose" }, "LogLevel"},
		{"image", func(c *Config) { c.Image = "a b" }, "Image"},
	}
	for _, tt := range tests {
		c := validConfig()
		tt.modify(&c)
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one about %s", tt.name, err, tt.want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Image != DefaultImage || c.ImagePullPolicy != corev1.PullIfNotPresent || c.XDSAddress != DefaultXDSAddress ||
		c.CAAddress != DefaultXDSAddress || c.TrustDomain != "cluster.local" || c.DomainSuffix != "cluster.local" ||
		c.LogLevel != "info" || c.Logger == nil || c.Now == nil {
		t.Errorf("defaults: %+v", c)
	}
	r := c.Resources
	if r.Requests.Cpu().String() != "100m" || r.Requests.Memory().String() != "128Mi" ||
		r.Limits.Cpu().String() != "2" || r.Limits.Memory().String() != "1Gi" {
		t.Errorf("resources %v", r)
	}
	if c := (Config{XDSAddress: "a:1"}).withDefaults(); c.CAAddress != "a:1" {
		t.Errorf("CAAddress defaults to XDSAddress, got %q", c.CAAddress)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted a Config without clients")
	}
}
