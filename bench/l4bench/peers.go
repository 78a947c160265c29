package l4bench

import (
	"bytes"
	"net/netip"
	"os/exec"
	"text/template"
)

// side is one end of a proxy pair.
type side int

const (
	clientSide side = iota // in the client pod: plaintext in on loopback, TLS out
	serverSide             // in the server pod: TLS in, plaintext to the app on loopback
)

func (s side) String() string {
	if s == clientSide {
		return "client"
	}
	return "server"
}

// TLSSuite is the one TLS 1.3 cipher suite the peers may use: the one Go's
// crypto/tls (so ztunnel) negotiates on hardware with AES instructions, so
// that every pair pays for the same record cipher.
const TLSSuite = "TLS_AES_128_GCM_SHA256"

// peerConfig is what a peer's configuration is rendered from.
type peerConfig struct {
	ServerIP netip.Addr
	Ports    peerPorts
	// AppHTTP and AppSink are the application's ports, reached on
	// 127.0.0.1 by the server-side proxy.
	AppHTTP, AppSink uint16
	// Cert is this side's certificate and key file; CA the mesh root.
	Cert, CA string
	Suite    string
}

// peer is a peer proxy pair measured against ztunnel.
type peer struct {
	name    string
	pkg     string   // the Debian package that provides it
	bins    []string // executable names, first found wins
	ports   peerPorts
	render  func(side, peerConfig) (string, error)
	command func(bin, configPath string) []string
}

var peers = []peer{
	{
		name: "haproxy", pkg: "haproxy", bins: []string{"haproxy"}, ports: haproxyPorts,
		render: renderHAProxy,
		// -db: stay in the foreground, one process (its threads: one per
		// CPU by default).
		command: func(bin, cfg string) []string { return []string{bin, "-db", "-f", cfg} },
	},
	{
		name: "stunnel", pkg: "stunnel4", bins: []string{"stunnel4", "stunnel"}, ports: stunnelPorts,
		render:  renderStunnel,
		command: func(bin, cfg string) []string { return []string{bin, cfg} },
	},
}

// lookPath returns the first of p's executables found in PATH.
func (p peer) lookPath() (string, error) {
	var firstErr error
	for _, b := range p.bins {
		path, err := exec.LookPath(b)
		if err == nil {
			return path, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return "", firstErr
}

// HAProxy in TCP mode: the client side originates TLS with the client
// certificate and verifies the server's chain against the mesh root; the
// server side terminates TLS, requires and verifies a client certificate, and
// forwards to the app on loopback. Neither side can match a SPIFFE URI SAN
// (no such check in HAProxy 2.6): chain verification only.
var haproxyTemplate = template.Must(template.New("haproxy").Parse(`# l4bench: HAProxy {{.Side}} side, rendered by bench/l4bench.
global
	maxconn 4096
	ssl-default-bind-options ssl-min-ver TLSv1.3
	ssl-default-bind-ciphersuites {{.Suite}}
	ssl-default-server-options ssl-min-ver TLSv1.3
	ssl-default-server-ciphersuites {{.Suite}}

defaults
	mode tcp
	timeout connect 5s
	timeout client 1m
	timeout server 1m
{{range .Services}}
frontend {{.Name}}
	bind {{.Listen}}{{if $.Server}} ssl crt {{$.Cert}} ca-file {{$.CA}} verify required{{end}}
	default_backend {{.Name}}

backend {{.Name}}
	server {{.Name}} {{.Connect}}{{if not $.Server}} ssl crt {{$.Cert}} ca-file {{$.CA}} verify required{{end}}
{{end}}`))

// stunnel, client and server mode: TLS 1.3 only, chain verified against the
// mesh root both ways (verifyChain; the server requires a certificate), no
// name check (stunnel's checkHost looks at DNS names, not URI SANs).
// TCP_NODELAY on both sockets, as HAProxy and Go set it by default: without
// it Nagle's algorithm would add delayed-ACK waits to small requests, which
// measures a configuration slip, not the proxy.
var stunnelTemplate = template.Must(template.New("stunnel").Parse(`; l4bench: stunnel {{.Side}} side, rendered by bench/l4bench.
foreground = yes
syslog = no
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
{{range .Services}}
[{{.Name}}]
client = {{if $.Server}}no{{else}}yes{{end}}
accept = {{.Listen}}
connect = {{.Connect}}
cert = {{$.Cert}}
CAfile = {{$.CA}}
verifyChain = yes
{{- if $.Server}}
requireCert = yes
{{- end}}
sslVersionMin = TLSv1.3
ciphersuites = {{$.Suite}}
{{end}}`))

// peerService is one listener of a peer and where it forwards.
type peerService struct {
	Name, Listen, Connect string
}

// services are the two forwarded services (HTTP and sink) of one side.
func (c peerConfig) services(s side) []peerService {
	if s == clientSide {
		return []peerService{
			{Name: "http", Listen: loopback(c.Ports.ClientHTTP), Connect: hostPort(c.ServerIP, c.Ports.ServerHTTP)},
			{Name: "sink", Listen: loopback(c.Ports.ClientSink), Connect: hostPort(c.ServerIP, c.Ports.ServerSink)},
		}
	}
	return []peerService{
		{Name: "http", Listen: hostPort(c.ServerIP, c.Ports.ServerHTTP), Connect: loopback(c.AppHTTP)},
		{Name: "sink", Listen: hostPort(c.ServerIP, c.Ports.ServerSink), Connect: loopback(c.AppSink)},
	}
}

func renderHAProxy(s side, c peerConfig) (string, error) { return render(haproxyTemplate, s, c) }
func renderStunnel(s side, c peerConfig) (string, error) { return render(stunnelTemplate, s, c) }

func render(t *template.Template, s side, c peerConfig) (string, error) {
	var b bytes.Buffer
	err := t.Execute(&b, struct {
		peerConfig
		Side     side
		Server   bool
		Services []peerService
	}{c, s, s == serverSide, c.services(s)})
	return b.String(), err
}
