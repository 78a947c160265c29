package xdsclient

import "time"

// State is what the client is doing.
type State string

const (
	// StateStopped: Run is not running.
	StateStopped State = "stopped"
	// StateConnecting: a stream is being opened, or is open but has not
	// received a response yet.
	StateConnecting State = "connecting"
	// StateConnected: the stream has received at least one response.
	StateConnected State = "connected"
	// StateBackoff: the last attempt failed or the stream ended; the next
	// attempt is at Status.NextAttempt.
	StateBackoff State = "backoff"
)

// Status is the client's state for an admin endpoint. It marshals to
// JSON as is.
type Status struct {
	// Address is the control plane's address.
	Address string `json:"address"`
	State   State  `json:"state"`
	// Connected is State == StateConnected.
	Connected bool `json:"connected"`
	// Synced is true once every wildcard type has had a response ACKed;
	// it stays true across disconnects.
	Synced bool `json:"synced"`
	// LastConnect is when a stream last received its first response;
	// LastDisconnect when a stream last ended.
	LastConnect    time.Time `json:"lastConnect,omitzero"`
	LastDisconnect time.Time `json:"lastDisconnect,omitzero"`
	// LastError is why the last stream ended or the last attempt failed,
	// and LastErrorAt when. It is kept after a reconnect.
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// Attempts counts the streams opened or tried since New.
	Attempts uint64 `json:"attempts"`
	// NextAttempt is when the next attempt is due, in StateBackoff.
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	// Types has one entry per watched type, sorted by TypeURL.
	Types []TypeStatus `json:"types"`
}

// TypeStatus is what the client holds of one type.
type TypeStatus struct {
	TypeURL string `json:"typeUrl"`
	// Wildcard is true for types watched with Watch, false for WatchNamed.
	Wildcard bool `json:"wildcard"`
	// Subscribed lists the names subscribed, for a named type, sorted.
	Subscribed []string `json:"subscribed,omitempty"`
	// Resources counts the resources held (applied by the handler).
	Resources int `json:"resources"`
	// Synced is true once a response of this type has been ACKed.
	Synced bool `json:"synced"`
	// SystemVersion and Nonce are the system_version_info and nonce of the
	// last ACKed response, LastAck when it was ACKed.
	SystemVersion string    `json:"systemVersion,omitempty"`
	Nonce         string    `json:"nonce,omitempty"`
	LastAck       time.Time `json:"lastAck,omitzero"`
	// LastNack is the error_detail of the last NACK, cleared by the next
	// ACK; LastNackAt when it was sent.
	LastNack   string    `json:"lastNack,omitempty"`
	LastNackAt time.Time `json:"lastNackAt,omitzero"`
	// Responses, ACKs and NACKs count since New.
	Responses uint64 `json:"responses"`
	ACKs      uint64 `json:"acks"`
	NACKs     uint64 `json:"nacks"`
}
