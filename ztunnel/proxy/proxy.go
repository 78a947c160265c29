package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// Pod is an enrolled pod whose traffic the proxy carries.
type Pod struct {
	// UID identifies the pod; AddPod with a known UID updates that pod.
	UID string
	// Name and Namespace of the pod.
	Name, Namespace string
	// Workload is the workload name used in metrics (source_workload,
	// destination_workload), e.g. the Deployment's name. Default: Name.
	Workload string
	// Identity is the pod's SPIFFE identity: its certificate is used for
	// outbound tunnels and presented on its HBONE listener.
	Identity hbone.Identity
	// IPs are the pod's addresses; inbound tunnels must name one of them.
	IPs []netip.Addr
	// NetNS is the path of the pod's network namespace (e.g.
	// /var/run/netns/cni-…, /proc/<pid>/ns/net), where capture rules are
	// installed already.
	NetNS string
}

// workload returns the workload name for metrics.
func (p *Pod) workload() string {
	if p.Workload != "" {
		return p.Workload
	}
	return p.Name
}

func (p *Pod) info() WorkloadInfo {
	return WorkloadInfo{Name: p.workload(), Namespace: p.Namespace, Identity: p.Identity}
}

func (p *Pod) hasIP(a netip.Addr) bool {
	a = a.Unmap()
	for _, ip := range p.IPs {
		if ip.Unmap() == a {
			return true
		}
	}
	return false
}

// WorkloadInfo describes the other end of a connection for metrics and logs.
// Every field may be empty when unknown ("unknown" in metrics).
type WorkloadInfo struct {
	Name      string // workload name
	Namespace string
	Identity  hbone.Identity
}

// Upstream is where an outbound connection goes, as the Resolver decided.
type Upstream struct {
	// Passthrough sends the connection as plain TCP to its original
	// destination; the other fields except Workload and Service are ignored.
	Passthrough bool
	// NextHop is the HBONE endpoint: the destination pod's IP:15008, or a
	// waypoint's.
	NextHop netip.AddrPort
	// Authority is sent as :authority. Default: the original destination
	// ip:port. Set it to the service VIP:port when NextHop is a waypoint.
	Authority string
	// Identity is the identity NextHop's certificate must carry. Required
	// unless Passthrough.
	Identity hbone.Identity
	// Workload is the destination workload, for metrics and logs.
	Workload WorkloadInfo
	// Service is the destination service hostname, for metrics
	// (destination_service) and logs, when the destination is a service.
	Service string
}

// InboundConn is an inbound connection the Resolver decides on.
type InboundConn struct {
	// Pod is the destination pod (whose listener took the connection).
	Pod Pod
	// Source is the original client: the forwarded header's for= on HBONE
	// (or the HBONE peer's address without it), the TCP peer for plaintext.
	Source netip.AddrPort
	// SourceIdentity is the verified identity of the HBONE peer; zero for
	// plaintext.
	SourceIdentity hbone.Identity
	// Destination is the pod ip:port asked for.
	Destination netip.AddrPort
	// Plaintext is true for connections captured on 15006: no mesh
	// identity. The Resolver must refuse them when the pod's
	// PeerAuthentication is STRICT.
	Plaintext bool
}

// Decision is the Resolver's verdict on an inbound connection.
type Decision struct {
	// Allow lets the connection through.
	Allow bool
	// Policy names what decided (an AuthorizationPolicy, "STRICT mTLS", …),
	// for the access log. Optional.
	Policy string
	// Source is the source workload, if the Resolver knows it (by the
	// source address), for metrics and logs. Optional.
	Source WorkloadInfo
}

// Resolver answers the proxy's questions about the mesh. An adapter over
// ztunnel's workload and policy store satisfies it. Both methods are called
// once per connection, on the connection's goroutine; they must not block
// for long (precompute, do not fetch).
type Resolver interface {
	// Outbound says where a connection from src to dst (the original
	// destination) goes. An error closes the client's connection.
	Outbound(ctx context.Context, src Pod, dst netip.AddrPort) (Upstream, error)
	// Inbound authorizes an inbound connection. An error denies it.
	Inbound(ctx context.Context, c InboundConn) (Decision, error)
}

// Certificates are the workload certificates ztunnel holds for the pods on
// its node (e.g. one meshcert.Source per identity).
type Certificates interface {
	// Certificate returns the certificate (leaf first, chain to the roots,
	// with its key) for id.
	Certificate(ctx context.Context, id hbone.Identity) (*tls.Certificate, error)
	// Roots are the mesh trust roots.
	Roots() *x509.CertPool
}

// Config configures a Proxy. Resolver and Certificates are required; every
// other field has the documented default when zero.
type Config struct {
	Resolver     Resolver
	Certificates Certificates

	// Metrics receives Istio's TCP metrics. Default: a Metrics registered
	// nowhere (NewMetrics(nil)).
	Metrics *Metrics
	// Logger receives operational events. Default: discard.
	Logger *slog.Logger
	// AccessLog receives one line per connection ("connection complete").
	// Default: Logger.
	AccessLog *slog.Logger

	// OutboundPort, InboundPlaintextPort and HBONEPort are the listener
	// ports inside each pod. Defaults 15001, 15006, 15008 (capture's).
	OutboundPort, InboundPlaintextPort, HBONEPort uint16
	// Mark is the SO_MARK on every socket the proxy opens inside a pod, so
	// capture leaves it alone. Default capture.DefaultMark (0x539).
	Mark uint32
	// ConnectTimeout bounds the dial to an upstream (HBONE next hop,
	// passthrough destination, local application). Default 10s.
	ConnectTimeout time.Duration
	// DrainTimeout is how long a removed (or replaced) pod's open
	// connections may go on before they are closed. Default 30s (Kubernetes'
	// default termination grace period).
	DrainTimeout time.Duration
	// DisableSourceSpoofing connects inbound traffic to the application
	// from the pod's own address instead of the original client's. Without
	// it the proxy tries the client's address (IP_TRANSPARENT, which needs
	// CAP_NET_ADMIN) and falls back to the pod's address when the kernel
	// refuses. Default false.
	DisableSourceSpoofing bool
	// Now is the clock for connection start times and durations.
	// Default time.Now.
	Now func() time.Time
}

// Validate reports what is wrong with c.
func (c *Config) Validate() error {
	switch {
	case c.Resolver == nil:
		return errors.New("proxy: Config.Resolver is required")
	case c.Certificates == nil:
		return errors.New("proxy: Config.Certificates is required")
	case c.ConnectTimeout < 0, c.DrainTimeout < 0:
		return errors.New("proxy: timeouts must not be negative")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Metrics == nil {
		c.Metrics, _ = NewMetrics(nil)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.AccessLog == nil {
		c.AccessLog = c.Logger
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = capture.DefaultOutboundPort
	}
	if c.InboundPlaintextPort == 0 {
		c.InboundPlaintextPort = capture.DefaultInboundPlaintextPort
	}
	if c.HBONEPort == 0 {
		c.HBONEPort = capture.DefaultHBONEPort
	}
	if c.Mark == 0 {
		c.Mark = capture.DefaultMark
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// ErrClosed is returned by AddPod after Close.
var ErrClosed = errors.New("proxy: closed")

// Proxy carries the traffic of the pods added to it. Create it with New;
// it is safe for concurrent use.
type Proxy struct {
	cfg     Config
	tracker tracker

	mu     sync.Mutex
	pods   map[string]*podProxy // by UID
	closed bool
	done   chan struct{} // closed by Close: cuts drains short
	// draining counts pods being drained (removed or replaced), so that
	// Close can wait for them.
	draining sync.WaitGroup
}

// New returns a Proxy serving no pod yet.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Proxy{cfg: cfg, pods: make(map[string]*podProxy), done: make(chan struct{})}, nil
}

// AddPod starts carrying pod's traffic: it opens the three listeners inside
// pod.NetNS (whose capture rules the node agent installed) and returns once
// they listen. ctx bounds only the setup.
//
// Adding a pod that is known already (same UID) replaces it atomically:
// with the same network namespace the listeners stay open and only the
// pod's description (identity, addresses, names) is swapped, so no
// connection is refused in between; with another namespace (a new
// sandbox) the new listeners are opened first and the old pod is then
// removed as by RemovePod.
func (p *Proxy) AddPod(ctx context.Context, pod Pod) error {
	if pod.UID == "" || pod.NetNS == "" {
		return errors.New("proxy: pod needs a UID and a network namespace path")
	}
	if pod.Identity.IsZero() {
		return fmt.Errorf("proxy: pod %s/%s has no identity", pod.Namespace, pod.Name)
	}
	if len(pod.IPs) == 0 {
		return fmt.Errorf("proxy: pod %s/%s has no IP", pod.Namespace, pod.Name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pod.IPs = append([]netip.Addr(nil), pod.IPs...)

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	old := p.pods[pod.UID]
	if old != nil && sameNetNS(old.pod.Load().NetNS, pod.NetNS) {
		old.pod.Store(&pod)
		p.mu.Unlock()
		p.cfg.Logger.Info("proxy: pod updated", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID)
		return nil
	}
	p.mu.Unlock()

	pp, err := p.startPod(&pod)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pp.stop(0)
		return ErrClosed
	}
	old = p.pods[pod.UID]
	p.pods[pod.UID] = pp
	if old != nil {
		p.drainLocked(old)
	}
	p.mu.Unlock()
	p.cfg.Logger.Info("proxy: pod added", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "netns", pod.NetNS)
	return nil
}

// RemovePod stops carrying the traffic of the pod with uid: its listeners
// are closed at once, its open connections may go on for
// Config.DrainTimeout and are then closed. It reports whether the pod was
// known.
func (p *Proxy) RemovePod(uid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.pods[uid]
	if pp == nil {
		return false
	}
	delete(p.pods, uid)
	p.drainLocked(pp)
	pod := pp.pod.Load()
	p.cfg.Logger.Info("proxy: pod removed", "pod", pod.Namespace+"/"+pod.Name, "uid", uid)
	return true
}

// drainLocked closes pp's listeners now and its connections after the
// drain timeout, in the background. p.mu is held.
func (p *Proxy) drainLocked(pp *podProxy) {
	pp.closeListeners()
	p.draining.Go(func() { pp.stop(p.cfg.DrainTimeout) })
}

// Close stops every pod: listeners and connections are closed at once
// (no drain), pods being drained are cut short, and Close waits for every
// goroutine of the proxy. AddPod fails afterwards.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	pods := p.pods
	p.pods = nil
	p.mu.Unlock()
	close(p.done)
	for _, pp := range pods {
		pp.closeListeners()
		pp.stop(0)
	}
	p.draining.Wait()
	return nil
}

// Pods returns the UIDs of the pods served.
func (p *Proxy) Pods() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	uids := make([]string, 0, len(p.pods))
	for uid := range p.pods {
		uids = append(uids, uid)
	}
	return uids
}

// Connections lists the open connections, oldest first, for an admin
// /config_dump.
func (p *Proxy) Connections() []ConnInfo { return p.tracker.snapshot() }
