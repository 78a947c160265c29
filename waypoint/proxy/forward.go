package proxy

import (
	"context"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"
)

// Forwarding is httputil.ReverseProxy (hop-by-hop headers, trailers,
// streaming, 1xx and upgrades) with the waypoint's hooks: rewrite applies
// the forwarding headers and the rule's request filters, roundTrip picks an
// endpoint per attempt and retries, modifyResponse applies the response
// filters, proxyError turns failures into 503/504/413 (or gRPC statuses).

// maxRetryBackoff caps the exponential backoff between retries, as a
// multiple of the rule's backoff (Envoy's default max interval is 10x).
const maxRetryBackoff = 10

// retryDrainLimit is how much of a response that will be retried is read
// to keep its connection reusable.
const retryDrainLimit = 64 << 10

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (dp *dataPlane) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        dp.rewrite,
		Transport:      roundTripFunc(dp.roundTrip),
		ModifyResponse: dp.modifyResponse,
		ErrorHandler:   dp.proxyError,
		ErrorLog:       log.New(io.Discard, "", 0), // failures are in the access log
		BufferPool:     copyBuffers,
	}
}

// copyBuffers pools the 32 KiB buffers response bodies are copied through.
var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { return make([]byte, 32<<10) }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return b.p.Get().([]byte) }
func (b *bufferPool) Put(p []byte) { b.p.Put(p) } //nolint:staticcheck // fixed-size slices

// forward sends x's request to its target, within the rule's timeouts.
func (dp *dataPlane) forward(x *exchange, requestTimeout, backendTimeout time.Duration) {
	ctx := x.r.Context()
	if requestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	x.reqCtx, x.backendTimeout = ctx, backendTimeout
	dp.proxy.ServeHTTP(x.w, x.r.WithContext(context.WithValue(ctx, exchangeKey{}, x)))
}

// rewrite is ReverseProxy.Rewrite: the forwarding headers, then the rule's
// request filters (header modifiers, URL rewrite).
func (dp *dataPlane) rewrite(pr *httputil.ProxyRequest) {
	x := exchangeFrom(pr.In.Context())
	in, out := pr.In, pr.Out
	out.URL.Scheme = "http"
	out.URL.RawQuery = in.URL.RawQuery // as sent: the waypoint is not the one to clean it
	out.Host = in.Host

	// The waypoint is one more hop: earlier x-forwarded-* are kept (the
	// client's ztunnel does not strip them either), the client is appended.
	client := ""
	if host, _, err := net.SplitHostPort(x.tc.RemoteAddr().String()); err == nil {
		client = host
	}
	if prior := in.Header.Values(headerXFF); len(prior) > 0 {
		client = strings.Join(prior, ", ") + ", " + client
	}
	out.Header.Set(headerXFF, client)
	if p := in.Header.Values(headerXFProto); len(p) > 0 {
		out.Header[headerXFProto] = p
	} else {
		out.Header.Set(headerXFProto, "http")
	}
	if h := in.Header.Values(headerXFHost); len(h) > 0 {
		out.Header[headerXFHost] = h
	}
	if v := in.Header.Values("Forwarded"); len(v) > 0 {
		out.Header["Forwarded"] = v
	}
	if x.rule != nil {
		x.rule.RewriteRequest(out, x.backend)
	}
}

// roundTrip is the proxy's transport: attempts, each to an endpoint picked
// for it, retried as the rule says: connection failures, backend timeouts
// and resets before a response always, responses whose status is in the
// rule's codes; never once the body outgrew the retry buffer, nor past the
// request timeout. Without a retry policy there is one attempt.
func (dp *dataPlane) roundTrip(out *http.Request) (*http.Response, error) {
	x := exchangeFrom(out.Context())
	retry := (*retryPolicy)(nil)
	if x.rule != nil && x.rule.Retry != nil {
		retry = &retryPolicy{attempts: x.rule.Retry.Attempts, backoff: x.rule.Retry.Backoff, retryable: x.rule.Retry.Retryable}
	}
	for n := 1; ; n++ {
		x.attempts = n
		resp, err := dp.attempt(x, out)
		canRetry := retry != nil && n <= retry.attempts && x.body.replayable() && x.reqCtx.Err() == nil
		if err == nil {
			if retry == nil || !retry.retryable(resp.StatusCode) {
				return resp, nil
			}
			if !canRetry {
				if n > 1 {
					x.flag = flagRetryLimit
				}
				return resp, nil
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, retryDrainLimit))
			resp.Body.Close()
		} else {
			var ue *upstreamError
			if !canRetry || !errors.As(err, &ue) || !ue.retryable {
				return nil, err
			}
		}
		dp.m.retries.Inc()
		if !sleepCtx(x.reqCtx, retry.wait(n)) {
			return nil, x.classify(x.reqCtx, x.reqCtx.Err())
		}
	}
}

// retryPolicy is a rule's router.Retry, as roundTrip uses it.
type retryPolicy struct {
	attempts  int // retries after the first attempt
	backoff   time.Duration
	retryable func(status int) bool
}

// wait is the pause before retry n (1, 2, ...): the backoff doubled for
// each retry, capped at maxRetryBackoff times it, plus up to half of that
// at random, so that clients failing together do not retry together.
func (p *retryPolicy) wait(n int) time.Duration {
	d := p.backoff
	for i := 1; i < n && d < maxRetryBackoff*p.backoff; i++ {
		d *= 2
	}
	d = min(d, maxRetryBackoff*p.backoff)
	if d <= 0 {
		return 0
	}
	return d + rand.N(d/2+1)
}

// sleepCtx waits d, or until ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// attempt sends one attempt to an endpoint of x's target.
func (dp *dataPlane) attempt(x *exchange, out *http.Request) (*http.Response, error) {
	d, err := dp.resolve(x.target, x.caller.Identity.Namespace)
	if err != nil {
		return nil, &upstreamError{status: http.StatusServiceUnavailable, flag: flagNoHealthy, err: err}
	}
	x.dest = &d
	ctx, cancel := out.Context(), context.CancelFunc(func() {})
	if x.backendTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, x.backendTimeout)
	}
	req := out.Clone(context.WithValue(ctx, dialKey{}, &d))
	req.URL.Host = hostOf(d)
	req.GetBody = nil
	var body *tapReader
	if x.body != nil {
		body = x.body.reader(true)
		req.Body = body
	} else {
		req.Body = nil
	}
	tr := dp.h1
	if x.target.h2 {
		tr = dp.h2
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		cancel()
		if body != nil {
			body.Close() // a retry replays what it read
		}
		return nil, x.classify(ctx, err)
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgrade (WebSocket): ReverseProxy needs the writable body.
		resp.Body = &upgradedBody{ReadWriteCloser: rwc, cancel: cancel}
		return resp, nil
	}
	resp.Body = &attemptBody{ReadCloser: resp.Body, ctx: ctx, cancel: cancel, x: x}
	return resp, nil
}

// upgradedBody is the connection of an upgraded response; closing it ends
// the attempt's context.
type upgradedBody struct {
	io.ReadWriteCloser
	cancel context.CancelFunc
}

func (b *upgradedBody) Close() error {
	err := b.ReadWriteCloser.Close()
	b.cancel()
	return err
}

// classify turns an attempt's failure into how to answer it. actx is the
// attempt's context (with the backend timeout).
func (x *exchange) classify(actx context.Context, err error) error {
	var ue *upstreamError
	switch {
	case x.lb != nil && x.lb.tooLarge.Load():
		return &upstreamError{status: http.StatusRequestEntityTooLarge, flag: flagTooLarge, err: errBodyTooLarge}
	case x.r.Context().Err() != nil:
		return &upstreamError{status: 0, flag: flagDownstream, err: x.r.Context().Err()}
	case errors.Is(x.reqCtx.Err(), context.DeadlineExceeded):
		return &upstreamError{status: http.StatusGatewayTimeout, flag: flagTimeout, err: errors.New("request timeout")}
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return &upstreamError{status: http.StatusGatewayTimeout, flag: flagTimeout, retryable: true, err: errors.New("backend request timeout")}
	case errors.As(err, &ue):
		return ue
	}
	return &upstreamError{status: http.StatusServiceUnavailable, flag: flagUpstreamReset, retryable: true, err: err}
}

// attemptBody is the body of the response being forwarded: closing it ends
// the attempt's context; a read cut by the backend timeout marks the
// request timed out.
type attemptBody struct {
	io.ReadCloser
	ctx    context.Context
	cancel context.CancelFunc
	x      *exchange
}

func (b *attemptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() == context.DeadlineExceeded {
		b.x.flag = flagTimeout
	}
	return n, err
}

func (b *attemptBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// modifyResponse is ReverseProxy.ModifyResponse: the rule's and the
// backend's response header filters, and CORS headers for an allowed
// origin.
func (dp *dataPlane) modifyResponse(resp *http.Response) error {
	x := exchangeFrom(resp.Request.Context())
	if x.rule != nil {
		x.rule.RewriteResponse(resp.Header, x.backend)
		if x.rule.CORS != nil {
			x.rule.CORS.Apply(x.r, resp.Header)
		}
	}
	return nil
}

// proxyError is ReverseProxy.ErrorHandler: the last attempt failed.
func (dp *dataPlane) proxyError(_ http.ResponseWriter, out *http.Request, err error) {
	x := exchangeFrom(out.Context())
	x.err = err
	var ue *upstreamError
	if !errors.As(err, &ue) {
		ue = &upstreamError{status: http.StatusBadGateway, flag: flagUpstreamReset, err: err}
	}
	if ue.status == 0 { // the client went away: nothing to answer
		x.flag = ue.flag
		return
	}
	x.reply(ue.status, ue.flag, replyText(ue))
}

// replyText is the body of a locally generated error.
func replyText(e *upstreamError) string {
	switch e.flag {
	case flagNoHealthy:
		return "no healthy endpoint"
	case flagUpstreamConnect:
		return "upstream connect failure"
	case flagTimeout:
		return "upstream request timeout"
	case flagTooLarge:
		return "request body too large"
	}
	return "upstream reset before response"
}
