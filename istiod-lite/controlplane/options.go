package controlplane

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// Options are istiod-lite's settings, one flag each. The zero value is not
// meant to be used; NewFlagSet fills the defaults.
type Options struct {
	Kubeconfig     string
	Namespace      string
	TrustDomain    string
	ClusterID      string
	DomainSuffix   string
	GRPCAddr       string
	MonitoringAddr string
	ReadyAddr      string
	CertTTL        time.Duration
	MaxCertTTL     time.Duration
	Audiences      string
	ServiceName    string
	WaypointImage  string
	LeaderElect    bool
	LeaseName      string
	Debounce       time.Duration
	SyncTimeout    time.Duration
	ShutdownDrain  time.Duration
	LogLevel       string
	LogFormat      string
}

// NewFlagSet returns the flag set of istiod-lite, writing its usage to w's
// owner on error.
func NewFlagSet(o *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("istiod-lite", flag.ContinueOnError)
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "istio-system"
	}
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster config")
	fs.StringVar(&o.Namespace, "namespace", ns, "namespace of the control plane: CA Secrets, leader Lease (default $POD_NAMESPACE or istio-system)")
	fs.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	fs.StringVar(&o.ClusterID, "cluster-id", "Kubernetes", "cluster name in workload uids (Istio's default)")
	fs.StringVar(&o.DomainSuffix, "domain-suffix", "cluster.local", "cluster DNS domain")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", ":15012", "TLS gRPC listener: delta ADS and IstioCertificateService")
	fs.StringVar(&o.MonitoringAddr, "monitoring-addr", ":15014", "HTTP listener: /metrics and /debug/syncz")
	fs.StringVar(&o.ReadyAddr, "ready-addr", ":8080", "HTTP listener: /ready and /healthz")
	fs.DurationVar(&o.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of workload certificates when the request asks for none")
	fs.DurationVar(&o.MaxCertTTL, "max-cert-ttl", 90*24*time.Hour, "longest workload certificate lifetime a request may ask for")
	fs.StringVar(&o.Audiences, "token-audiences", "istio-ca", "comma-separated service-account token audiences accepted")
	fs.StringVar(&o.ServiceName, "service-name", "istiod", "name of the control plane's Service (DNS names of the serving certificate)")
	fs.StringVar(&o.WaypointImage, "waypoint-image", "localhost/ambientlite/waypoint:dev", "image of the waypoint Deployments created for Gateways of class istio-waypoint")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect one replica to write status, waypoint objects and root ConfigMaps (every replica serves xDS and certificates)")
	fs.StringVar(&o.LeaseName, "lease-name", "istiod-lite", "name of the leader election Lease in --namespace")
	fs.DurationVar(&o.Debounce, "debounce", 100*time.Millisecond, "quiet period before a config push")
	fs.DurationVar(&o.SyncTimeout, "sync-timeout", 2*time.Minute, "how long to wait for the informers' first list before giving up")
	fs.DurationVar(&o.ShutdownDrain, "shutdown-drain", 5*time.Second, "on SIGTERM, how long to keep serving while not ready before closing connections")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "json", "json or text")
	return fs
}

// Validate reports settings that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace must not be empty"))
	}
	if o.CertTTL <= 0 || o.MaxCertTTL < o.CertTTL {
		errs = append(errs, fmt.Errorf("--cert-ttl (%v) must be positive and not above --max-cert-ttl (%v)", o.CertTTL, o.MaxCertTTL))
	}
	if len(o.audiences()) == 0 {
		errs = append(errs, errors.New("--token-audiences must name at least one audience"))
	}
	if _, err := o.level(); err != nil {
		errs = append(errs, err)
	}
	if o.LogFormat != "json" && o.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format %q: want json or text", o.LogFormat))
	}
	if o.Debounce < 0 {
		errs = append(errs, fmt.Errorf("--debounce %v must not be negative", o.Debounce))
	}
	return errors.Join(errs...)
}

func (o Options) audiences() []string {
	var out []string
	for _, a := range strings.Split(o.Audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func (o Options) level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	return l, nil
}

// dnsNames are the names the serving certificate carries: the Service's
// short and full names, as Istio's istiod certificate has.
func (o Options) dnsNames() []string {
	svc := o.ServiceName + "." + o.Namespace
	return []string{svc + ".svc", svc + ".svc." + o.DomainSuffix, o.ServiceName, svc}
}

// xdsAddress is where proxies reach this control plane: the Service's
// cluster DNS name, port of --grpc-addr.
func (o Options) xdsAddress() string {
	_, port, err := net.SplitHostPort(o.GRPCAddr)
	if err != nil || port == "" {
		port = "15012"
	}
	return o.ServiceName + "." + o.Namespace + ".svc:" + port
}
