package xdsclient

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, documented in README.md. The istio_xds_* ones are
// ztunnel's (src/xds/metrics.rs), with its label names and values.
const (
	metricTerminations = "istio_xds_connection_terminations_total"
	metricMessages     = "istio_xds_message_total"
	metricMessageBytes = "istio_xds_message_bytes_total"
	metricConnected    = "xds_client_connected"
	metricResponses    = "xds_client_responses_total"
)

// Reasons a stream ended, the reason label of metricTerminations
// (ztunnel's ConnectionTerminationReason).
const (
	reasonConnectionError = "ConnectionError" // no response before the failure: dial, TLS, token, refused
	reasonError           = "Error"           // ended with a gRPC error status
	reasonReconnect       = "Reconnect"       // ended by a server going away (GOAWAY, restart)
	reasonComplete        = "Complete"        // the server ended it with OK
)

type metrics struct {
	terminations *prometheus.CounterVec
	messages     *prometheus.CounterVec
	messageBytes *prometheus.CounterVec
	connected    prometheus.Gauge
	responses    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		terminations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricTerminations,
			Help: "Streams to the xDS server that ended or could not be opened, by reason.",
		}, []string{"reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricMessages,
			Help: "xDS responses received, by type URL.",
		}, []string{"url"}),
		messageBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricMessageBytes,
			Help: "Bytes of resources received in xDS responses, by type URL.",
		}, []string{"url"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricConnected,
			Help: "1 while the stream to the xDS server is up and has received a response, else 0.",
		}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricResponses,
			Help: "xDS responses answered, by type URL and result (ack, nack).",
		}, []string{"url", "result"}),
	}
	for _, r := range []string{reasonConnectionError, reasonError, reasonReconnect, reasonComplete} {
		m.terminations.WithLabelValues(r) // export zeros so rates work from the start
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.terminations, m.messages, m.messageBytes, m.connected, m.responses} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("xdsclient: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
