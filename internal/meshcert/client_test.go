package meshcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/istiod-lite/ca"
)

func TestFetchIssuesIdentity(t *testing.T) {
	tc := startCA(t, nil)
	for _, c := range []struct {
		name    string
		token   string
		mod     func(*Config)
		id      hbone.Identity
		wantTTL time.Duration
	}{
		{name: "own identity, default TTL", token: waypointToken, id: waypointID, wantTTL: DefaultTTL},
		{name: "own identity, 1h", token: waypointToken, mod: func(c *Config) { c.TTL = time.Hour }, id: waypointID, wantTTL: time.Hour},
		{name: "impersonating a pod on the node", token: ztunnelToken, mod: func(c *Config) { c.Impersonate = true }, id: cartID, wantTTL: DefaultTTL},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := time.Now()
			cert, err := tc.client(t, c.token, c.mod).Fetch(context.Background(), c.id)
			if err != nil {
				t.Fatal(err)
			}
			leaf := cert.TLS.Leaf
			var sans []string
			for _, u := range leaf.URIs {
				sans = append(sans, u.String())
			}
			if diff := cmp.Diff([]string{c.id.String()}, sans); diff != "" {
				t.Errorf("URI SANs (-want +got):\n%s", diff)
			}
			if cert.Identity != c.id {
				t.Errorf("Identity = %v, want %v", cert.Identity, c.id)
			}
			// Self-signed CA: the chain served is the leaf alone.
			if len(cert.TLS.Certificate) != 1 {
				t.Errorf("TLS chain has %d certificates, want 1 (the leaf; the root stays out)", len(cert.TLS.Certificate))
			}
			key, ok := cert.TLS.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || key.Curve != elliptic.P256() {
				t.Errorf("private key %T, want ECDSA P-256", cert.TLS.PrivateKey)
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.authority.Roots(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("leaf does not chain to the CA root: %v", err)
				}
			}
			if got := leaf.NotAfter.Sub(before); got < c.wantTTL-time.Minute || got > c.wantTTL+time.Minute {
				t.Errorf("lifetime from now %v, want about %v", got, c.wantTTL)
			}
			if got, want := cert.RenewAt(), leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2); !got.Equal(want) {
				t.Errorf("RenewAt = %v, want the half-life %v", got, want)
			}
		})
	}
}

// TestFetchRefused checks that each way of getting it wrong ends in an error
// that says what was wrong.
func TestFetchRefused(t *testing.T) {
	tc := startCA(t, nil)
	otherCA, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherRoots := tc.dir + "/other-root.pem"
	writeFile(t, otherRoots, string(otherCA.RootsPEM()))

	for _, c := range []struct {
		name     string
		token    string
		mod      func(*Config)
		id       hbone.Identity
		wantCode codes.Code
		wantMsg  []string
	}{
		{
			name: "wrong token", token: "stolen", id: waypointID,
			wantCode: codes.Unauthenticated,
			wantMsg:  []string{"Unauthenticated", "istio-token-", waypointID.String()},
		},
		{
			name: "server certificate not trusted", token: waypointToken, id: waypointID,
			mod:      func(c *Config) { c.RootCertFile = otherRoots },
			wantCode: codes.Unavailable,
			wantMsg:  []string{"not trusted", otherRoots, caServerName},
		},
		{
			name: "server name not in the CA's certificate", token: waypointToken, id: waypointID,
			mod:      func(c *Config) { c.ServerName = "evil.example" },
			wantCode: codes.Unavailable,
			wantMsg:  []string{"not trusted", "evil.example"},
		},
		{
			name: "another identity without impersonation", token: waypointToken, id: cartID,
			wantCode: codes.PermissionDenied,
			wantMsg:  []string{"PermissionDenied", "not the identity asked for"},
		},
		{
			name: "impersonating a pod on another node", token: ztunnelToken, id: billingID,
			mod:      func(c *Config) { c.Impersonate = true },
			wantCode: codes.PermissionDenied,
			wantMsg:  []string{"PermissionDenied", "node account"},
		},
		{
			name: "impersonation by a workload", token: waypointToken, id: cartID,
			mod:      func(c *Config) { c.Impersonate = true },
			wantCode: codes.PermissionDenied,
		},
		{
			name: "TTL above the CA's maximum", token: waypointToken, id: waypointID,
			mod:      func(c *Config) { c.TTL = 365 * 24 * time.Hour },
			wantCode: codes.InvalidArgument,
		},
		{
			name: "no token file", token: waypointToken, id: waypointID,
			mod:      func(c *Config) { c.TokenFile = tc.dir + "/missing-token" },
			wantCode: codes.Unknown,
			wantMsg:  []string{"service-account token", "missing-token"},
		},
		{
			name: "no root file", token: waypointToken, id: waypointID,
			mod:      func(c *Config) { c.RootCertFile = tc.dir + "/missing-root.pem" },
			wantCode: codes.Unknown,
			wantMsg:  []string{"mesh roots", "missing-root.pem"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := tc.client(t, c.token, c.mod).Fetch(context.Background(), c.id)
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			t.Logf("error: %v", err)
			if got := status.Code(err); got != c.wantCode {
				t.Errorf("status code %v, want %v (err: %v)", got, c.wantCode, err)
			}
			for _, m := range c.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

// TestCheckResponse covers what a correct CA never sends: the client must
// still refuse it.
func TestCheckResponse(t *testing.T) {
	a, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.NewSelfSigned(ca.Config{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{cfg: Config{RootCertFile: "root-cert.pem"}.withDefaults()}
	ctx := context.Background()
	caID := ca.Identity{Namespace: waypointNS, ServiceAccount: waypointSA}

	key, csr, err := newCSR(waypointID)
	if err != nil {
		t.Fatal(err)
	}
	good, err := a.Sign(ctx, csr, caID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fromOther, err := other.Sign(ctx, csr, caID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCSR, err := newCSR(waypointID)
	if err != nil {
		t.Fatal(err)
	}
	forOtherKey, err := a.Sign(ctx, otherCSR, caID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cartKey, cartCSR, err := newCSR(cartID)
	if err != nil {
		t.Fatal(err)
	}
	forCart, err := a.Sign(ctx, cartCSR, ca.Identity{Namespace: onNodePodNS, ServiceAccount: onNodePodSA}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name    string
		chain   []string
		key     *ecdsa.PrivateKey
		wantErr string // "" = accepted
	}{
		{name: "good", chain: good, key: key},
		{name: "leaf only, no root element", chain: good[:1], key: key},
		{name: "leaf and root in one element", chain: []string{good[0] + good[1]}, key: key},
		{name: "empty", chain: nil, key: key, wantErr: "no certificate"},
		{name: "not PEM", chain: []string{"hello"}, key: key, wantErr: "element 0: no PEM certificate"},
		{name: "a key, not a certificate", chain: []string{string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}))}, key: key, wantErr: `unexpected PEM block "PRIVATE KEY"`},
		{name: "another CA", chain: fromOther, key: key, wantErr: "does not chain to the mesh roots"},
		{name: "another key", chain: forOtherKey, key: key, wantErr: "not for the key of the request"},
		{name: "another identity", chain: forCart, key: cartKey, wantErr: "URI SANs are"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := c.checkResponse(tt.chain, tt.key, waypointID, a.Roots())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr == "":
				if len(cert.TLS.Certificate) != 1 || cert.TLS.Leaf == nil {
					t.Errorf("chain %d certificates, leaf %v; want the leaf alone", len(cert.TLS.Certificate), cert.TLS.Leaf)
				}
			case err == nil:
				t.Fatalf("accepted, want an error with %q", tt.wantErr)
			case !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Address: "istiod.istio-system.svc:15012"}, ""},
		{Config{Address: "10.0.0.1:15012", TTL: time.Hour}, ""},
		{Config{}, "want host:port"},
		{Config{Address: "istiod"}, "want host:port"},
		{Config{Address: ":15012"}, "want host:port"},
		{Config{Address: "istiod:http"}, "want host:port"},
		{Config{Address: "istiod:1", TTL: time.Millisecond}, "TTL"},
	} {
		err := c.cfg.Validate()
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Validate() = %v, want %q", c.cfg, err, c.want)
		}
	}
	if got := (Config{Address: "istiod.istio-system.svc:15012"}).withDefaults().ServerName; got != "istiod.istio-system.svc" {
		t.Errorf("default ServerName %q, want the host of Address", got)
	}
}

// TestTokenReadEveryCall: a rotated token file is used by the next call.
func TestTokenReadEveryCall(t *testing.T) {
	tc := startCA(t, nil)
	cl := tc.client(t, "expired-token", nil)
	if _, err := cl.Fetch(context.Background(), waypointID); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("with a bad token: %v, want Unauthenticated", err)
	}
	if err := os.WriteFile(tokenFile(cl), []byte(waypointToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Fetch(context.Background(), waypointID); err != nil {
		t.Fatalf("after the token was rotated: %v", err)
	}
}
