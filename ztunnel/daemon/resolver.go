package daemon

import (
	"context"
	"crypto/x509"
	"net/netip"
	"os"

	"github.com/ambientlite/mesh/ztunnel/certs"

	"github.com/ambientlite/mesh/ztunnel/proxy"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// resolver answers the proxy's questions from the state store.
type resolver struct {
	st      *state.Store
	network string
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

func (r resolver) Outbound(ctx context.Context, src proxy.Pod, dst netip.AddrPort) (proxy.Upstream, error) {
	var sw *state.Workload
	for _, ip := range src.IPs {
		if sw = r.st.SourceWorkload(ip); sw != nil {
			break
		}
	}
	d, err := r.st.DestinationFor(r.network, dst.Addr(), dst.Port(), sw)
	if err != nil {
		return proxy.Upstream{}, err
	}
	up := proxy.Upstream{Workload: workloadInfo(d.Workload)}
	if d.Service != nil {
		up.Service = d.Service.Hostname
	}
	if d.Kind == state.Passthrough || d.Protocol != state.HBONE {
		// Outside the mesh: plain TCP to where the app was going (a
		// service VIP is still balanced by kube-proxy in the pod).
		up.Passthrough = true
		return up, nil
	}
	up.NextHop = d.Address
	up.Authority = d.Authority.String()
	up.Identity = d.Identity
	return up, nil
}

func (r resolver) Inbound(ctx context.Context, c proxy.InboundConn) (proxy.Decision, error) {
	allowed, policy := r.st.Authorize(state.ConnInfo{
		SourceIdentity: c.SourceIdentity,
		Source:         c.Source,
		Destination:    c.Destination,
	})
	dec := proxy.Decision{Allow: allowed, Policy: policy}
	if w := r.st.WorkloadByAddress(r.network, c.Source.Addr()); w != nil {
		dec.Source = workloadInfo(w)
	}
	return dec, nil
}

// meshCerts gives the proxy workload certificates from the manager and the
// mesh roots from the root file (ConfigMap istio-ca-root-cert), which is
// there before any certificate was fetched: after a restart, pods come back
// before their certificates do.
type meshCerts struct {
	*certs.Manager
	rootFile string
}

func (m meshCerts) Roots() *x509.CertPool {
	if b, err := os.ReadFile(m.rootFile); err == nil {
		p := x509.NewCertPool()
		if p.AppendCertsFromPEM(b) {
			return p
		}
	}
	return m.Manager.Roots()
}
