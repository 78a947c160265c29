package waypoint

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// Defaults of Config. The resources are Istio's global.waypoint.resources.
const (
	DefaultImage           = "localhost/ambientlite/waypoint:dev"
	DefaultImagePullPolicy = corev1.PullIfNotPresent
	DefaultXDSAddress      = "istiod.istio-system.svc:15012"
	DefaultTrustDomain     = "cluster.local"
	DefaultDomainSuffix    = "cluster.local"
	DefaultLogLevel        = "info"
	DefaultCPURequest      = "100m"
	DefaultMemoryRequest   = "128Mi"
	DefaultCPULimit        = "2"
	DefaultMemoryLimit     = "1Gi"
)

// DefaultResources are the waypoint container's resources when
// Config.Resources is nil: requests 100m CPU and 128Mi memory, limits 2 CPUs
// and 1Gi memory.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(DefaultCPURequest),
			corev1.ResourceMemory: resource.MustParse(DefaultMemoryRequest),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(DefaultCPULimit),
			corev1.ResourceMemory: resource.MustParse(DefaultMemoryLimit),
		},
	}
}

// Config is what New needs. The clients and informer factories are
// required; every other field has a default used when it is the zero value.
type Config struct {
	// Kube writes ServiceAccounts, Services and Deployments.
	Kube kubernetes.Interface
	// Gateway writes Gateway and GatewayClass status and creates the
	// GatewayClass.
	Gateway gatewayclient.Interface
	// KubeInformers and GatewayInformers are shared factories. New registers
	// informers for Deployments, Services and ServiceAccounts (all
	// namespaces) and for Gateways and GatewayClasses with them; the caller
	// starts the factories, after New, for as long as it runs the controller.
	KubeInformers    informers.SharedInformerFactory
	GatewayInformers gatewayinformers.SharedInformerFactory

	// Image of the waypoint container. Default DefaultImage.
	Image string
	// ImagePullPolicy of the waypoint container. Default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// XDSAddress is where the waypoint gets its configuration (env
	// XDS_ADDRESS), host:port. Default istiod.istio-system.svc:15012.
	XDSAddress string
	// CAAddress is where the waypoint gets its certificate (env CA_ADDRESS),
	// host:port. Default XDSAddress.
	CAAddress string
	// TrustDomain of the mesh (env TRUST_DOMAIN). Default cluster.local.
	TrustDomain string
	// DomainSuffix is the cluster DNS domain, used in the hostname address
	// reported on the Gateway (<name>.<ns>.svc.<suffix>). Default
	// cluster.local.
	DomainSuffix string
	// LogLevel of the waypoint (--log-level): debug, info, warn or error.
	// Default info.
	LogLevel string
	// Resources of the waypoint container. nil means DefaultResources(); a
	// non-nil empty value means none.
	Resources *corev1.ResourceRequirements

	// Logger receives the controller's logs. Default: discarded.
	Logger *slog.Logger
	// Registerer, if set, gets the controller's metrics.
	Registerer prometheus.Registerer
	// Now is the clock of condition transition times. Default time.Now.
	Now func() time.Time
}

var logLevels = []string{"debug", "info", "warn", "error"}

// Validate reports settings that cannot work. Zero values are fine (they
// mean the defaults), except for the clients and factories.
func (c Config) Validate() error {
	var errs []error
	if c.Kube == nil {
		errs = append(errs, errors.New("Kube client is required"))
	}
	if c.Gateway == nil {
		errs = append(errs, errors.New("Gateway client is required"))
	}
	if c.KubeInformers == nil {
		errs = append(errs, errors.New("KubeInformers factory is required"))
	}
	if c.GatewayInformers == nil {
		errs = append(errs, errors.New("GatewayInformers factory is required"))
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("ImagePullPolicy %q: want Always, IfNotPresent or Never", c.ImagePullPolicy))
	}
	if c.Image != "" && strings.ContainsAny(c.Image, " \t\n") {
		errs = append(errs, fmt.Errorf("Image %q contains white space", c.Image))
	}
	for name, addr := range map[string]string{"XDSAddress": c.XDSAddress, "CAAddress": c.CAAddress} {
		if addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil || host == "" {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, addr))
		}
	}
	if c.TrustDomain != "" && strings.ContainsAny(c.TrustDomain, "/: ") {
		errs = append(errs, fmt.Errorf("TrustDomain %q: must not contain '/', ':' or spaces", c.TrustDomain))
	}
	if c.DomainSuffix != "" && (strings.HasPrefix(c.DomainSuffix, ".") || strings.HasSuffix(c.DomainSuffix, ".")) {
		errs = append(errs, fmt.Errorf("DomainSuffix %q: no leading or trailing dot", c.DomainSuffix))
	}
	if c.LogLevel != "" && !slices.Contains(logLevels, c.LogLevel) {
		errs = append(errs, fmt.Errorf("LogLevel %q: want one of %s", c.LogLevel, strings.Join(logLevels, ", ")))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero value replaced by its default.
func (c Config) withDefaults() Config {
	if c.Image == "" {
		c.Image = DefaultImage
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = DefaultImagePullPolicy
	}
	if c.XDSAddress == "" {
		c.XDSAddress = DefaultXDSAddress
	}
	if c.CAAddress == "" {
		c.CAAddress = c.XDSAddress
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.DomainSuffix == "" {
		c.DomainSuffix = DefaultDomainSuffix
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.Resources == nil {
		r := DefaultResources()
		c.Resources = &r
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
