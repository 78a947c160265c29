package controlplane

import (
	"encoding/json"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// health answers the kubelet's probes. Live as long as the process serves;
// ready once the informers have synced, the first translation is stored and
// the gRPC listener is up.
type health struct {
	ready atomic.Bool
}

func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if !h.ready.Load() {
			http.Error(w, "not ready: caches syncing or config not yet built", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// monitoringHandler serves /metrics and /debug/syncz (the config streams,
// what ambientctl proxy-status reads).
func monitoringHandler(reg *prometheus.Registry, srv *xds.Server, store *xds.Store, leader *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /debug/syncz", func(w http.ResponseWriter, r *http.Request) {
		type typeCount struct {
			TypeURL   string `json:"typeUrl"`
			Resources int    `json:"resources"`
		}
		var counts []typeCount
		for _, t := range servedTypes {
			counts = append(counts, typeCount{t, store.Len(t)})
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Leader     bool               `json:"leader"`
			Generation uint64             `json:"generation"`
			Types      []typeCount        `json:"types"`
			Streams    []xds.StreamStatus `json:"streams"`
		}{leader.Load(), store.Generation(), counts, srv.Streams()})
	})
	return mux
}
