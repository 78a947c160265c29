package l7bench

import (
	"bytes"
	"net/netip"
	"text/template"

	"github.com/ambientlite/mesh/bench/l4bench"
)

// The peer: HAProxy (Debian's package) doing what the waypoint does with
// the route, as an HTTP reverse proxy in the waypoint's pod: requests to
// reviews split 90/10 between the v1 and v2 pods by weighted round robin.
// Two variants:
//
//   - "haproxy": plain HTTP on both hops (client → HAProxy → app on its
//     port left out of capture). One process, no TLS: the L7 work alone.
//   - "haproxy-mtls": mutual TLS 1.3 on both hops, as the mesh has it: a
//     TCP-mode sidecar in the client pod originates TLS with the client's
//     certificate, the L7 proxy terminates it (requiring a certificate of
//     the mesh CA), splits, and originates TLS with the waypoint's
//     certificate to a TCP-mode sidecar in each server pod, which
//     terminates it and forwards to the app on 127.0.0.1. Four processes
//     where the mesh path has three (two ztunnels and the waypoint).
//
// Like the waypoint, the L7 proxy adds x-forwarded-for and an x-request-id
// (a UUID v4 when absent) and keeps connections to the backends alive.
// HAProxy checks the peer's chain against the mesh root, not its SPIFFE
// identity (HAProxy 2.6 cannot match a URI SAN). It logs nothing (no log
// directive); the waypoint logs every request at its default level.

// haproxyConfig is one HAProxy process's configuration.
type haproxyConfig struct {
	// Mode is "http" (the L7 proxy) or "tcp" (the mTLS variant's sidecars).
	Mode   string
	Listen netip.AddrPort
	// ListenTLS terminates mutual TLS on Listen; ServerTLS originates it to
	// the servers. Both use Cert (certificate and key) and CA (the mesh
	// root), TLS 1.3 with Suite only.
	ListenTLS, ServerTLS bool
	Cert, CA, Suite      string
	Servers              []haproxyServer
}

// haproxyServer is a backend server; a zero Weight is HAProxy's default.
type haproxyServer struct {
	Name   string
	Addr   netip.AddrPort
	Weight int
}

// peerProcess is one HAProxy process of a peer path and the pod it runs in.
type peerProcess struct {
	name string // the report's name
	file string // its configuration's file name in the run directory
	pod  string
	cfg  haproxyConfig
}

// peerProcesses are the processes of a peer path, client side first, with
// certificates from files.
func peerProcesses(path string, files meshFiles) []peerProcess {
	split := func(port uint16) []haproxyServer {
		return []haproxyServer{
			{Name: "v1", Addr: netip.AddrPortFrom(v1IP, port), Weight: 90},
			{Name: "v2", Addr: netip.AddrPortFrom(v2IP, port), Weight: 10},
		}
	}
	tlsCfg := func(c haproxyConfig, cert string) haproxyConfig {
		c.Cert, c.CA, c.Suite = cert, files.Root, l4bench.TLSSuite
		return c
	}
	switch path {
	case "haproxy":
		return []peerProcess{{name: "haproxy (L7)", file: "haproxy.cfg", pod: "waypoint",
			cfg: haproxyConfig{Mode: "http", Listen: netip.AddrPortFrom(waypointIP, portHAProxy), Servers: split(portDirect)}}}
	case "haproxy-mtls":
		lo := netip.MustParseAddr("127.0.0.1")
		sidecar := func(pod string, ip netip.Addr) peerProcess {
			return peerProcess{name: "haproxy-mtls (" + pod + " sidecar)", file: "haproxy-mtls-" + pod + ".cfg", pod: pod,
				cfg: tlsCfg(haproxyConfig{Mode: "tcp", Listen: netip.AddrPortFrom(ip, portBackendTLS), ListenTLS: true,
					Servers: []haproxyServer{{Name: "app", Addr: netip.AddrPortFrom(lo, portApp)}}}, files.Reviews)}
		}
		return []peerProcess{
			{name: "haproxy-mtls (client sidecar)", file: "haproxy-mtls-client.cfg", pod: "client",
				cfg: tlsCfg(haproxyConfig{Mode: "tcp", Listen: netip.AddrPortFrom(lo, portSidecar), ServerTLS: true,
					Servers: []haproxyServer{{Name: "l7", Addr: netip.AddrPortFrom(waypointIP, portHAProxyTLS)}}}, files.Client)},
			{name: "haproxy-mtls (L7)", file: "haproxy-mtls-l7.cfg", pod: "waypoint",
				cfg: tlsCfg(haproxyConfig{Mode: "http", Listen: netip.AddrPortFrom(waypointIP, portHAProxyTLS), ListenTLS: true, ServerTLS: true,
					Servers: split(portBackendTLS)}, files.Waypoint)},
			sidecar("v1", v1IP),
			sidecar("v2", v2IP),
		}
	}
	return nil
}

var haproxyTemplate = template.Must(template.New("haproxy").Parse(`# l7bench: HAProxy, {{.Mode}} mode, rendered by bench/l7bench.
global
	maxconn 4096
{{- if or .ListenTLS .ServerTLS}}
	ssl-default-bind-options ssl-min-ver TLSv1.3
	ssl-default-bind-ciphersuites {{.Suite}}
	ssl-default-server-options ssl-min-ver TLSv1.3
	ssl-default-server-ciphersuites {{.Suite}}
{{- end}}

defaults
	mode {{.Mode}}
	timeout connect 5s
	timeout client 1m
	timeout server 1m
{{- if eq .Mode "http"}}
	option forwardfor
{{- end}}

frontend in
	bind {{.Listen}}{{if .ListenTLS}} ssl crt {{.Cert}} ca-file {{.CA}} verify required{{end}}
{{- if eq .Mode "http"}}
	http-request set-header x-request-id %[uuid] unless { req.hdr(x-request-id) -m found }
{{- end}}
	default_backend out

backend out
{{- if gt (len .Servers) 1}}
	balance roundrobin
{{- end}}
{{- range .Servers}}
	server {{.Name}} {{.Addr}}{{if $.ServerTLS}} ssl crt {{$.Cert}} ca-file {{$.CA}} verify required{{end}}{{if .Weight}} weight {{.Weight}}{{end}}
{{- end}}
`))

func (c haproxyConfig) render() (string, error) {
	var b bytes.Buffer
	err := haproxyTemplate.Execute(&b, c)
	return b.String(), err
}
