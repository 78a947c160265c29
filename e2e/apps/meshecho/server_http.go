package meshecho

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Request controls, as query parameters or x-echo-* headers.
const (
	controlStatus = "status" // reply with this HTTP status
	controlDelay  = "delay"  // sleep this long first (Go duration)
)

// Response headers identifying who answered.
const (
	HeaderHostname = "x-echo-hostname"
	HeaderVersion  = "x-echo-version"
)

// maxUpstreamBody bounds how much of an upstream reply is kept.
const maxUpstreamBody = 1 << 20

// HTTPHandler returns the handler served on the HTTP port: /healthz answers
// "ok", every other path echoes the request.
func (s *Server) HTTPHandler() http.Handler {
	// No ServeMux: it would redirect unclean paths instead of echoing them.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "ok\n")
			return
		}
		s.serveEcho(w, r)
	})
}

func (s *Server) httpComponent(ln net.Listener) component {
	baseCtx, cancelBase := context.WithCancel(context.Background())
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           s.HTTPHandler(),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return component{
		name: "http",
		addr: ln.Addr(),
		serve: func() error {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
		stop: func(ctx context.Context) {
			defer cancelBase()
			if err := hs.Shutdown(ctx); err != nil {
				cancelBase() // ends handlers still sleeping on a delay
				hs.Close()
			}
		},
	}
}

// echoReply is what an echo request is answered with, over HTTP as
// Key=Value lines and over gRPC as struct fields.
type echoReply struct {
	ServiceVersion string
	Hostname       string
	Namespace      string
	Method         string
	URL            string
	Host           string
	Proto          string
	RemoteAddr     string
	RequestHeaders []string // "Name: value", sorted by name
	BodyLength     int64
	StatusCode     int
	Upstreams      []upstreamReply
}

// upstreamReply is the outcome of one chained call.
type upstreamReply struct {
	URL    string
	Status int
	Body   string
	Err    error
}

// text renders the reply as the HTTP body: one Key=Value per line, then the
// upstream replies, each followed by its body indented by two spaces.
func (e *echoReply) text() string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	line("ServiceVersion", e.ServiceVersion)
	line("Hostname", e.Hostname)
	line("Namespace", e.Namespace)
	line("Method", e.Method)
	line("URL", e.URL)
	line("Host", e.Host)
	line("Proto", e.Proto)
	line("RemoteAddr", e.RemoteAddr)
	for _, h := range e.RequestHeaders {
		line("RequestHeader", h)
	}
	line("BodyLength", strconv.FormatInt(e.BodyLength, 10))
	line("StatusCode", strconv.Itoa(e.StatusCode))
	for _, u := range e.Upstreams {
		if u.Err != nil {
			fmt.Fprintf(&b, "Upstream=%s error=%s\n", u.URL, oneLine(u.Err.Error()))
			continue
		}
		fmt.Fprintf(&b, "Upstream=%s status=%d\n", u.URL, u.Status)
		body := strings.TrimRight(u.Body, "\n")
		if body == "" {
			continue
		}
		for l := range strings.SplitSeq(body, "\n") {
			b.WriteString("  ")
			b.WriteString(l)
			b.WriteString("\n")
		}
	}
	return b.String()
}

func (s *Server) serveEcho(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		s.log.Debug("reading request body", "remote", r.RemoteAddr, "error", err)
		return
	}
	reply := &echoReply{
		ServiceVersion: s.cfg.Version,
		Hostname:       s.cfg.Name,
		Namespace:      s.cfg.Namespace,
		Method:         r.Method,
		URL:            r.URL.RequestURI(),
		Host:           r.Host,
		Proto:          r.Proto,
		RemoteAddr:     r.RemoteAddr,
		RequestHeaders: headerLines(r.Header),
		BodyLength:     n,
		StatusCode:     http.StatusOK,
	}
	if s.injectFailure() {
		reply.StatusCode = s.cfg.FailCode
	} else {
		status, delay, err := parseControls(r)
		if err != nil {
			http.Error(w, "meshecho: "+err.Error(), http.StatusBadRequest)
			return
		}
		if status != 0 {
			reply.StatusCode = status
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				s.log.Debug("request cancelled during delay", "remote", r.RemoteAddr, "url", reply.URL)
				return
			}
		}
		for _, u := range s.cfg.Calls {
			up := s.callUpstream(r.Context(), r.Header, u)
			if up.Err != nil {
				reply.StatusCode = http.StatusBadGateway
			}
			reply.Upstreams = append(reply.Upstreams, up)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set(HeaderHostname, s.cfg.Name)
	h.Set(HeaderVersion, s.cfg.Version)
	w.WriteHeader(reply.StatusCode)
	io.WriteString(w, reply.text())
	s.log.Debug("http request", "method", r.Method, "url", reply.URL, "proto", r.Proto,
		"remote", r.RemoteAddr, "status", reply.StatusCode, "duration", time.Since(start))
}

// parseControls reads the status and delay controls; zero means unset.
func parseControls(r *http.Request) (status int, delay time.Duration, err error) {
	if v := control(r, controlStatus); v != "" {
		status, err = strconv.Atoi(v)
		if err != nil || status < 200 || status > 599 {
			return 0, 0, fmt.Errorf("status %q: want an HTTP status from 200 to 599", v)
		}
	}
	if v := control(r, controlDelay); v != "" {
		delay, err = time.ParseDuration(v)
		if err != nil || delay < 0 {
			return 0, 0, fmt.Errorf("delay %q: want a duration such as 150ms", v)
		}
	}
	return status, delay, nil
}

// control returns the query parameter name, else the x-echo-<name> header.
func control(r *http.Request, name string) string {
	if v := r.URL.Query().Get(name); v != "" {
		return v
	}
	return r.Header.Get("x-echo-" + name)
}

// propagated reports whether an inbound header (lower case) is copied onto
// upstream calls: request IDs, W3C and B3 trace context, baggage and the
// mesh's own x-ambient-* headers.
func propagated(name string) bool {
	switch name {
	case "x-request-id", "traceparent", "tracestate", "baggage":
		return true
	}
	return strings.HasPrefix(name, "x-b3-") || strings.HasPrefix(name, "x-ambient-")
}

// callUpstream GETs rawURL with the propagated headers of inbound.
func (s *Server) callUpstream(ctx context.Context, inbound http.Header, rawURL string) upstreamReply {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.UpstreamTimeout)
	defer cancel()
	up := upstreamReply{URL: rawURL}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		up.Err = err
		return up
	}
	for k, vs := range inbound {
		if propagated(strings.ToLower(k)) {
			req.Header[k] = append([]string(nil), vs...)
		}
	}
	resp, err := s.cfg.UpstreamClient.Do(req)
	if err != nil {
		// The Upstream= line already names the URL.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("no reply within %v: %w", s.cfg.UpstreamTimeout, err)
		}
		up.Err = err
		return up
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		up.Err = fmt.Errorf("reading reply: %w", err)
		return up
	}
	up.Status = resp.StatusCode
	up.Body = string(body)
	return up
}

// oneLine replaces line breaks so a message stays on its Key=Value line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
