package l4bench

import (
	"context"
	"crypto/x509"
	"net/netip"
	"testing"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/proxy"
)

func TestStaticResolver(t *testing.T) {
	r := staticResolver{self: clientID, peerID: serverID, allow: serverID, peer: serverIP}
	up, err := r.Outbound(context.Background(), proxy.Pod{}, netip.AddrPortFrom(serverIP, portHTTP))
	if err != nil {
		t.Fatal(err)
	}
	if up.Passthrough || up.NextHop != netip.AddrPortFrom(serverIP, capture.DefaultHBONEPort) || up.Identity != serverID {
		t.Errorf("outbound to the peer: %+v, want HBONE to its :15008 expecting %s", up, serverID)
	}
	if _, err := r.Outbound(context.Background(), proxy.Pod{}, netip.MustParseAddrPort("10.254.0.9:80")); err == nil {
		t.Error("outbound elsewhere: no error")
	}

	srv := staticResolver{self: serverID, peerID: clientID, allow: clientID, peer: clientIP}
	other := hbone.Identity{TrustDomain: "cluster.local", Namespace: "bench-client", ServiceAccount: "intruder"}
	for _, tc := range []struct {
		name string
		in   proxy.InboundConn
		want bool
	}{
		{"the client's identity", proxy.InboundConn{SourceIdentity: clientID}, true},
		{"another identity", proxy.InboundConn{SourceIdentity: other}, false},
		{"plaintext", proxy.InboundConn{Plaintext: true}, false},
	} {
		d, err := srv.Inbound(context.Background(), tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != tc.want {
			t.Errorf("%s: allow = %v, want %v", tc.name, d.Allow, tc.want)
		}
	}
}

func TestLoadCertificates(t *testing.T) {
	certs, err := writeCerts(t.TempDir(), clientID, serverID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadCertificates(serverID, certs.Server, certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Certificate(context.Background(), serverID)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := hbone.ParseIdentity(cert.Leaf.URIs[0].String()); err != nil || got != serverID {
		t.Errorf("leaf identity %v (%v), want %s", cert.Leaf.URIs, err, serverID)
	}
	if _, err := cert.Leaf.Verify(x509VerifyOptions(c)); err != nil {
		t.Errorf("the leaf does not chain to the root: %v", err)
	}
	if _, err := c.Certificate(context.Background(), clientID); err == nil {
		t.Error("a certificate for another identity")
	}
}

func x509VerifyOptions(c *fileCertificates) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: c.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
}
