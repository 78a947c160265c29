package waypoint

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of writes, the values of the kind label of
// istiod_lite_waypoint_writes_total.
const (
	writeServiceAccount     = "ServiceAccount"
	writeService            = "Service"
	writeDeployment         = "Deployment"
	writeGatewayStatus      = "GatewayStatus"
	writeGatewayClass       = "GatewayClass"
	writeGatewayClassStatus = "GatewayClassStatus"
)

type metrics struct {
	reconciles *prometheus.CounterVec
	writes     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istiod_lite_waypoint_reconciles_total",
			Help: "Reconciliations of waypoint Gateways (and of the GatewayClass), by result: ok or error.",
		}, []string{"result"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istiod_lite_waypoint_writes_total",
			Help: "Writes to the API server by the waypoint controller, by kind of object (status counts separately).",
		}, []string{"kind"}),
	}
	for _, r := range []string{"ok", "error"} {
		m.reconciles.WithLabelValues(r)
	}
	for _, k := range []string{writeServiceAccount, writeService, writeDeployment, writeGatewayStatus, writeGatewayClass, writeGatewayClassStatus} {
		m.writes.WithLabelValues(k)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.reconciles, m.writes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("waypoint: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
