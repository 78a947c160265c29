package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Response flags (label response_flags), ztunnel's values.
const (
	FlagNone          = "-"
	FlagDenied        = "DENY"    // refused by policy (or STRICT mTLS)
	FlagConnectFailed = "CONNECT" // the upstream could not be reached
)

// Connection security policies (label connection_security_policy),
// ztunnel's values.
const (
	SecurityMutualTLS = "mutual_tls"
	SecurityUnknown   = "unknown" // plaintext or passthrough
)

// Reporters (label reporter).
const (
	ReporterSource      = "source"      // outbound
	ReporterDestination = "destination" // inbound
)

// Directions in the access log and connection listing.
const (
	DirectionOutbound = "outbound"
	DirectionInbound  = "inbound"
)

// labelNames are the labels of every TCP metric, in order.
var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_service",
	"request_protocol", "response_flags", "connection_security_policy",
}

// Metrics are Istio's TCP metrics. One Metrics may be shared by several
// proxies.
type Metrics struct {
	opened, closed, sent, received *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labelNames)
	}
	m := &Metrics{
		opened:   vec("istio_tcp_connections_opened_total", "The total number of TCP connections opened"),
		closed:   vec("istio_tcp_connections_closed_total", "The total number of TCP connections closed"),
		received: vec("istio_tcp_received_bytes_total", "The size of total bytes received during request in case of a TCP connection"),
		sent:     vec("istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of a TCP connection"),
	}
	if reg != nil {
		var errs []error
		for _, c := range []prometheus.Collector{m.opened, m.closed, m.received, m.sent} {
			errs = append(errs, reg.Register(c))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// trafficLabels are the label values of one connection.
type trafficLabels struct {
	reporter                            string
	srcWorkload, srcNamespace, srcPrinc string
	dstWorkload, dstNamespace, dstPrinc string
	dstService                          string
	flags, security                     string
}

func (l *trafficLabels) values() []string {
	return []string{
		l.reporter,
		orUnknown(l.srcWorkload), orUnknown(l.srcNamespace), orUnknown(l.srcPrinc),
		orUnknown(l.dstWorkload), orUnknown(l.dstNamespace), orUnknown(l.dstPrinc),
		orUnknown(l.dstService),
		"tcp", l.flags, l.security,
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// connRecord follows one connection: tracker entry, live byte counters,
// and at the end the closed counter and the access-log line.
type connRecord struct {
	p      *Proxy
	id     uint64
	info   ConnInfo // immutable after open, apart from the byte counts below
	labels trafficLabels
	start  time.Time
	policy string

	received, sent  atomic.Int64 // request (source → destination), response
	recvCtr, sentCr prometheus.Counter
	done            atomic.Bool
}

// open starts following a connection: it counts it as opened (with the
// response flag "-", as ztunnel does) and lists it.
func (p *Proxy) open(info ConnInfo, l trafficLabels) *connRecord {
	l.flags = FlagNone
	v := l.values()
	m := p.cfg.Metrics
	m.opened.WithLabelValues(v...).Inc()
	r := &connRecord{
		p: p, info: info, labels: l, start: p.cfg.Now(),
		recvCtr: m.received.WithLabelValues(v...),
		sentCr:  m.sent.WithLabelValues(v...),
	}
	r.info.Start = r.start
	p.tracker.add(r)
	return r
}

func (r *connRecord) addReceived(n int) {
	r.received.Add(int64(n))
	r.recvCtr.Add(float64(n))
}

func (r *connRecord) addSent(n int) {
	r.sent.Add(int64(n))
	r.sentCr.Add(float64(n))
}

// finish counts the connection as closed with flag and writes its access
// log line. Only the first call counts.
func (r *connRecord) finish(flag string, err error) {
	if r.done.Swap(true) {
		return
	}
	r.p.tracker.remove(r)
	l := r.labels
	l.flags = flag
	r.p.cfg.Metrics.closed.WithLabelValues(l.values()...).Inc()

	mtls := l.security == SecurityMutualTLS
	ident := func(s string) string {
		if !mtls {
			return ""
		}
		return s
	}
	received, sent := r.received.Load(), r.sent.Load()
	// Like ztunnel: bytes_sent is what the source sent for outbound and
	// what went back to the source for inbound.
	bytesSent, bytesRecv := sent, received
	if l.reporter == ReporterSource {
		bytesSent, bytesRecv = received, sent
	}
	attrs := []slog.Attr{
		slog.String("src.addr", r.info.Src.String()),
		slog.String("src.workload", r.info.SrcWorkload),
		slog.String("src.namespace", l.srcNamespace),
		slog.String("src.identity", ident(l.srcPrinc)),
		slog.String("dst.addr", r.info.Dst.String()),
		slog.String("dst.hbone_addr", r.info.HBONEAddr),
		slog.String("dst.service", l.dstService),
		slog.String("dst.workload", r.info.DstWorkload),
		slog.String("dst.namespace", l.dstNamespace),
		slog.String("dst.identity", ident(l.dstPrinc)),
		slog.String("direction", r.info.Direction),
		slog.Int64("bytes_sent", bytesSent),
		slog.Int64("bytes_recv", bytesRecv),
		slog.String("duration", r.p.cfg.Now().Sub(r.start).Round(time.Millisecond).String()),
		slog.String("response_flags", flag),
	}
	if r.policy != "" {
		attrs = append(attrs, slog.String("policy", r.policy))
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	r.p.cfg.AccessLog.LogAttrs(context.Background(), level, "connection complete", attrs...)
}

// meteredConn counts the bytes read from (and written to) a connection as
// they flow, and passes half-close on.
type meteredConn struct {
	net.Conn
	onRead, onWrite func(int)
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.onRead != nil {
		c.onRead(n)
	}
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 && c.onWrite != nil {
		c.onWrite(n)
	}
	return n, err
}

// CloseWrite half-closes the connection when it can (TCP, HBONE streams).
func (c *meteredConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// addrPort returns a's ip:port, unmapped, or the zero value.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
