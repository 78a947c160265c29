package proxy

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ambientlite/mesh/internal/meshcert"
)

// readiness answers GET /healthz/ready: 200 once the waypoint holds a valid
// certificate, has its first configuration from istiod-lite and its HBONE
// listener is up, 503 with the reason otherwise (and from the moment it
// starts draining).
type readiness struct {
	src        *meshcert.Source
	now        func() time.Time
	config     func() bool   // the first configuration has arrived
	xdsErr     func() string // the configuration stream's last error, for the reason
	listenerUp atomic.Bool
	draining   atomic.Bool
}

// notReady returns why the waypoint is not ready, or "".
func (r *readiness) notReady() string {
	if r.draining.Load() {
		return "draining: shutting down"
	}
	cert := r.src.Current()
	switch {
	case cert == nil && r.src.Err() != nil:
		return fmt.Sprintf("no certificate yet: %v", r.src.Err())
	case cert == nil:
		return "no certificate yet"
	case !r.now().Before(cert.NotAfter()):
		return fmt.Sprintf("certificate expired at %s; renewal failing: %v", cert.NotAfter().UTC().Format(time.RFC3339), r.src.Err())
	case !r.config():
		if e := r.xdsErr(); e != "" {
			return "no configuration from istiod yet: " + e
		}
		return "no configuration from istiod yet"
	case !r.listenerUp.Load():
		return "HBONE listener not up yet"
	}
	return ""
}

func (r *readiness) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if why := r.notReady(); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", why)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
