package xds

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, documented in README.md.
const (
	metricConnected   = "istiod_lite_xds_connected_proxies"
	metricPushes      = "istiod_lite_xds_pushes_total"
	metricPushLatency = "istiod_lite_xds_push_latency_seconds"
	metricNACKs       = "istiod_lite_xds_nacks_total"
)

type metrics struct {
	connected   prometheus.Gauge
	pushes      *prometheus.CounterVec
	pushLatency *prometheus.HistogramVec
	nacks       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricConnected,
			Help: "Delta ADS streams open and authenticated.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPushes,
			Help: "DeltaDiscoveryResponses sent, by resource type.",
		}, []string{"type"}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricPushLatency,
			Help:    "Time from a store change to the response carrying it being sent, by resource type.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricNACKs,
			Help: "Responses rejected by proxies (requests with error_detail), by resource type.",
		}, []string{"type"}),
	}
	for _, t := range []string{AddressType, AuthorizationType} {
		m.pushes.WithLabelValues(shortType(t)) // export zeros so rates work from the start
		m.nacks.WithLabelValues(shortType(t))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connected, m.pushes, m.pushLatency, m.nacks} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("xds: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// shortType is the type label: the type URL without its prefix
// ("istio.workload.Address").
func shortType(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '/')+1:]
}
