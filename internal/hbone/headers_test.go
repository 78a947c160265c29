package hbone

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Identity
		wantErr bool
	}{
		{in: "spiffe://cluster.local/ns/default/sa/sleep", want: Identity{"cluster.local", "default", "sleep"}},
		{in: "spiffe://td.example/ns/a/sa/b", want: Identity{"td.example", "a", "b"}},
		{in: "spiffe://cluster.local/ns/default/sa/", wantErr: true},
		{in: "spiffe://cluster.local/ns//sa/sleep", wantErr: true},
		{in: "spiffe:///ns/default/sa/sleep", wantErr: true},
		{in: "spiffe://cluster.local/sa/sleep/ns/default", wantErr: true},
		{in: "spiffe://cluster.local/ns/default/sa/sleep/extra", wantErr: true},
		{in: "https://cluster.local/ns/default/sa/sleep", wantErr: true},
		{in: "", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseIdentity(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseIdentity(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !tc.wantErr && got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
	if s := (Identity{}).String(); s != "" {
		t.Errorf("zero Identity String() = %q, want empty", s)
	}
}

func TestPeerIdentity(t *testing.T) {
	uris := func(ss ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ss {
			u, _ := url.Parse(s)
			out = append(out, u)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		certs   []*x509.Certificate
		want    Identity
		wantErr bool
	}{
		{"one SPIFFE SAN", []*x509.Certificate{{URIs: uris("spiffe://cluster.local/ns/a/sa/b")}}, Identity{"cluster.local", "a", "b"}, false},
		{"SPIFFE among other URIs", []*x509.Certificate{{URIs: uris("https://x.example/", "spiffe://cluster.local/ns/a/sa/b")}}, Identity{"cluster.local", "a", "b"}, false},
		{"two SPIFFE SANs", []*x509.Certificate{{URIs: uris("spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/c")}}, Identity{}, true},
		{"no SPIFFE SAN", []*x509.Certificate{{URIs: uris("https://x.example/")}}, Identity{}, true},
		{"no certificate", nil, Identity{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PeerIdentity(&tls.ConnectionState{PeerCertificates: tc.certs})
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestForwarded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client netip.AddrPort
		want   string
	}{
		{"IPv4", netip.MustParseAddrPort("10.0.0.1:1234"), `for="10.0.0.1:1234"`},
		{"IPv6 in brackets", netip.MustParseAddrPort("[::1]:80"), `for="[::1]:80"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := formatForwarded(tc.client)
			if got != tc.want {
				t.Errorf("formatForwarded = %s, want %s", got, tc.want)
			}
			if back := parseForwardedFor(got); back != tc.client {
				t.Errorf("parseForwardedFor(%s) = %v, want %v", got, back, tc.client)
			}
		})
	}
	for _, tc := range []struct {
		in   string
		want netip.AddrPort
	}{
		{`for=192.0.2.60;proto=http;by=203.0.113.43`, netip.MustParseAddrPort("192.0.2.60:0")},
		{`For="[2001:db8:cafe::17]:4711"`, netip.MustParseAddrPort("[2001:db8:cafe::17]:4711")},
		{`proto=https; for="10.1.1.1:9", for=10.2.2.2`, netip.MustParseAddrPort("10.1.1.1:9")},
		{`for="_hidden"`, netip.AddrPort{}},
		{`for=unknown`, netip.AddrPort{}},
		{``, netip.AddrPort{}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := parseForwardedFor(tc.in); got != tc.want {
				t.Errorf("parseForwardedFor(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestTraceparent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := validTraceparent(tc.in); got != tc.want {
				t.Errorf("validTraceparent(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	seen := map[string]bool{}
	for range 100 {
		tp := newTraceparent()
		if !validTraceparent(tp) {
			t.Fatalf("newTraceparent() = %q, not valid", tp)
		}
		if seen[tp] {
			t.Fatalf("newTraceparent() repeated %q", tp)
		}
		seen[tp] = true
	}
}
