package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/waypoint/router"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// tunnelKey carries a request's *tunnelConn in its context.
type tunnelKey struct{}

// withTunnel is the in-tunnel server's ConnContext: requests know the
// tunnel they came in.
func withTunnel(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tunnelConn); ok {
		return context.WithValue(ctx, tunnelKey{}, tc)
	}
	return ctx
}

// exchangeKey carries a request's *exchange to the proxy's hooks.
type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// exchange is one request on its way through the waypoint: what was
// decided, where it went, and what to report.
type exchange struct {
	dp     *dataPlane
	w      *responseRecorder
	r      *http.Request // as received (headers completed by prepare)
	tc     *tunnelConn
	start  time.Time
	grpc   bool
	caller caller

	body   *bodyTap     // nil without a body
	lb     *limitedBody // the client's body, counted
	hdrLen int64        // request line and headers, estimated

	rule           *router.Rule
	backend        *router.Backend
	target         target
	reqCtx         context.Context // the request's, with the rule's request timeout
	backendTimeout time.Duration
	dest           *state.Destination // the endpoint of the last attempt
	origin         *routeapi.Origin

	requestID, traceparent string
	attempts               int
	flag                   string
	err                    error
	spanEnd                func(status int)
}

// serveHTTP is the in-tunnel server's handler: every HTTP request found in
// a tunnel. A panic answers 500 (if nothing was sent yet) and is logged;
// it never takes the process down.
func (dp *dataPlane) serveHTTP(w http.ResponseWriter, r *http.Request) {
	tc, _ := r.Context().Value(tunnelKey{}).(*tunnelConn)
	if tc == nil { // not from a tunnel: cannot happen, the listener hands out tunnels only
		http.Error(w, "no tunnel", http.StatusInternalServerError)
		return
	}
	x := &exchange{dp: dp, w: &responseRecorder{ResponseWriter: w}, r: r, tc: tc, start: time.Now(), grpc: isGRPC(r), flag: flagNone}
	defer x.finish()
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler { // the response was cut mid-body
			if x.flag == flagNone {
				x.flag = flagUpstreamReset
			}
			panic(p)
		}
		dp.m.panics.Inc()
		x.err = fmt.Errorf("internal error: %v", p)
		dp.log.Error("request handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()),
			"method", r.Method, "path", r.URL.Path, "dst", tc.req.Authority)
		x.reply(http.StatusInternalServerError, flagInternal, "internal error")
	}()
	dp.route(x)
}

// route decides what to do with x's request and does it.
func (dp *dataPlane) route(x *exchange) {
	r := x.r
	x.prepare()
	if dp.lim.MaxRequestBody >= 0 && r.ContentLength > dp.lim.MaxRequestBody {
		x.reply(http.StatusRequestEntityTooLarge, flagTooLarge, "request body too large")
		return
	}
	if hook := dp.cfg.Authorize; hook != nil {
		if err := hook(r.Context(), r, &x.caller); err != nil {
			x.err = err
			x.reply(http.StatusForbidden, flagDenied, "access denied")
			return
		}
	}

	// Looked up per request: a keep-alive connection follows route updates.
	port := dp.cfg.Routes.lookup(x.tc.req.Destination)
	var rs *router.RuleSet
	if port != nil {
		rs = port.RuleSet(x.tc.req.Peer.Namespace)
	}
	if rs == nil {
		// No rules for this client: to the destination itself.
		proto := routeapi.Protocol_PROTOCOL_UNSPECIFIED
		if port != nil {
			proto = port.Protocol
		}
		dst := x.tc.req.Destination
		x.target = target{addr: dst, port: dst.Port(), h2: speaksH2(proto, r)}
		dp.forward(x, 0, 0)
		return
	}
	rule := rs.Match(r)
	if rule == nil {
		x.reply(http.StatusNotFound, flagNoRoute, "no route matched")
		return
	}
	x.rule, x.origin = rule, rule.Origin
	if rule.CORS != nil && rule.CORS.Preflight(r, x.w.Header()) {
		// Answered here, as the Gateway API asks (204; no backend sees it).
		x.w.WriteHeader(http.StatusNoContent)
		return
	}
	switch rule.Action {
	case router.Redirect:
		loc, status := rule.RedirectTarget(r)
		h := x.w.Header()
		rule.RewriteResponse(h, nil)
		h.Set("Location", loc)
		x.w.WriteHeader(status)
		return
	case router.DirectResponse:
		x.err = errors.New(rule.DirectReason)
		x.reply(rule.DirectStatus, flagNone, http.StatusText(rule.DirectStatus))
		return
	}

	rnd := dp.rand()
	b := rule.Pick(rnd)
	x.backend = b
	if b.Destination == nil {
		dp.putRand(rnd)
		x.err = fmt.Errorf("invalid backend: %s", b.Invalid)
		x.reply(http.StatusInternalServerError, flagInvalidBackend, "invalid backend")
		return
	}
	x.target = backendTarget(b.Destination, r)
	dp.mirror(x, rnd)
	dp.putRand(rnd)
	dp.forward(x, rule.RequestTimeout, rule.BackendTimeout)
}

// prepare completes the request's headers (x-request-id, traceparent),
// normalises its path, identifies the caller, and wraps the body for
// counting, the size limit, retries and mirrors.
func (x *exchange) prepare() {
	dp, r := x.dp, x.r
	req := x.tc.req
	x.caller = caller{Identity: req.Peer, Addr: req.ClientAddr, Destination: req.Destination,
		Service: dp.cfg.Store.ServiceByVIP(dp.cfg.Network, req.Destination.Addr(), req.Peer.Namespace)}
	if req.ClientAddr.IsValid() {
		x.caller.Workload = dp.cfg.Store.WorkloadByAddress(dp.cfg.Network, req.ClientAddr.Addr())
	}
	x.requestID = r.Header.Get(headerRequestID)
	if x.requestID == "" {
		x.requestID = newRequestID()
		r.Header.Set(headerRequestID, x.requestID)
	}
	x.traceparent = r.Header.Get(headerTraceparent)
	if !validTraceparent(x.traceparent) {
		x.traceparent = newTraceparent()
		r.Header.Set(headerTraceparent, x.traceparent)
	}
	if dp.cfg.StartSpan != nil {
		x.spanEnd = dp.cfg.StartSpan(r, x.traceparent)
	}
	x.hdrLen = int64(len(r.Method)+len(r.RequestURI)+len(r.Proto)+4) + headerSize(r.Header)
	// Istio's default path normalisation (dot segments, escapes of
	// unreserved characters): what rules and policy see is what is sent.
	router.NormalizePath(r)
	if r.Body != nil && r.Body != http.NoBody {
		x.lb = &limitedBody{rc: r.Body, max: dp.lim.MaxRequestBody}
		r.Body = x.lb
		if r.ContentLength != 0 {
			x.body = newBodyTap(x.lb, dp.lim.RetryBuffer)
		}
	}
}

// reply answers the request from the waypoint itself with status (a gRPC
// request gets HTTP 200 with the matching grpc-status instead), applying
// the matched rule's response header filters. Nothing is written if the
// response has already started.
func (x *exchange) reply(status int, flag, msg string) {
	if flag != flagNone || x.flag == flagNone {
		x.flag = flag
	}
	if x.w.wroteHeader {
		return
	}
	h := x.w.Header()
	if x.rule != nil {
		x.rule.RewriteResponse(h, x.backend)
	}
	if x.grpc {
		writeGRPCError(x.w, grpcStatusFor(status), msg)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	x.w.WriteHeader(status)
	fmt.Fprintln(x.w, msg)
}

// responseRecorder is the client's ResponseWriter, recording the status and
// the bytes written. Flush and Unwrap keep streaming, trailers and upgrades
// working through it (http.ResponseController).
type responseRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	bytes       int64
}

func (w *responseRecorder) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // informational: not the status
		return
	}
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *responseRecorder) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
