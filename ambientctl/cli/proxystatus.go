package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
)

// Sync states of a proxy, istiod's view of its config stream.
const (
	syncSynced       = "SYNCED"        // every push ACKed
	syncStale        = "STALE"         // a push is waiting for its ACK, or held behind one
	syncNacked       = "NACKED"        // the proxy rejected the last push of a type
	syncNotConnected = "NOT CONNECTED" // no istiod replica has a stream from it
	syncUnknown      = "UNKNOWN"       // a replica could not be read: it may hold the stream
)

// proxyStatus is one row of proxy-status.
type proxyStatus struct {
	Name  string `json:"name"` // <namespace>/<pod>
	Type  string `json:"type"` // ztunnel or waypoint
	Node  string `json:"node"`
	Ready bool   `json:"ready"`
	// Istiod is the replica holding the proxy's stream.
	Istiod      string    `json:"istiod,omitempty"`
	ConnectedAt time.Time `json:"connectedAt,omitzero"`
	// AckedVersion is the highest config version (system_version_info)
	// the proxy ACKed, from its own admin endpoint (ztunnels only);
	// IstiodVersion the version istiod holds now.
	AckedVersion  string       `json:"ackedVersion,omitempty"`
	IstiodVersion string       `json:"istiodVersion,omitempty"`
	Status        string       `json:"status"`
	LastAck       time.Time    `json:"lastAck,omitzero"`
	Types         []typeStatus `json:"types,omitempty"`
	Detail        string       `json:"detail,omitempty"`
}

// typeStatus is the stream's state for one resource type.
type typeStatus struct {
	Type     string    `json:"type"`
	Status   string    `json:"status"`
	Acked    int       `json:"ackedResources"`
	LastAck  time.Time `json:"lastAck,omitzero"`
	LastNack string    `json:"lastNack,omitempty"`
}

func newProxyStatus(env *Env) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "proxy-status",
		Short: "Show every ztunnel and waypoint: connected to which istiod, config version ACKed, in sync or stale",
		Long: `proxy-status reads every istiod replica's /debug/syncz (port 15014) and every ztunnel's
/config_dump (admin, 127.0.0.1:15000) through the API server, and prints one line per proxy:
the istiod replica holding its config stream, the config version it ACKed against the one
istiod holds, and its state: SYNCED (every push ACKed), STALE (a push awaits its ACK; LAST ACK
says for how long nothing was ACKed), NACKED (it rejected a push), NOT CONNECTED.`,
		Example: `  ambientctl proxy-status
  ambientctl proxy-status -o json`,
		Aliases: []string{"ps"},
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := env.clients(cmd.Context())
			if err != nil {
				return err
			}
			rows, warnings, err := proxyStatuses(cmd.Context(), c)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				fmt.Fprintln(env.Stderr, "warning:", w)
			}
			if format != formatTable {
				return printStructured(env.Stdout, format, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(env.Stdout, "No ztunnel or waypoint found: is Ambient Lite installed? (ambientctl check)")
				return nil
			}
			t := newTable(env.Stdout, "NAME", "TYPE", "NODE", "ISTIOD", "ACKED", "ISTIOD VERSION", "STATUS", "LAST ACK")
			now := env.Now()
			for _, r := range rows {
				status := r.Status
				if r.Detail != "" && r.Status != syncSynced {
					status += " (" + r.Detail + ")"
				}
				t.row(r.Name, r.Type, r.Node, r.Istiod, r.AckedVersion, r.IstiodVersion, status, age(now, r.LastAck))
			}
			return t.flush()
		},
	}
	addOutputFlag(c, &format)
	return c
}

// proxyStatuses joins the proxies' pods with the istiod replicas' streams
// and the ztunnels' own view. Warnings name replicas or proxies that could
// not be read.
func proxyStatuses(ctx context.Context, c *Clients) ([]proxyStatus, []string, error) {
	istiods, err := readIstiods(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	streams := map[string]streamStatus{} // by <ns>/<pod>
	holder := map[string]istiodView{}
	unread := false
	for _, v := range istiods {
		if v.Err != nil {
			unread = true
			warnings = append(warnings, fmt.Sprintf("istiod %s: %s", v.Pod.Name, describe(v.Err)))
			continue
		}
		for _, s := range v.Syncz.Streams {
			k := s.podKey()
			// A proxy that reconnected may briefly have two streams:
			// the newer one counts.
			if old, ok := streams[k]; ok && old.ConnectedAt.After(s.ConnectedAt) {
				continue
			}
			streams[k] = s
			holder[k] = v
		}
	}
	zts, err := ztunnelPods(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	wps, err := waypointPods(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	var rows []proxyStatus
	add := func(p corev1.Pod, typ string) {
		key := p.Namespace + "/" + p.Name
		r := proxyStatus{Name: key, Type: typ, Node: p.Spec.NodeName, Ready: podReady(&p)}
		s, ok := streams[key]
		switch {
		case ok:
			v := holder[key]
			r.Istiod = v.Pod.Name
			r.IstiodVersion = strconv.FormatUint(v.Syncz.Generation, 10)
			r.ConnectedAt = s.ConnectedAt
			r.Status, r.Detail, r.Types = streamSync(s)
			for _, t := range r.Types {
				if t.LastAck.After(r.LastAck) {
					r.LastAck = t.LastAck
				}
			}
		case unread:
			r.Status = syncUnknown
			r.Detail = "an istiod replica could not be read"
		default:
			r.Status = syncNotConnected
			if !r.Ready {
				r.Detail = "pod not ready"
			}
		}
		if typ == "ztunnel" && p.Status.Phase == corev1.PodRunning {
			d, err := fetchConfigDump(ctx, c, &p)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("ztunnel %s: %s", key, describe(err)))
			} else {
				r.AckedVersion = highestVersion(d.XDS.Types)
				if r.Status == syncNotConnected && d.XDS.LastError != "" {
					r.Detail = d.XDS.LastError
				}
			}
		}
		rows = append(rows, r)
	}
	for _, p := range zts {
		add(p, "ztunnel")
	}
	for _, p := range wps {
		add(p, "waypoint")
	}
	return rows, warnings, nil
}

// streamSync sums up a stream's types: NACKED if any type's last push was
// rejected, STALE if any waits for an ACK, else SYNCED.
func streamSync(s streamStatus) (string, string, []typeStatus) {
	status, detail := syncSynced, ""
	var types []typeStatus
	for _, t := range s.Types {
		ts := typeStatus{Type: shortType(t.TypeURL), Status: syncSynced, Acked: t.Acked, LastAck: t.LastAck, LastNack: t.LastNack}
		switch {
		case t.LastNack != "":
			ts.Status = syncNacked
			status, detail = syncNacked, ts.Type+": "+t.LastNack
		case t.InFlight != "" || t.Waiting:
			ts.Status = syncStale
			if status == syncSynced {
				status, detail = syncStale, ts.Type+" push not ACKed"
			}
		}
		types = append(types, ts)
	}
	return status, detail, types
}

// highestVersion is the largest system_version_info among the ACKed
// types (they are istiod's store generations, decimal).
func highestVersion(types []xdsType) string {
	best, bestN := "", int64(-1)
	for _, t := range types {
		n, err := strconv.ParseInt(t.SystemVersion, 10, 64)
		if err != nil {
			if best == "" {
				best = t.SystemVersion
			}
			continue
		}
		if n > bestN {
			best, bestN = t.SystemVersion, n
		}
	}
	return strings.TrimSpace(best)
}
