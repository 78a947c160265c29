package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
)

// handleOutbound carries one connection captured on the outbound listener:
// original destination → Resolver → passthrough or HBONE → relay.
func (pp *podProxy) handleOutbound(c net.Conn) {
	p := pp.p
	pod := pp.pod.Load()
	client := addrPort(c.RemoteAddr())
	dst, err := capture.OriginalDst(c)
	if err == nil && dst == addrPort(c.LocalAddr()) {
		// Not redirected: someone connected to 15001 itself.
		err = errors.New("connection to the outbound listener was not redirected by capture")
	}
	if err != nil {
		p.earlyFailure(DirectionOutbound, client, dst, err)
		resetClose(c)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())

	ctx := pp.connCtx
	up, err := p.cfg.Resolver.Outbound(ctx, *pod, dst)
	if err != nil {
		p.earlyFailure(DirectionOutbound, client, dst, err)
		resetClose(c)
		return
	}

	info := ConnInfo{
		Direction: DirectionOutbound, Pod: pod.Namespace + "/" + pod.Name,
		Src: client, Dst: dst,
		SrcWorkload: pod.workload(), DstWorkload: up.Workload.Name, DstService: up.Service,
	}
	l := trafficLabels{
		reporter:    ReporterSource,
		srcWorkload: pod.workload(), srcNamespace: pod.Namespace, srcPrinc: pod.Identity.String(),
		dstWorkload: up.Workload.Name, dstNamespace: up.Workload.Namespace,
		dstService: up.Service,
		security:   SecurityUnknown,
	}
	var target hbone.Target
	if !up.Passthrough {
		target = hbone.Target{
			Address:     up.NextHop.String(),
			Authority:   up.Authority,
			Source:      pod.Identity,
			Destination: up.Identity,
			ClientAddr:  client,
		}
		if target.Authority == "" {
			target.Authority = dst.String()
		}
		info.HBONEAddr = target.Address
		info.SrcIdentity, info.DstIdentity = pod.Identity.String(), up.Identity.String()
		l.dstPrinc = up.Identity.String()
		l.security = SecurityMutualTLS
	}
	info.Security = l.security
	rec := p.open(info, l)

	// Closing c stops the dial and the relay when the pod's drain ends.
	stopC := context.AfterFunc(ctx, func() { c.Close() })
	defer stopC()

	var upstream net.Conn
	if up.Passthrough {
		dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		upstream, err = pp.dialMarked(dctx, "tcp", dst.String())
		cancel()
	} else {
		var st *hbone.Stream
		st, err = pp.dialer.DialContext(ctx, target)
		if err == nil {
			upstream = st
		}
	}
	if err != nil {
		flag := FlagConnectFailed
		if se, ok := errors.AsType[*hbone.StatusError](err); ok && se.Code == 401 {
			flag = FlagDenied
		}
		rec.finish(flag, err)
		resetClose(c)
		return
	}
	stopUp := context.AfterFunc(ctx, func() { upstream.Close() })
	defer stopUp()

	_, _, err = hbone.Relay(
		&meteredConn{Conn: c, onRead: rec.addReceived},
		&meteredConn{Conn: upstream, onRead: rec.addSent},
	)
	rec.finish(FlagNone, err)
}

// earlyFailure logs a connection that failed before it could be attributed
// (no original destination, no route): like ztunnel, an access-log line
// without metrics.
func (p *Proxy) earlyFailure(direction string, src, dst netip.AddrPort, err error) {
	p.cfg.AccessLog.Warn("connection failed",
		"src.addr", src.String(), "dst.addr", dst.String(),
		"direction", direction, "error", err.Error())
}
