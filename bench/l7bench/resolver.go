package l7bench

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/ambientlite/mesh/bench/l4bench"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/ztunnel/proxy"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// The ztunnels of this benchmark are l4bench's ztunnel role resolving from
// the mesh's configuration: newMeshResolver is its l4bench.XDSResolverFunc.
// (The daemon's own resolver, ztunnel/daemon's, is unexported; meshResolver
// answers the same way from the same store.)

// newMeshResolver subscribes to Address and Authorization resources from
// cfg's server into a ztunnel/state store, as the ztunnel daemon does,
// follows them until ctx ends, and returns once the store holds a
// workload at every pod's address.
func newMeshResolver(ctx context.Context, cfg l4bench.XDSConfig) (proxy.Resolver, error) {
	st := state.New(state.Config{Node: cfg.Node})
	var ips []netip.Addr
	for _, p := range cfg.Pods {
		ips = append(ips, p.IPs...)
	}
	xc, err := xdsclient.New(xdsclient.Config{
		Address: cfg.Address, ServerName: cfg.ServerName, RootCertFile: cfg.RootCertFile, Token: xdsclient.FileToken(cfg.TokenFile),
		Node:   xdsclient.Node{IPs: ips[:1], PodName: "ztunnel-" + cfg.Node, PodNamespace: ztunnelID.Namespace, NodeName: cfg.Node},
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	for typeURL, h := range map[string]xdsclient.Handler{
		state.AddressTypeURL:       st.AddressHandler(),
		state.AuthorizationTypeURL: st.AuthorizationHandler(),
	} {
		if err := xc.Watch(typeURL, h); err != nil {
			return nil, err
		}
	}
	go func() { _ = xc.Run(ctx) }()
	for {
		missing := ""
		for _, ip := range ips {
			if st.SourceWorkload(ip) == nil {
				missing = ip.String()
			}
		}
		if missing == "" {
			return meshResolver{st: st}, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no workload at %s from the xDS server (%s): %w", missing, xc.Status().LastError, ctx.Err())
		case <-st.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// meshResolver answers from ztunnel/state as the ztunnel daemon does:
// outbound, the destination the store resolves for the pod's workload (a
// workload directly, a service VIP to an endpoint or to the service's
// waypoint with the VIP as authority, else plain TCP); inbound, the
// store's L4 authorization.
type meshResolver struct {
	st *state.Store
}

func (r meshResolver) Outbound(_ context.Context, src proxy.Pod, dst netip.AddrPort) (proxy.Upstream, error) {
	var sw *state.Workload
	for _, ip := range src.IPs {
		if sw = r.st.SourceWorkload(ip); sw != nil {
			break
		}
	}
	d, err := r.st.DestinationFor("", dst.Addr(), dst.Port(), sw)
	if err != nil {
		return proxy.Upstream{}, err
	}
	up := proxy.Upstream{Workload: workloadInfo(d.Workload)}
	if d.Service != nil {
		up.Service = d.Service.Hostname
	}
	if d.Kind == state.Passthrough || d.Protocol != state.HBONE {
		up.Passthrough = true
		return up, nil
	}
	up.NextHop, up.Authority, up.Identity = d.Address, d.Authority.String(), d.Identity
	return up, nil
}

func (r meshResolver) Inbound(_ context.Context, c proxy.InboundConn) (proxy.Decision, error) {
	v := r.st.Check(state.ConnInfo{SourceIdentity: c.SourceIdentity, Source: c.Source, Destination: c.Destination})
	d := proxy.Decision{Allow: v.Allowed, Policy: v.Policy}
	if d.Policy == "" {
		d.Policy = v.Reason.String()
	}
	d.Source = workloadInfo(r.st.WorkloadByAddress("", c.Source.Addr()))
	return d, nil
}

func workloadInfo(w *state.Workload) proxy.WorkloadInfo {
	if w == nil {
		return proxy.WorkloadInfo{}
	}
	name := w.WorkloadName
	if name == "" {
		name = w.Name
	}
	return proxy.WorkloadInfo{Name: name, Namespace: w.Namespace, Identity: w.Identity()}
}
