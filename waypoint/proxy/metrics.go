package proxy

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names. The istio_* ones are Istio's, with reporter="waypoint". The
// istio_tcp_* ones count passed-through connections (the upstream side of
// each TCP tunnel) and their bytes as they flow; the request ones count HTTP
// and gRPC requests.
const (
	metricOpened         = "istio_tcp_connections_opened_total"
	metricClosed         = "istio_tcp_connections_closed_total"
	metricSent           = "istio_tcp_sent_bytes_total"     // destination → client
	metricReceived       = "istio_tcp_received_bytes_total" // client → destination
	metricRequests       = "waypoint_hbone_requests_total"  // CONNECTs by response_code
	metricHTTPRequests   = "istio_requests_total"
	metricHTTPDuration   = "istio_request_duration_milliseconds"
	metricHTTPReqBytes   = "istio_request_bytes"
	metricHTTPRespBytes  = "istio_response_bytes"
	metricRetries        = "waypoint_upstream_retries_total"
	metricMirrors        = "waypoint_mirror_requests_total"
	metricTCPFailed      = "waypoint_tcp_connect_failures_total"
	metricRouteUpdates   = "waypoint_route_updates_total"
	metricRouteProblems  = "waypoint_route_problems_total"
	metricPolicyProblems = "waypoint_policy_problems_total"
	metricPanics         = "waypoint_panics_total"
)

// requestLabels are Istio's labels of the request metrics, in order.
var requestLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"source_canonical_service", "source_canonical_revision",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_canonical_service", "destination_canonical_revision",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "response_code", "grpc_response_status", "response_flags",
	"connection_security_policy",
}

// Istio's buckets: request duration in milliseconds, sizes in bytes.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	sizeBuckets     = []float64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}
)

// metrics are the waypoint's counters.
type metrics struct {
	reg                            *prometheus.Registry
	opened, closed, sent, received prometheus.Counter
	requests                       *prometheus.CounterVec

	httpRequests              *prometheus.CounterVec
	httpDuration              *prometheus.HistogramVec
	httpReqBytes, httpRspByte *prometheus.HistogramVec

	retries, tcpFailed, panics, routeProblems, policyProblems prometheus.Counter
	mirrors, routeUpdates                                     *prometheus.CounterVec
}

func newMetrics() *metrics {
	reporter := prometheus.Labels{"reporter": "waypoint"}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: reporter})
	}
	plain := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, requestLabels)
	}
	m := &metrics{
		reg:      prometheus.NewRegistry(),
		opened:   counter(metricOpened, "TCP connections the waypoint opened to endpoints for passed-through tunnels."),
		closed:   counter(metricClosed, "Passed-through TCP connections to endpoints the waypoint closed."),
		sent:     counter(metricSent, "Bytes of passed-through connections sent back to HBONE clients."),
		received: counter(metricReceived, "Bytes of passed-through connections received from HBONE clients."),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRequests,
			Help: "HBONE CONNECT requests answered, by response code (200, 400, 401, 503; 0: the stream ended before an answer).",
		}, []string{"response_code"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricHTTPRequests, Help: "HTTP and gRPC requests served by the waypoint.",
		}, requestLabels),
		httpDuration: hist(metricHTTPDuration, "Time from the request's arrival to the end of its response, in milliseconds.", durationBuckets),
		httpReqBytes: hist(metricHTTPReqBytes, "Request sizes (headers and body), in bytes.", sizeBuckets),
		httpRspByte:  hist(metricHTTPRespBytes, "Response sizes (headers and body), in bytes.", sizeBuckets),
		retries:      plain(metricRetries, "Upstream attempts retried (after a connection failure, a backend timeout or a retryable status)."),
		tcpFailed:    plain(metricTCPFailed, "Passed-through tunnels whose endpoint could not be resolved or reached (the tunnel was closed)."),
		panics:       plain(metricPanics, "Requests and tunnels whose handler failed with a panic (recovered; the request got 500 or was cut)."),
		mirrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricMirrors, Help: "Mirrored requests, by result: sent (a response came back), failed, dropped (too many in flight).",
		}, []string{"result"}),
		routeUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRouteUpdates, Help: "Route configuration responses from istiod-lite, by result: applied, partial (some resources kept their last good version), failed (nothing applied).",
		}, []string{"result"}),
		routeProblems:  plain(metricRouteProblems, "Route resources that could not be compiled (their last good version is kept, or none)."),
		policyProblems: plain(metricPolicyProblems, "Authorization policy resources applied in a stricter form than written (a part that cannot be evaluated)."),
	}
	m.reg.MustRegister(m.opened, m.closed, m.sent, m.received, m.requests,
		m.httpRequests, m.httpDuration, m.httpReqBytes, m.httpRspByte,
		m.retries, m.tcpFailed, m.panics, m.mirrors, m.routeUpdates, m.routeProblems, m.policyProblems,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, code := range []int{200, 400, 401, 503} {
		m.requests.WithLabelValues(strconv.Itoa(code))
	}
	for _, r := range []string{"sent", "failed", "dropped"} {
		m.mirrors.WithLabelValues(r)
	}
	for _, r := range []string{"applied", "partial", "failed"} {
		m.routeUpdates.WithLabelValues(r)
	}
	return m
}

// handler serves the metrics on /metrics and on /stats/prometheus (the path
// Istio's waypoints use, which the Deployment's scrape annotations name).
func (m *metrics) handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h)
	return mux
}
