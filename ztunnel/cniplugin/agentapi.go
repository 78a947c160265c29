package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultAgentSocket is where the node agent serves the plugin.
const DefaultAgentSocket = "/var/run/ambient-lite/cni.sock"

// The plugin ↔ node agent protocol: HTTP/1.1 over the agent's unix socket,
// each connection opened by a one-byte preamble that may carry the
// sandbox's network namespace as an open file (fdpass.go).
//
//	POST /v1/add    AddRequest (JSON), the namespace passed with the
//	                preamble → 200 AddResponse (JSON), or an error status
//	                with the reason as text/plain
//	GET  /v1/ready  → 200 once the agent can answer ADD requests
const (
	addPath   = "/v1/add"
	readyPath = "/v1/ready"
)

// AddRequest is what the plugin tells the node agent on ADD: which pod, its
// sandbox's network namespace and the addresses the previous plugins gave it
// (the API server does not know them yet).
type AddRequest struct {
	ContainerID  string       `json:"containerID"`
	NetNS        string       `json:"netns"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace"`
	PodName      string       `json:"podName"`
	PodUID       string       `json:"podUID,omitempty"`
	IPs          []netip.Addr `json:"ips"`
}

// AddResponse is the node agent's answer.
type AddResponse struct {
	// Enrolled is true when the pod is in the mesh: the capture rules are
	// installed in its namespace by the time the agent answers.
	Enrolled bool `json:"enrolled"`
}

// AgentUnreachableError means the plugin could not talk to the node agent at
// all (no socket, connection refused, timeout).
type AgentUnreachableError struct {
	Socket string
	Err    error
}

func (e *AgentUnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the Ambient Lite node agent at %s: %v", e.Socket, e.Err)
}

func (e *AgentUnreachableError) Unwrap() error { return e.Err }

// AgentError is a failure the node agent reported.
type AgentError struct {
	Status  int
	Message string
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("node agent: %s (HTTP %d)", e.Message, e.Status)
}

// AgentClient talks to the node agent's socket.
type AgentClient struct {
	// Socket is the agent's unix socket. Default DefaultAgentSocket.
	Socket string
}

func (c AgentClient) socket() string {
	if c.Socket == "" {
		return DefaultAgentSocket
	}
	return c.Socket
}

// http is a client whose one connection opens with the preamble, passing
// netns (nil: none).
func (c AgentClient) http(netns *os.File) *http.Client {
	sock := c.socket()
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialAgent(ctx, sock, netns)
		},
		DisableKeepAlives: true,
	}}
}

// Add asks the node agent to capture the pod if it is enrolled. It opens
// req.NetNS and passes the open namespace to the agent (which may not see
// the path). ctx bounds the whole exchange.
func (c AgentClient) Add(ctx context.Context, req AddRequest) (AddResponse, error) {
	netns, err := os.Open(req.NetNS)
	if err != nil {
		return AddResponse{}, fmt.Errorf("open the sandbox's network namespace: %w", err)
	}
	defer netns.Close()
	return c.AddNetNS(ctx, req, netns)
}

// AddNetNS is Add with the namespace already open; req.NetNS is then only
// for the agent's logs.
func (c AgentClient) AddNetNS(ctx context.Context, req AddRequest, netns *os.File) (AddResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return AddResponse{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://node-agent"+addPath, bytes.NewReader(body))
	if err != nil {
		return AddResponse{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.do(hreq, netns)
	if err != nil {
		return AddResponse{}, err
	}
	var out AddResponse
	if err := json.Unmarshal(resp, &out); err != nil {
		return AddResponse{}, fmt.Errorf("decode node agent answer: %w", err)
	}
	return out, nil
}

// Ready reports whether the node agent answers and is ready.
func (c AgentClient) Ready(ctx context.Context) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://node-agent"+readyPath, nil)
	if err != nil {
		return err
	}
	_, err = c.do(hreq, nil)
	return err
}

func (c AgentClient) do(hreq *http.Request, netns *os.File) ([]byte, error) {
	resp, err := c.http(netns).Do(hreq)
	if err != nil {
		return nil, &AgentUnreachableError{Socket: c.socket(), Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, &AgentUnreachableError{Socket: c.socket(), Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &AgentError{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	return b, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// AddFunc decides and captures one ADD. netns is the sandbox's network
// namespace as the plugin passed it, nil when it did not (a plugin of an
// older version: open req.NetNS); AddFunc owns it and must close it.
type AddFunc func(ctx context.Context, req AddRequest, netns *os.File) (AddResponse, error)

// AgentHandler serves the plugin's requests in the node agent (on an
// AgentListener, with AgentConnContext): add decides and captures, ready
// reports readiness (nil ready means always ready). Errors from add are
// sent to the plugin as 500 with their text, so they end up in the pod's
// events.
func AgentHandler(add AddFunc, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+addPath, func(w http.ResponseWriter, r *http.Request) {
		netns := netnsFromContext(r.Context())
		closeNetNS := func() {
			if netns != nil {
				netns.Close()
			}
		}
		var req AddRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		if err := dec.Decode(&req); err != nil {
			closeNetNS()
			http.Error(w, "bad add request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if req.PodNamespace == "" || req.PodName == "" || req.NetNS == "" {
			closeNetNS()
			http.Error(w, "bad add request: podNamespace, podName and netns are required", http.StatusBadRequest)
			return
		}
		resp, err := add(r.Context(), req, netns)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
	mux.HandleFunc("GET "+readyPath, func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

// defaultAgentTimeout bounds one ADD's wait for the node agent.
const defaultAgentTimeout = 30 * time.Second
