package l4bench

import (
	"bufio"
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
	"path/filepath"
	"runtime/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/proxy"
)

// The "ztunnel" role is one node's ztunnel reduced to its data path:
// ztunnel/proxy serving one pod, whose namespace it opens its listeners in
// (15001, 15006, 15008) from the host namespace, as the daemon does. Routes
// and policy are static (staticResolver), the certificate comes from a file;
// metrics go to a registry as in the daemon, the access log to a file. It
// prints "ready" once the pod is served, then reads commands on stdin:
// "profile NAME" starts a CPU profile (written to -profile-dir), "stop" ends
// it. It exits on SIGTERM or when stdin closes.

func runZtunnel(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.SetOutput(stderr)
	netns := fs.String("netns", "", "the pod's network namespace (capture already applied)")
	pod := fs.String("pod", "", "the pod's name (also the profile file prefix)")
	ip := fs.String("ip", "", "the pod's IP")
	id := fs.String("identity", "", "the pod's SPIFFE identity")
	cert := fs.String("cert", "", "PEM file: the pod's certificate and key")
	ca := fs.String("ca", "", "PEM file: the mesh root")
	peerIP := fs.String("peer-ip", "", "outbound: the only destination, reached over HBONE on its :15008")
	peerID := fs.String("peer-identity", "", "outbound: the identity the peer must present")
	allow := fs.String("allow", "", "inbound: the only identity let in (plaintext is refused, as with STRICT)")
	accessLog := fs.String("access-log", "", "access log file (default: discard)")
	profileDir := fs.String("profile-dir", "", "directory for CPU profiles asked for on stdin")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	podIP, err := netip.ParseAddr(*ip)
	if err != nil {
		return fmt.Errorf("%w: -ip: %w", ErrUsage, err)
	}
	var r staticResolver
	if r.peer, err = netip.ParseAddr(*peerIP); err != nil {
		return fmt.Errorf("%w: -peer-ip: %w", ErrUsage, err)
	}
	for _, f := range []struct {
		dst  *hbone.Identity
		flag string
	}{{&r.self, *id}, {&r.peerID, *peerID}, {&r.allow, *allow}} {
		if *f.dst, err = hbone.ParseIdentity(f.flag); err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	certs, err := loadCertificates(r.self, *cert, *ca)
	if err != nil {
		return err
	}

	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
	p, err := proxy.New(proxy.Config{Resolver: r, Certificates: certs, Metrics: metrics, Logger: logger, AccessLog: access})
	if err != nil {
		return err
	}
	defer p.Close()
	err = p.AddPod(ctx, proxy.Pod{
		UID: *pod, Name: *pod, Namespace: r.self.Namespace, Identity: r.self,
		IPs: []netip.Addr{podIP}, NetNS: *netns,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")

	cmds := make(chan string)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
	}()
	var profile *os.File
	defer func() {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case cmd, ok := <-cmds:
			if !ok {
				return nil // the bench is gone
			}
			switch name, isProfile := strings.CutPrefix(cmd, "profile "); {
			case isProfile && profile == nil && *profileDir != "":
				f, err := os.Create(filepath.Join(*profileDir, "ztunnel-"+*pod+"-"+name+".pprof"))
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return err
				}
				profile = f
			case cmd == "stop" && profile != nil:
				pprof.StopCPUProfile()
				if err := profile.Close(); err != nil {
					return err
				}
				profile = nil
			}
		}
	}
}

// staticResolver is the whole mesh of the benchmark: the client pod's
// outbound traffic to the peer goes over HBONE to the peer's 15008 (which
// must present peerID); inbound, only allow is let in and plaintext is
// refused.
type staticResolver struct {
	self, peerID, allow hbone.Identity
	peer                netip.Addr
}

func (r staticResolver) Outbound(_ context.Context, _ proxy.Pod, dst netip.AddrPort) (proxy.Upstream, error) {
	if dst.Addr() != r.peer {
		return proxy.Upstream{}, fmt.Errorf("no route to %s", dst)
	}
	return proxy.Upstream{
		NextHop:  netip.AddrPortFrom(r.peer, capture.DefaultHBONEPort),
		Identity: r.peerID,
		Workload: proxy.WorkloadInfo{Name: r.peerID.ServiceAccount, Namespace: r.peerID.Namespace, Identity: r.peerID},
	}, nil
}

func (r staticResolver) Inbound(_ context.Context, c proxy.InboundConn) (proxy.Decision, error) {
	switch {
	case c.Plaintext:
		return proxy.Decision{Policy: "STRICT mTLS"}, nil
	case c.SourceIdentity != r.allow:
		return proxy.Decision{Policy: "l4bench allow-client"}, nil
	}
	return proxy.Decision{Allow: true, Policy: "l4bench allow-client",
		Source: proxy.WorkloadInfo{Name: r.allow.ServiceAccount, Namespace: r.allow.Namespace, Identity: r.allow}}, nil
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
