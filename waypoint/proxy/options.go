package proxy

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
)

// Defaults of Options, as istiod-lite's waypoint controller expects them.
const (
	DefaultCAAddress   = "istiod.istio-system.svc:15012"
	DefaultTrustDomain = "cluster.local"
	DefaultHBONEAddr   = ":15008"
	DefaultMetricsAddr = ":15020"
	DefaultStatusAddr  = ":15021"
	DefaultDrainGrace  = 5 * time.Second
)

// Options are the waypoint's settings: one flag each, most defaulting to an
// environment variable that the Deployment sets from the downward API.
type Options struct {
	LogLevel string

	PodName        string // POD_NAME, for logs
	PodNamespace   string // POD_NAMESPACE, half of the identity
	NodeName       string // NODE_NAME, for logs
	InstanceIP     string // INSTANCE_IP, for logs
	ServiceAccount string // SERVICE_ACCOUNT, the other half
	GatewayName    string // GATEWAY_NAME: policies targeting this Gateway apply
	TrustDomain    string // TRUST_DOMAIN

	CAAddress     string // CA_ADDRESS
	CAServerName  string
	XDSAddress    string // XDS_ADDRESS
	XDSServerName string
	TokenFile     string
	RootCertFile  string
	CertTTL       time.Duration

	HBONEAddr     string
	MetricsAddr   string
	StatusAddr    string
	DrainGrace    time.Duration
	AllowLoopback bool

	MaxRequestBody int64 // bytes; 0 means no limit
}

// newFlagSet binds o's fields to flags whose defaults come from getenv.
func newFlagSet(o *Options, getenv func(string) string) *flag.FlagSet {
	fs := flag.NewFlagSet("waypoint", flag.ContinueOnError)
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.PodName, "pod-name", env("POD_NAME", ""), "this pod's name, for logs (env POD_NAME)")
	fs.StringVar(&o.PodNamespace, "pod-namespace", env("POD_NAMESPACE", ""), "this pod's namespace: the namespace of the waypoint's identity (env POD_NAMESPACE; required)")
	fs.StringVar(&o.NodeName, "node-name", env("NODE_NAME", ""), "the node this pod runs on, for logs (env NODE_NAME)")
	fs.StringVar(&o.InstanceIP, "instance-ip", env("INSTANCE_IP", ""), "this pod's IP, for logs (env INSTANCE_IP)")
	fs.StringVar(&o.ServiceAccount, "service-account", env("SERVICE_ACCOUNT", ""), "this pod's service account: the waypoint's identity (env SERVICE_ACCOUNT; required)")
	fs.StringVar(&o.GatewayName, "gateway-name", env("GATEWAY_NAME", ""), "the Gateway this waypoint serves: AuthorizationPolicies targeting it apply (env GATEWAY_NAME; default: the service account, which the controller names after the Gateway)")
	fs.StringVar(&o.TrustDomain, "trust-domain", env("TRUST_DOMAIN", DefaultTrustDomain), "SPIFFE trust domain of the mesh; HBONE clients must belong to it (env TRUST_DOMAIN)")
	fs.StringVar(&o.CAAddress, "ca-address", env("CA_ADDRESS", DefaultCAAddress), "host:port of the certificate service (env CA_ADDRESS)")
	fs.StringVar(&o.CAServerName, "ca-server-name", "", "name the CA's certificate must carry (default: the host of --ca-address)")
	fs.StringVar(&o.XDSAddress, "xds-address", env("XDS_ADDRESS", DefaultCAAddress), "host:port of the configuration server: delta ADS for workloads, services and routes (env XDS_ADDRESS)")
	fs.StringVar(&o.XDSServerName, "xds-server-name", "", "name the configuration server's certificate must carry (default: the host of --xds-address)")
	fs.StringVar(&o.TokenFile, "token-file", meshcert.DefaultTokenFile, "service-account token (audience istio-ca) sent to the CA, read on every request")
	fs.StringVar(&o.RootCertFile, "root-cert-file", meshcert.DefaultRootCertFile, "PEM mesh roots (ConfigMap istio-ca-root-cert)")
	fs.DurationVar(&o.CertTTL, "cert-ttl", meshcert.DefaultTTL, "lifetime of the certificate asked for; renewed at half-life")
	fs.StringVar(&o.HBONEAddr, "hbone-addr", DefaultHBONEAddr, "HBONE (mTLS HTTP/2 CONNECT) listener")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", DefaultMetricsAddr, "Prometheus listener: /metrics and /stats/prometheus")
	fs.StringVar(&o.StatusAddr, "status-addr", DefaultStatusAddr, "readiness listener: /healthz/ready")
	fs.DurationVar(&o.DrainGrace, "drain-grace", DefaultDrainGrace, "on SIGTERM, how long open tunnels may finish before they are cut")
	fs.BoolVar(&o.AllowLoopback, "allow-loopback-destinations", false, "let tunnels and plain-TCP upstreams reach this pod's own loopback addresses (tests and local runs only)")
	fs.Int64Var(&o.MaxRequestBody, "max-request-body-bytes", DefaultMaxRequestBody, "largest HTTP request body accepted (413 beyond); 0: no limit")
	return fs
}

// Validate reports settings that cannot work, every one of them.
func (o Options) Validate() error {
	var errs []error
	if o.PodNamespace == "" {
		errs = append(errs, errors.New("--pod-namespace (env POD_NAMESPACE) is required: it is the namespace of the waypoint's identity"))
	}
	if o.ServiceAccount == "" {
		errs = append(errs, errors.New("--service-account (env SERVICE_ACCOUNT) is required: it is the waypoint's identity"))
	}
	if o.PodNamespace != "" && o.ServiceAccount != "" {
		if _, err := hbone.ParseIdentity(o.identity().String()); err != nil {
			errs = append(errs, fmt.Errorf("identity from --trust-domain, --pod-namespace and --service-account: %w", err))
		}
	}
	if o.TrustDomain == "" || strings.ContainsAny(o.TrustDomain, "/: ") {
		errs = append(errs, fmt.Errorf("--trust-domain %q: want a name without '/', ':' or spaces", o.TrustDomain))
	}
	for _, a := range []struct{ flag, addr string }{{"ca-address", o.CAAddress}, {"xds-address", o.XDSAddress}} {
		host, port, err := net.SplitHostPort(a.addr)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil || host == "" {
			errs = append(errs, fmt.Errorf("--%s %q: want host:port", a.flag, a.addr))
		}
	}
	for _, a := range []struct{ flag, addr string }{{"hbone-addr", o.HBONEAddr}, {"metrics-addr", o.MetricsAddr}, {"status-addr", o.StatusAddr}} {
		_, port, err := net.SplitHostPort(a.addr)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: want [host]:port", a.flag, a.addr))
		}
	}
	if o.InstanceIP != "" {
		if _, err := netip.ParseAddr(o.InstanceIP); err != nil {
			errs = append(errs, fmt.Errorf("--instance-ip %q: not an IP address", o.InstanceIP))
		}
	}
	if o.TokenFile == "" || o.RootCertFile == "" {
		errs = append(errs, errors.New("--token-file and --root-cert-file must not be empty"))
	}
	if o.CertTTL < time.Minute {
		errs = append(errs, fmt.Errorf("--cert-ttl %v: want at least 1m", o.CertTTL))
	}
	if o.MaxRequestBody < 0 {
		errs = append(errs, fmt.Errorf("--max-request-body-bytes %d must not be negative (0: no limit)", o.MaxRequestBody))
	}
	if o.DrainGrace < 0 {
		errs = append(errs, fmt.Errorf("--drain-grace %v must not be negative", o.DrainGrace))
	}
	if _, err := o.level(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// limits are the data path's limits from the options.
func (o Options) limits() Limits {
	l := Limits{MaxRequestBody: o.MaxRequestBody}
	if l.MaxRequestBody == 0 {
		l.MaxRequestBody = -1 // Limits: negative is no limit
	}
	return l
}

// identity is the waypoint's own SPIFFE identity.
func (o Options) identity() hbone.Identity {
	return hbone.Identity{TrustDomain: o.TrustDomain, Namespace: o.PodNamespace, ServiceAccount: o.ServiceAccount}
}

func (o Options) level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	return l, nil
}

// parseOptions parses args over the environment's defaults. Usage mistakes
// print the usage to stderr and wrap ErrUsage; -h returns flag.ErrHelp.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (Options, error) {
	var o Options
	fs := newFlagSet(&o, getenv)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if err := o.Validate(); err != nil {
		fs.Usage()
		return o, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return o, nil
}

// gateway is the name of the waypoint's Gateway: GatewayName, else the
// service account (the waypoint controller names both after the Gateway).
func (o Options) gateway() string {
	if o.GatewayName != "" {
		return o.GatewayName
	}
	return o.ServiceAccount
}
