package meshecho

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// maxReplyBody bounds how much of a reply the client reads.
const maxReplyBody = 4 << 20

// httpCaller makes HTTP/1.1 or h2c requests.
type httpCaller struct {
	// newTransport makes a transport; shared is the one reused across
	// requests, nil when every request gets a transport (and so a
	// connection) of its own.
	newTransport func() *http.Transport
	shared       *http.Transport
	url          string
	method       string
	body         string
	header       http.Header
	host         string
}

func newHTTPCaller(cfg ClientConfig, u *url.URL, headers [][2]string, h2c bool) *httpCaller {
	target := *u
	target.Scheme = "http"
	c := &httpCaller{
		newTransport: func() *http.Transport {
			var protocols http.Protocols
			if h2c {
				protocols.SetUnencryptedHTTP2(true) // without HTTP1: prior knowledge
			} else {
				protocols.SetHTTP1(true)
			}
			return &http.Transport{
				DialContext:         cfg.Dial,
				DisableKeepAlives:   cfg.DisableKeepAlive,
				MaxIdleConnsPerHost: cfg.Concurrency,
				Protocols:           &protocols,
			}
		},
		url:    target.String(),
		method: cfg.Method,
		body:   cfg.Body,
		header: make(http.Header),
	}
	if !cfg.DisableKeepAlive {
		c.shared = c.newTransport()
	}
	for _, h := range headers {
		if strings.EqualFold(h[0], "Host") {
			c.host = h[1]
			continue
		}
		c.header.Add(h[0], h[1])
	}
	return c
}

func (c *httpCaller) call(ctx context.Context) result {
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, body)
	if err != nil {
		return result{err: err}
	}
	req.Header = c.header.Clone()
	if c.host != "" {
		req.Host = c.host
	}
	tr := c.shared
	if tr == nil {
		// A transport per request: with keep-alives off, a shared one may
		// still hand an h2c connection dialed for one request to another.
		tr = c.newTransport()
		defer tr.CloseIdleConnections()
	}
	client := &http.Client{
		Transport: tr,
		// Report redirects as they are instead of following them.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody))
	if err != nil {
		return result{status: resp.StatusCode, hasStatus: true, err: fmt.Errorf("reading reply: %w", err)}
	}
	fields := replyFields(string(b))
	res := result{status: resp.StatusCode, hasStatus: true, body: string(b),
		version: fields["ServiceVersion"], hostname: fields["Hostname"]}
	// Replies that are not echo bodies (/healthz) still carry the headers.
	if res.version == "" {
		res.version = resp.Header.Get(HeaderVersion)
	}
	if res.hostname == "" {
		res.hostname = resp.Header.Get(HeaderHostname)
	}
	return res
}

func (c *httpCaller) close() {
	if c.shared != nil {
		c.shared.CloseIdleConnections()
	}
}

// grpcCaller calls meshecho.Echo/Echo.
type grpcCaller struct {
	target  string
	opts    []grpc.DialOption
	shared  *grpc.ClientConn // nil with DisableKeepAlive
	md      metadata.MD
	message string
}

func newGRPCCaller(cfg ClientConfig, u *url.URL, headers [][2]string) (*grpcCaller, error) {
	c := &grpcCaller{
		// passthrough: dial host:port as given, like the other schemes.
		target: "passthrough:///" + u.Host,
		opts: []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return cfg.Dial(ctx, "tcp", addr)
			}),
		},
		md:      metadata.MD{},
		message: cfg.Message,
	}
	for _, h := range headers {
		if strings.EqualFold(h[0], "Host") {
			c.opts = append(c.opts, grpc.WithAuthority(h[1]))
			continue
		}
		c.md.Append(h[0], h[1])
	}
	if !cfg.DisableKeepAlive {
		conn, err := grpc.NewClient(c.target, c.opts...)
		if err != nil {
			return nil, fmt.Errorf("grpc client: %w", err)
		}
		c.shared = conn
	}
	return c, nil
}

func (c *grpcCaller) call(ctx context.Context) result {
	conn := c.shared
	if conn == nil {
		var err error
		conn, err = grpc.NewClient(c.target, c.opts...)
		if err != nil {
			return result{err: fmt.Errorf("grpc client: %w", err)}
		}
		defer conn.Close()
	}
	req, err := structpb.NewStruct(map[string]any{grpcFieldMessage: c.message})
	if err != nil {
		return result{err: err}
	}
	out := new(structpb.Struct)
	var header metadata.MD
	err = conn.Invoke(metadata.NewOutgoingContext(ctx, c.md), EchoMethod, req, out, grpc.Header(&header))
	res := result{status: int(status.Code(err)), hasStatus: true, err: err}
	if err == nil {
		f := out.GetFields()
		res.version = f["ServiceVersion"].GetStringValue()
		res.hostname = f["Hostname"].GetStringValue()
		res.body = structText(out)
	}
	// Failed calls still say who answered in the header metadata.
	if res.version == "" {
		res.version = first(header.Get(HeaderVersion))
	}
	if res.hostname == "" {
		res.hostname = first(header.Get(HeaderHostname))
	}
	return res
}

func (c *grpcCaller) close() {
	if c.shared != nil {
		c.shared.Close()
	}
}

// structText renders a gRPC reply like an HTTP echo body: Key=Value lines
// sorted by key, one line per list element.
func structText(s *structpb.Struct) string {
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		v := s.GetFields()[k]
		if l := v.GetListValue(); l != nil {
			for _, e := range l.GetValues() {
				fmt.Fprintf(&b, "%s=%s\n", k, valueText(e))
			}
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", k, valueText(v))
	}
	return b.String()
}

func valueText(v *structpb.Value) string {
	if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		return s.StringValue
	}
	return fmt.Sprint(v.AsInterface())
}

// tcpCaller opens a connection per request, reads the banner, sends the
// message, half-closes and checks that the same bytes come back.
type tcpCaller struct {
	addr    string
	message string
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
}

func (c *tcpCaller) call(ctx context.Context) result {
	conn, err := c.dial(ctx, "tcp", c.addr)
	if err != nil {
		return result{err: err}
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var res result
	br := bufio.NewReader(conn)
	banner, err := br.ReadString('\n')
	if err != nil {
		res.err = fmt.Errorf("reading banner: %w", err)
		return res
	}
	if res.version, res.hostname, err = parseBanner(banner); err != nil {
		res.err = err
		return res
	}
	if _, err := io.WriteString(conn, c.message); err != nil {
		res.err = fmt.Errorf("sending: %w", err)
		return res
	}
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		res.err = errors.New("connection cannot half-close")
		return res
	}
	if err := cw.CloseWrite(); err != nil {
		res.err = fmt.Errorf("half-closing: %w", err)
		return res
	}
	echo, err := io.ReadAll(io.LimitReader(br, int64(len(c.message))+maxReplyBody))
	res.body = banner + string(echo)
	if err != nil {
		res.err = fmt.Errorf("reading echo: %w", err)
		return res
	}
	switch {
	case len(echo) != len(c.message):
		res.err = fmt.Errorf("echo mismatch: sent %d bytes, got %d back", len(c.message), len(echo))
	case string(echo) != c.message:
		res.err = fmt.Errorf("echo mismatch: the %d bytes came back changed", len(echo))
	}
	return res
}

func (c *tcpCaller) close() {}
