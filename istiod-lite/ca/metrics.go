package ca

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusal reasons, the values of the reason label.
const (
	reasonUnauthenticated = "unauthenticated"       // no valid token
	reasonImpersonation   = "impersonation_denied"  // caller may not ask for another identity
	reasonNotOnNode       = "not_on_node"           // no such pod on the node account's node
	reasonNodeCheckFailed = "node_check_failed"     // NodeChecker errored
	reasonCSRMismatch     = "csr_identity_mismatch" // the CSR names another identity
	reasonBadCSR          = "bad_csr"
	reasonBadTTL          = "bad_ttl"
	reasonCanceled        = "canceled"
	reasonInternal        = "internal"
)

var reasons = []string{reasonUnauthenticated, reasonImpersonation, reasonNotOnNode, reasonNodeCheckFailed,
	reasonCSRMismatch, reasonBadCSR, reasonBadTTL, reasonCanceled, reasonInternal}

type metrics struct {
	issued  prometheus.Counter
	refused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "istiod_lite_ca_certificates_issued_total",
			Help: "Workload certificates issued by CreateCertificate.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istiod_lite_ca_certificates_refused_total",
			Help: "CreateCertificate requests refused, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(r) // export zeros so rates work from the start
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.issued, m.refused} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("ca: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
