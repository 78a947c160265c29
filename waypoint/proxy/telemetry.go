package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ambientlite/mesh/ztunnel/state"
)

// finish reports x once its handler is done: the request metrics (Istio's
// labels, reporter="waypoint") and one access-log line.
func (x *exchange) finish() {
	dp, r, w := x.dp, x.r, x.w
	x.body.finish()
	x.tc.stats.requests.Add(1)
	dur := time.Since(x.start)

	status := w.status
	switch {
	case w.wroteHeader:
	case x.flag == flagDownstream:
		status = 0 // nothing was sent: the client went away
	default:
		status = http.StatusOK // net/http sends 200 for a handler that wrote nothing
	}
	grpcStatus := ""
	if x.grpc {
		grpcStatus = w.Header().Get("Grpc-Status")
		if grpcStatus == "" {
			grpcStatus = w.Header().Get(http.TrailerPrefix + "Grpc-Status")
		}
	}
	var reqBody int64
	if x.lb != nil {
		reqBody = x.lb.n.Load()
	}
	respBytes := w.bytes + headerSize(w.Header())

	svc := x.destService()
	l := x.labels(svc, status, grpcStatus)
	m := dp.m
	m.httpRequests.WithLabelValues(l...).Inc()
	m.httpDuration.WithLabelValues(l...).Observe(float64(dur.Microseconds()) / 1000)
	m.httpReqBytes.WithLabelValues(l...).Observe(float64(x.hdrLen + reqBody))
	m.httpRspByte.WithLabelValues(l...).Observe(float64(respBytes))
	if x.spanEnd != nil {
		x.spanEnd(status)
	}

	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("authority", r.Host),
		slog.String("protocol", r.Proto),
		slog.Int("status", status),
		slog.String("flags", x.flag),
		slog.Float64("durationMs", float64(dur.Microseconds())/1000),
		slog.Int64("bytesReceived", reqBody),
		slog.Int64("bytesSent", w.bytes),
		slog.String("requestId", x.requestID),
		slog.String("traceparent", x.traceparent),
		slog.String("src", x.tc.RemoteAddr().String()),
		slog.String("peer", x.caller.Identity.String()),
		slog.String("dst", x.tc.req.Authority),
	}
	if grpcStatus != "" {
		attrs = append(attrs, slog.String("grpcStatus", grpcStatus))
	}
	if o := x.origin; o != nil {
		attrs = append(attrs, slog.String("route", o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()+"#"+strconv.Itoa(int(o.GetRuleIndex()))))
	}
	if svc != nil {
		attrs = append(attrs, slog.String("service", svc.Hostname))
	}
	if x.dest != nil {
		attrs = append(attrs, slog.String("upstream", hostOf(*x.dest)))
		if x.dest.Workload != nil {
			attrs = append(attrs, slog.String("upstreamWorkload", x.dest.Workload.Namespace+"/"+x.dest.Workload.Name))
		}
	}
	if x.attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", x.attempts))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, slog.String("userAgent", ua))
	}
	if x.err != nil {
		attrs = append(attrs, slog.String("err", x.err.Error()))
	}
	dp.accessLog.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// destService is the service the request was for: the one its endpoint was
// picked from, else the route backend's, else the one of the tunnel's
// destination address.
func (x *exchange) destService() *state.Service {
	if x.dest != nil && x.dest.Service != nil {
		return x.dest.Service
	}
	if x.target.key != "" {
		return x.dp.cfg.Store.Service(x.target.key)
	}
	return x.caller.Service
}

// labels are the values of requestLabels for x.
func (x *exchange) labels(svc *state.Service, status int, grpcStatus string) []string {
	src := x.caller.Workload
	srcName, srcNS, srcCanon, srcRev := "", x.caller.Identity.Namespace, "", ""
	if src != nil {
		srcName, srcNS, srcCanon, srcRev = workloadName(src), src.Namespace, src.CanonicalName, src.CanonicalRevision
	}
	var dstName, dstNS, dstPrinc, dstCanon, dstRev string
	if x.dest != nil && x.dest.Workload != nil {
		w := x.dest.Workload
		dstName, dstNS, dstCanon, dstRev = workloadName(w), w.Namespace, w.CanonicalName, w.CanonicalRevision
		dstPrinc = w.Identity().String()
	}
	var svcHost, svcName, svcNS string
	if svc != nil {
		svcHost, svcName, svcNS = svc.Hostname, svc.Name, svc.Namespace
	} else if x.target.key != "" { // a backend the store does not know
		svcNS, svcHost, _ = strings.Cut(x.target.key, "/")
	}
	proto := "http"
	if x.grpc {
		proto = "grpc"
	}
	return []string{
		"waypoint",
		orUnknown(srcName), orUnknown(srcNS), orUnknown(x.caller.Identity.String()),
		orUnknown(srcCanon), orLatest(srcRev),
		orUnknown(dstName), orUnknown(dstNS), orUnknown(dstPrinc),
		orUnknown(dstCanon), orLatest(dstRev),
		orUnknown(svcHost), orUnknown(svcName), orUnknown(svcNS),
		proto, strconv.Itoa(status), grpcStatus, x.flag,
		"mutual_tls",
	}
}

// workloadName is Istio's workload label: the Deployment (or other owner)
// name, else the pod name.
func workloadName(w *state.Workload) string {
	if w.WorkloadName != "" {
		return w.WorkloadName
	}
	return w.Name
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// orLatest is Istio's default canonical revision.
func orLatest(s string) string {
	if s == "" {
		return "latest"
	}
	return s
}
