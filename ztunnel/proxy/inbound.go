package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// ErrDenied is the error (wrapped, with the deciding policy) of connections
// the Resolver refused.
var ErrDenied = errors.New("connection denied by policy")

func denied(policy string) error {
	if policy == "" {
		return ErrDenied
	}
	return fmt.Errorf("%w %s", ErrDenied, policy)
}

// hconnKey keys the *hconn of an inbound HBONE connection in the contexts
// the hbone.Server hands to Authorize and Dial.
type hconnKey struct{}

// hconn is the state of one inbound HBONE connection.
//
// hbone.Server calls Authorize and then, for an admitted tunnel, Dial, one
// after the other on the tunnel's goroutine, but Dial is not told which
// request it serves. A successful Authorize therefore takes the handoff
// slot and leaves its record in pending; the Dial that follows takes the
// record and frees the slot. Another tunnel's Authorize on the same
// connection waits the few instructions in between, so every Dial gets its
// own tunnel's record (for the source address to connect from and the
// byte counters).
type hconn struct {
	handoff chan struct{} // capacity 1
	pending *connRecord
}

// handleHBONE serves one connection accepted on the HBONE listener.
func (pp *podProxy) handleHBONE(c net.Conn) {
	hc := &hconn{handoff: make(chan struct{}, 1)}
	ctx := context.WithValue(pp.connCtx, hconnKey{}, hc)
	if err := pp.server.ServeConn(ctx, c); err != nil {
		pp.p.cfg.Logger.Debug("proxy: inbound HBONE connection failed", "peer", c.RemoteAddr(), "err", err)
	}
}

// serverTLS gives every handshake on the HBONE listener the pod's current
// certificate and the current mesh roots.
func (pp *podProxy) serverTLS(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	pod := pp.pod.Load()
	cert, err := pp.p.cfg.Certificates.Certificate(hello.Context(), pod.Identity)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", pod.Identity, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{*cert}, ClientCAs: pp.p.cfg.Certificates.Roots()}, nil
}

// checkAuthority admits only this pod's addresses, on ports other than
// ztunnel's own.
func (pp *podProxy) checkAuthority(authority string) error {
	pod := pp.pod.Load()
	ap, err := netip.ParseAddrPort(authority)
	if err != nil {
		return err
	}
	if !pod.hasIP(ap.Addr()) {
		return fmt.Errorf("%s is not an address of pod %s/%s", ap.Addr(), pod.Namespace, pod.Name)
	}
	if pp.isProxyPort(ap.Port()) {
		return fmt.Errorf("port %d is ztunnel's own", ap.Port())
	}
	return nil
}

func (pp *podProxy) isProxyPort(port uint16) bool {
	c := &pp.p.cfg
	return port == c.OutboundPort || port == c.InboundPlaintextPort || port == c.HBONEPort
}

// authorize asks the Resolver about one CONNECT and starts its record.
func (pp *podProxy) authorize(ctx context.Context, req *hbone.Request) error {
	hc, _ := ctx.Value(hconnKey{}).(*hconn)
	if hc == nil {
		return errors.New("internal error: tunnel without connection state")
	}
	p := pp.p
	pod := pp.pod.Load()
	src := req.ClientAddr
	if !src.IsValid() {
		src = addrPort(req.RemoteAddr)
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst := netip.AddrPortFrom(req.Destination.Addr().Unmap(), req.Destination.Port())
	d, err := p.cfg.Resolver.Inbound(ctx, InboundConn{
		Pod: *pod, Source: src, SourceIdentity: req.Peer, Destination: dst,
	})
	srcNS := d.Source.Namespace
	if srcNS == "" {
		srcNS = req.Peer.Namespace
	}
	rec := p.open(ConnInfo{
		Direction: DirectionInbound, Pod: pod.Namespace + "/" + pod.Name,
		Src: src, Dst: dst, HBONEAddr: addrPort(req.RemoteAddr).String(),
		SrcWorkload: d.Source.Name, SrcIdentity: req.Peer.String(),
		DstWorkload: pod.workload(), DstIdentity: pod.Identity.String(),
		Security: SecurityMutualTLS,
	}, trafficLabels{
		reporter:    ReporterDestination,
		srcWorkload: d.Source.Name, srcNamespace: srcNS, srcPrinc: req.Peer.String(),
		dstWorkload: pod.workload(), dstNamespace: pod.Namespace, dstPrinc: pod.Identity.String(),
		security: SecurityMutualTLS,
	})
	rec.policy = d.Policy
	pp.tunnels.Store(req, rec)
	switch {
	case err != nil:
		return fmt.Errorf("authorization failed (denied): %w", err)
	case !d.Allow:
		return denied(d.Policy)
	}
	select {
	case hc.handoff <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	hc.pending = rec
	return nil
}

// dialInbound connects an admitted tunnel to the application.
func (pp *podProxy) dialInbound(ctx context.Context, _, address string) (net.Conn, error) {
	hc, _ := ctx.Value(hconnKey{}).(*hconn)
	if hc == nil {
		return nil, errors.New("internal error: tunnel without connection state")
	}
	rec := hc.pending
	hc.pending = nil
	<-hc.handoff
	if rec == nil {
		return nil, errors.New("internal error: dial without authorization")
	}
	dst, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	up, err := pp.dialApp(ctx, rec.info.Src.Addr(), dst)
	if err != nil {
		return nil, err
	}
	return &meteredConn{Conn: up, onRead: rec.addSent, onWrite: rec.addReceived}, nil
}

// tunnelClosed ends the record of a finished CONNECT.
func (pp *podProxy) tunnelClosed(res hbone.TunnelResult) {
	v, ok := pp.tunnels.LoadAndDelete(res.Request)
	if !ok {
		// Refused before Authorize (400): nothing to attribute it to.
		if res.Err != nil {
			src := res.Request.ClientAddr
			if !src.IsValid() {
				src = addrPort(res.Request.RemoteAddr)
			}
			pp.p.earlyFailure(DirectionInbound, src, res.Request.Destination, res.Err)
		}
		return
	}
	flag := FlagNone
	switch res.Status {
	case http.StatusUnauthorized:
		flag = FlagDenied
	case http.StatusServiceUnavailable:
		flag = FlagConnectFailed
	}
	v.(*connRecord).finish(flag, res.Err)
}

// handlePlaintext serves one connection captured on the inbound plaintext
// listener: no mesh identity, so it is let in only if the Resolver allows
// plaintext for the pod and authorizes it.
func (pp *podProxy) handlePlaintext(c net.Conn) {
	p := pp.p
	pod := pp.pod.Load()
	client := addrPort(c.RemoteAddr())
	dst, err := capture.OriginalDst(c)
	if err == nil {
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		switch {
		case pp.isProxyPort(dst.Port()):
			err = fmt.Errorf("port %d is ztunnel's own", dst.Port())
		case !pod.hasIP(dst.Addr()):
			err = fmt.Errorf("%s is not an address of pod %s/%s", dst.Addr(), pod.Namespace, pod.Name)
		}
	}
	if err != nil {
		p.earlyFailure(DirectionInbound, client, dst, err)
		resetClose(c)
		return
	}
	ctx := pp.connCtx
	d, err := p.cfg.Resolver.Inbound(ctx, InboundConn{
		Pod: *pod, Source: client, Destination: dst, Plaintext: true,
	})
	rec := p.open(ConnInfo{
		Direction: DirectionInbound, Pod: pod.Namespace + "/" + pod.Name,
		Src: client, Dst: dst, SrcWorkload: d.Source.Name,
		DstWorkload: pod.workload(), DstIdentity: pod.Identity.String(),
		Security: SecurityUnknown,
	}, trafficLabels{
		reporter:    ReporterDestination,
		srcWorkload: d.Source.Name, srcNamespace: d.Source.Namespace,
		dstWorkload: pod.workload(), dstNamespace: pod.Namespace, dstPrinc: pod.Identity.String(),
		security: SecurityUnknown,
	})
	rec.policy = d.Policy
	if err != nil || !d.Allow {
		if err == nil {
			err = denied(d.Policy)
		} else {
			err = fmt.Errorf("authorization failed (denied): %w", err)
		}
		rec.finish(FlagDenied, err)
		resetClose(c)
		return
	}

	stopC := context.AfterFunc(ctx, func() { c.Close() })
	defer stopC()
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	up, err := pp.dialApp(dctx, client.Addr(), dst)
	cancel()
	if err != nil {
		rec.finish(FlagConnectFailed, err)
		resetClose(c)
		return
	}
	stopUp := context.AfterFunc(ctx, func() { up.Close() })
	defer stopUp()
	_, _, err = hbone.Relay(
		&meteredConn{Conn: c, onRead: rec.addReceived},
		&meteredConn{Conn: up, onRead: rec.addSent},
	)
	rec.finish(FlagNone, err)
}

// dialApp connects to the pod's application at dst from inside the pod,
// with ztunnel's mark, and with src as source address (IP_TRANSPARENT)
// unless spoofing is disabled or refused by the kernel, as Istio does; the
// capture rules' connmark routes the application's replies back.
func (pp *podProxy) dialApp(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	cfg := &pp.p.cfg
	network := "tcp4"
	if dst.Addr().Is6() {
		network = "tcp6"
	}
	if !cfg.DisableSourceSpoofing && !pp.noSpoof.Load() && src.IsValid() && src.Is6() == dst.Addr().Is6() {
		d := &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: src.AsSlice()},
			Control:   capture.SocketOptions{Mark: cfg.Mark, Transparent: true}.Control,
		}
		c, err := capture.DialInNetNS(ctx, pp.netns, d, network, dst.String())
		if err == nil || !isPermission(err) {
			return c, err
		}
		if !pp.noSpoof.Swap(true) {
			pod := pp.pod.Load()
			cfg.Logger.Warn("proxy: cannot connect to applications with the client's address; using the pod's own",
				"pod", pod.Namespace+"/"+pod.Name, "err", err)
		}
	}
	d := &net.Dialer{Control: capture.SocketOptions{Mark: cfg.Mark}.Control}
	return capture.DialInNetNS(ctx, pp.netns, d, network, dst.String())
}
