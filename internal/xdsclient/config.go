package xdsclient

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"
)

// Defaults of Config.
const (
	// DefaultRootCertFile is where Istio mounts root-cert.pem of the
	// istio-ca-root-cert ConfigMap; ztunnel verifies istiod against it.
	DefaultRootCertFile = "/var/run/secrets/istio/root-cert.pem"
	// DefaultTokenFile is where Istio mounts the projected service-account
	// token (audience istio-ca) that ztunnel sends to istiod.
	DefaultTokenFile = "/var/run/secrets/tokens/istio-token"
	// DefaultClusterID is sent in the clusterid header with the token, as
	// ztunnel does when CLUSTER_ID is not set.
	DefaultClusterID = "Kubernetes"
	// DefaultMaxMessageSize bounds one response, as ztunnel does (gRPC's
	// own default of 4 MiB is too small for the first Address response of
	// a large cluster).
	DefaultMaxMessageSize = 200 << 20
	// DefaultKeepalive is the interval of HTTP/2 pings on an idle
	// connection; DefaultKeepaliveTimeout how long an unanswered one may
	// stay unanswered before the connection is dropped. Istio's istiod
	// accepts pings every 15 s, istiod-lite every 10 s.
	DefaultKeepalive        = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second

	// DefaultBackoffInitial, DefaultBackoffMax, DefaultBackoffJitter and
	// DefaultBackoffResetAfter are the defaults of Backoff.
	DefaultBackoffInitial    = 100 * time.Millisecond
	DefaultBackoffMax        = 15 * time.Second
	DefaultBackoffJitter     = 0.2
	DefaultBackoffResetAfter = 10 * time.Second

	// DefaultNodeType is the first part of the node id.
	DefaultNodeType = "ztunnel"
	// DefaultClusterDomain is the DNS domain of the cluster.
	DefaultClusterDomain = "cluster.local"
)

// TokenSource returns the current service-account token. It is called on
// every stream open; the token is sent as "authorization: Bearer <token>".
// An error fails that attempt (it is retried with backoff).
type TokenSource func(ctx context.Context) (string, error)

// FileToken is a TokenSource that reads the token from path on every call,
// so a rotated projected token is picked up. "" means DefaultTokenFile.
func FileToken(path string) TokenSource {
	if path == "" {
		path = DefaultTokenFile
	}
	return func(context.Context) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("xdsclient: service-account token: %w", err)
		}
		tok := string(bytes.TrimSpace(b))
		if tok == "" {
			return "", fmt.Errorf("xdsclient: service-account token file %s is empty", path)
		}
		return tok, nil
	}
}

// Config says where the control plane is, how to reach and authenticate
// to it and who the proxy is. Address is required; every other field has
// the documented default when zero.
type Config struct {
	// Address of the control plane, host:port, such as
	// istiod.istio-system.svc:15012. Required.
	Address string
	// ServerName is the name the control plane's certificate must carry.
	// Default: the host of Address.
	ServerName string
	// RootCertFile holds the roots (PEM) the control plane's certificate is
	// verified against. It is read at every connection attempt, so a
	// rotated root is picked up. Ignored when TLS is set. Default
	// DefaultRootCertFile.
	RootCertFile string
	// TLS, when set, is used (cloned) instead of RootCertFile, for example
	// to present a client certificate. Its ServerName defaults to
	// ServerName.
	TLS *tls.Config
	// Token returns the token sent on every stream open. Nil: no
	// authorization header (the control plane will likely refuse the
	// stream). ztunnel uses FileToken(DefaultTokenFile).
	Token TokenSource
	// ClusterID is sent as the "clusterid" header along with the token, as
	// ztunnel does; Istio uses it to pick the cluster that reviews the
	// token. Default DefaultClusterID.
	ClusterID string
	// Node identifies the proxy in every stream's first request of each
	// type.
	Node Node
	// Backoff paces reconnection attempts.
	Backoff Backoff
	// MaxMessageSize bounds one response. Default DefaultMaxMessageSize.
	MaxMessageSize int
	// Keepalive is the HTTP/2 ping interval on an idle connection, so a
	// control plane behind a dead network path is noticed; KeepaliveTimeout
	// how long a ping may stay unanswered. Defaults DefaultKeepalive and
	// DefaultKeepaliveTimeout; the server must accept pings that often.
	Keepalive        time.Duration
	KeepaliveTimeout time.Duration
	// Logger gets connects (Info), disconnects and NACKs (Warn) and
	// responses (Debug). Default: discard.
	Logger *slog.Logger
	// Registerer gets the metrics listed in README.md. Default: not
	// registered (they still count).
	Registerer prometheus.Registerer
}

// Backoff paces the attempts to open a stream: the first at once, then
// after Initial, doubling up to Max, each delay varied by ±Jitter. A stream
// that received a response and stayed up for ResetAfter counts as healthy:
// when it ends, the next attempt waits Initial again.
type Backoff struct {
	// Initial is the first delay. Default DefaultBackoffInitial (100 ms).
	Initial time.Duration
	// Max caps the delay. Default DefaultBackoffMax (15 s).
	Max time.Duration
	// Jitter is the fraction each delay is varied by, up or down, so that
	// every proxy of a cluster does not reconnect at the same instant.
	// Default DefaultBackoffJitter (0.2). It must be in [0, 1).
	Jitter float64
	// ResetAfter is how long a stream must stay up after its first
	// response to reset the backoff. Default DefaultBackoffResetAfter (10 s).
	ResetAfter time.Duration
}

// Node is the proxy as the control plane sees it: the node of the first
// request of each type, in the form ztunnel sends (src/xds/client.rs,
// Config::node).
type Node struct {
	// Type is the first part of the node id. Default DefaultNodeType
	// ("ztunnel"); the waypoint uses "waypoint".
	Type string
	// IPs are the pod's addresses: the first is the second part of the node
	// id, all go to the INSTANCE_IPS metadata (comma separated). Istio's
	// istiod refuses a node without one.
	IPs []netip.Addr
	// PodName and PodNamespace name the proxy's pod (metadata NAME and
	// NAMESPACE, and the node id).
	PodName      string
	PodNamespace string
	// NodeName is the Kubernetes node (metadata NODE_NAME).
	NodeName string
	// ClusterDomain ends the node id (<ns>.svc.<domain>). Default
	// DefaultClusterDomain.
	ClusterDomain string
	// Metadata is added to the node metadata as string values; ztunnel
	// adds its ISTIO_META_* environment variables without the prefix here
	// (such as CLUSTER_ID). It cannot override the four fields above.
	Metadata map[string]string
}

// Node metadata keys ztunnel sends.
const (
	metaName        = "NAME"
	metaNamespace   = "NAMESPACE"
	metaInstanceIPs = "INSTANCE_IPS"
	metaNodeName    = "NODE_NAME"
)

// ID is the node id: <type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>.
func (n Node) ID() string {
	ip := ""
	if len(n.IPs) > 0 {
		ip = n.IPs[0].String()
	}
	typ := cmp.Or(n.Type, DefaultNodeType)
	domain := cmp.Or(n.ClusterDomain, DefaultClusterDomain)
	return fmt.Sprintf("%s~%s~%s.%s~%s.svc.%s", typ, ip, n.PodName, n.PodNamespace, n.PodNamespace, domain)
}

// Proto is the node as sent: the id and the metadata, every value a string.
func (n Node) Proto() *core.Node {
	ips := make([]string, len(n.IPs))
	for i, ip := range n.IPs {
		ips[i] = ip.String()
	}
	fields := make(map[string]*structpb.Value, len(n.Metadata)+4)
	for k, v := range n.Metadata {
		fields[k] = structpb.NewStringValue(v)
	}
	fields[metaName] = structpb.NewStringValue(n.PodName)
	fields[metaNamespace] = structpb.NewStringValue(n.PodNamespace)
	fields[metaInstanceIPs] = structpb.NewStringValue(strings.Join(ips, ","))
	fields[metaNodeName] = structpb.NewStringValue(n.NodeName)
	return &core.Node{Id: n.ID(), Metadata: &structpb.Struct{Fields: fields}}
}

// Validate reports a configuration New would refuse.
func (c Config) Validate() error {
	var errs []error
	host, port, err := net.SplitHostPort(c.Address)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil || host == "" {
		errs = append(errs, fmt.Errorf("xdsclient: control plane address %q: want host:port, such as istiod.istio-system.svc:15012", c.Address))
	}
	b := c.Backoff
	if b.Initial < 0 || b.Max < 0 || b.ResetAfter < 0 {
		errs = append(errs, errors.New("xdsclient: Backoff durations must not be negative"))
	}
	if b.Max > 0 && b.Max < cmp.Or(b.Initial, DefaultBackoffInitial) {
		errs = append(errs, fmt.Errorf("xdsclient: Backoff.Max %v is less than Backoff.Initial", b.Max))
	}
	if b.Jitter < 0 || b.Jitter >= 1 {
		errs = append(errs, fmt.Errorf("xdsclient: Backoff.Jitter %v: want 0 <= jitter < 1", b.Jitter))
	}
	if c.MaxMessageSize < 0 || c.Keepalive < 0 || c.KeepaliveTimeout < 0 {
		errs = append(errs, errors.New("xdsclient: MaxMessageSize, Keepalive and KeepaliveTimeout must not be negative"))
	}
	for _, ip := range c.Node.IPs {
		if !ip.IsValid() {
			errs = append(errs, errors.New("xdsclient: Node.IPs holds an invalid address"))
			break
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	c.RootCertFile = cmp.Or(c.RootCertFile, DefaultRootCertFile)
	c.ClusterID = cmp.Or(c.ClusterID, DefaultClusterID)
	c.MaxMessageSize = cmp.Or(c.MaxMessageSize, DefaultMaxMessageSize)
	c.Keepalive = cmp.Or(c.Keepalive, DefaultKeepalive)
	c.KeepaliveTimeout = cmp.Or(c.KeepaliveTimeout, DefaultKeepaliveTimeout)
	c.Backoff.Initial = cmp.Or(c.Backoff.Initial, DefaultBackoffInitial)
	c.Backoff.Max = cmp.Or(c.Backoff.Max, max(DefaultBackoffMax, c.Backoff.Initial))
	c.Backoff.Jitter = cmp.Or(c.Backoff.Jitter, DefaultBackoffJitter)
	c.Backoff.ResetAfter = cmp.Or(c.Backoff.ResetAfter, DefaultBackoffResetAfter)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
