package l4bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambientlite/mesh/bench/profiling"
	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/proxy"
)

// The "ztunnel" role is one node's ztunnel reduced to its data path:
// ztunnel/proxy serving the node's pods (one or more -pod), whose
// namespaces it opens its listeners in (15001, 15006, 15008) from the host
// namespace, as the daemon does. The certificate of the pods' one identity
// comes from a file; metrics go to a registry as in the daemon, the access
// log to a file. Where connections go and who may connect is either
//
//   - static (-peer-ip, -peer-identity, -allow: l4bench's two pods), or
//   - the mesh's configuration from an xDS server (-xds-address), through
//     the XDSResolverFunc the binary passes to RunZtunnel (l7bench's, fed by
//     delta ADS). l4bench's own binary has none: it does not link an xDS
//     client, so that its ztunnels' memory is not inflated by one.
//
// It prints "ready" once the pods are served (and, from xDS, known), then
// reads commands on stdin (profiling.ServeCommands). It exits on SIGTERM or
// when stdin closes.

// XDSConfig is what the ztunnel role knows of its xDS server and pods.
type XDSConfig struct {
	// Address, ServerName, RootCertFile and TokenFile are the -xds-address,
	// -xds-server-name, -ca and -token-file flags.
	Address, ServerName, RootCertFile, TokenFile string
	// Node is the -node flag.
	Node string
	// Pods are the pods served (their addresses, identity, namespaces).
	Pods   []proxy.Pod
	Logger *slog.Logger
}

// XDSResolverFunc follows the mesh's configuration from cfg's server until
// ctx ends, and returns a resolver answering from it once the pods are
// known there.
type XDSResolverFunc func(ctx context.Context, cfg XDSConfig) (proxy.Resolver, error)

// RunZtunnel is the ztunnel role (see above) of a binary that resolves from
// xDS with xds; RunRole runs it with none.
func RunZtunnel(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, xds XDSResolverFunc) error {
	return runZtunnel(ctx, args, stdin, stdout, stderr, xds)
}

func runZtunnel(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, xds XDSResolverFunc) error {
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := fs.String("node", "", "the node's name (the profile file prefix: ztunnel-<node>-<phase>.pprof)")
	var pods podFlags
	fs.Var(&pods, "pod", "a pod served, NAME,IP,NETNS (capture already applied in NETNS); repeatable")
	id := fs.String("identity", "", "the pods' SPIFFE identity")
	cert := fs.String("cert", "", "PEM file: the pods' certificate and key")
	ca := fs.String("ca", "", "PEM file: the mesh root (also verifies the xDS server)")
	peerIP := fs.String("peer-ip", "", "static: the only destination, reached over HBONE on its :15008")
	peerID := fs.String("peer-identity", "", "static: the identity the peer must present")
	allow := fs.String("allow", "", "static: the only identity let in (plaintext is refused, as with STRICT)")
	xdsAddr := fs.String("xds-address", "", "from the mesh: the delta ADS server, host:port")
	xdsName := fs.String("xds-server-name", "", "the name the xDS server's certificate must carry (default: the host of -xds-address)")
	tokenFile := fs.String("token-file", "", "the token sent to the xDS server")
	accessLog := fs.String("access-log", "", "access log file (default: discard)")
	profileDir := fs.String("profile-dir", "", "directory for CPU profiles asked for on stdin")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	self, err := hbone.ParseIdentity(*id)
	if err != nil {
		return fmt.Errorf("%w: -identity: %w", ErrUsage, err)
	}
	if len(pods) == 0 {
		return fmt.Errorf("%w: no -pod", ErrUsage)
	}
	certs, err := loadCertificates(self, *cert, *ca)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	served := make([]proxy.Pod, len(pods))
	for i, pod := range pods {
		served[i] = proxy.Pod{UID: pod.name, Name: pod.name, Namespace: self.Namespace, Identity: self,
			IPs: []netip.Addr{pod.ip}, NetNS: pod.netns}
	}
	var resolver proxy.Resolver
	switch {
	case *xdsAddr == "":
		r := staticResolver{self: self}
		if r.peer, err = netip.ParseAddr(*peerIP); err != nil {
			return fmt.Errorf("%w: -peer-ip: %w", ErrUsage, err)
		}
		if r.peerID, err = hbone.ParseIdentity(*peerID); err != nil {
			return fmt.Errorf("%w: -peer-identity: %w", ErrUsage, err)
		}
		if r.allow, err = hbone.ParseIdentity(*allow); err != nil {
			return fmt.Errorf("%w: -allow: %w", ErrUsage, err)
		}
		resolver = r
	case xds == nil:
		return fmt.Errorf("%w: -xds-address: this binary's ztunnel has static routes only", ErrUsage)
	default:
		resolver, err = xds(ctx, XDSConfig{Address: *xdsAddr, ServerName: *xdsName, RootCertFile: *ca, TokenFile: *tokenFile,
			Node: *node, Pods: served, Logger: logger.With("component", "xds")})
		if err != nil {
			return err
		}
	}

	access := slog.New(slog.DiscardHandler)
	if *accessLog != "" {
		f, err := os.Create(*accessLog)
		if err != nil {
			return err
		}
		defer f.Close()
		access = slog.New(slog.NewJSONHandler(f, nil))
	}
	metrics, err := proxy.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return err
	}
	p, err := proxy.New(proxy.Config{Resolver: resolver, Certificates: certs, Metrics: metrics, Logger: logger, AccessLog: access})
	if err != nil {
		return err
	}
	defer p.Close()
	for _, pod := range served {
		if err := p.AddPod(ctx, pod); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, "ready")
	return profiling.ServeCommands(ctx, stdin, *profileDir, "ztunnel-"+*node)
}

// podFlags are the -pod flags: NAME,IP,NETNS each.
type podFlags []podFlag

type podFlag struct {
	name  string
	ip    netip.Addr
	netns string
}

func (p *podFlags) String() string {
	var s []string
	for _, f := range *p {
		s = append(s, f.name+","+f.ip.String()+","+f.netns)
	}
	return strings.Join(s, " ")
}

func (p *podFlags) Set(v string) error {
	parts := strings.Split(v, ",")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return fmt.Errorf("want NAME,IP,NETNS, got %q", v)
	}
	ip, err := netip.ParseAddr(parts[1])
	if err != nil {
		return err
	}
	*p = append(*p, podFlag{name: parts[0], ip: ip, netns: parts[2]})
	return nil
}

// fileCertificates is the pod's one certificate, loaded from a file.
type fileCertificates struct {
	id    hbone.Identity
	cert  *tls.Certificate
	roots *x509.CertPool
}

func loadCertificates(id hbone.Identity, certFile, caFile string) (*fileCertificates, error) {
	cert, err := tls.LoadX509KeyPair(certFile, certFile)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certFile, err)
	}
	pemRoots, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemRoots) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return &fileCertificates{id: id, cert: &cert, roots: roots}, nil
}

func (c *fileCertificates) Certificate(_ context.Context, id hbone.Identity) (*tls.Certificate, error) {
	if id != c.id {
		return nil, errors.New("no certificate for " + id.String())
	}
	return c.cert, nil
}

func (c *fileCertificates) Roots() *x509.CertPool { return c.roots }
