package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ConnInfo describes one open connection, for an admin /config_dump.
type ConnInfo struct {
	ID        uint64 `json:"id"`
	Direction string `json:"direction"` // "outbound" or "inbound"
	// Pod is the namespace/name of the pod whose listener took the
	// connection (the source for outbound, the destination for inbound).
	Pod string `json:"pod"`
	// Src is the original client, Dst the original destination.
	Src netip.AddrPort `json:"src"`
	Dst netip.AddrPort `json:"dst"`
	// HBONEAddr is the next hop of an outbound tunnel, or the HBONE peer
	// of an inbound one; empty for plaintext and passthrough.
	HBONEAddr   string `json:"hbone_addr,omitempty"`
	SrcWorkload string `json:"src_workload,omitempty"`
	SrcIdentity string `json:"src_identity,omitempty"`
	DstWorkload string `json:"dst_workload,omitempty"`
	DstIdentity string `json:"dst_identity,omitempty"`
	DstService  string `json:"dst_service,omitempty"`
	// Security is "mutual_tls" or "unknown" (plaintext, passthrough).
	Security string `json:"security"`
	// BytesReceived went from source to destination so far, BytesSent
	// from destination to source (Istio's sense of the metrics).
	BytesReceived int64     `json:"bytes_received"`
	BytesSent     int64     `json:"bytes_sent"`
	Start         time.Time `json:"start"`
}

// tracker lists open connections.
type tracker struct {
	next  atomic.Uint64
	mu    sync.Mutex
	conns map[uint64]*connRecord
}

func (t *tracker) add(r *connRecord) {
	r.id = t.next.Add(1)
	r.info.ID = r.id
	t.mu.Lock()
	if t.conns == nil {
		t.conns = make(map[uint64]*connRecord)
	}
	t.conns[r.id] = r
	t.mu.Unlock()
}

func (t *tracker) remove(r *connRecord) {
	t.mu.Lock()
	delete(t.conns, r.id)
	t.mu.Unlock()
}

func (t *tracker) snapshot() []ConnInfo {
	t.mu.Lock()
	out := make([]ConnInfo, 0, len(t.conns))
	for _, r := range t.conns {
		info := r.info
		info.BytesReceived, info.BytesSent = r.received.Load(), r.sent.Load()
		out = append(out, info)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
