package proxy

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names. The istio_tcp_* ones are Istio's, with reporter="waypoint";
// they count relayed connections (the upstream side of each tunnel) and their
// bytes as they flow.
const (
	metricOpened   = "istio_tcp_connections_opened_total"
	metricClosed   = "istio_tcp_connections_closed_total"
	metricSent     = "istio_tcp_sent_bytes_total"     // destination → client
	metricReceived = "istio_tcp_received_bytes_total" // client → destination
	metricRequests = "waypoint_hbone_requests_total"  // CONNECTs by response_code
)

// metrics are the waypoint's counters.
type metrics struct {
	reg                            *prometheus.Registry
	opened, closed, sent, received prometheus.Counter
	requests                       *prometheus.CounterVec
}

func newMetrics() *metrics {
	reporter := prometheus.Labels{"reporter": "waypoint"}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: reporter})
	}
	m := &metrics{
		reg:      prometheus.NewRegistry(),
		opened:   counter(metricOpened, "TCP connections the waypoint opened to destinations for HBONE tunnels."),
		closed:   counter(metricClosed, "TCP connections to destinations the waypoint closed."),
		sent:     counter(metricSent, "Bytes sent back to HBONE clients from destinations."),
		received: counter(metricReceived, "Bytes received from HBONE clients and sent to destinations."),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRequests,
			Help: "HBONE CONNECT requests answered, by response code (200, 400, 401, 503; 0: the stream ended before an answer).",
		}, []string{"response_code"}),
	}
	m.reg.MustRegister(m.opened, m.closed, m.sent, m.received, m.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, code := range []int{200, 400, 401, 503} {
		m.requests.WithLabelValues(strconv.Itoa(code))
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
