package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// Admin reads an HTTP endpoint of a pod through the Kubernetes API server.
// ztunnel's admin listens on 127.0.0.1:15000 of a host-network pod, so the
// pods/proxy subresource (which dials the pod IP) cannot reach it; a
// port-forward enters the pod's network namespace and can.
type Admin interface {
	// Get returns the body of GET http://localhost:<port><path> in pod
	// namespace/name; a status other than 200 is an error.
	Get(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error)
}

// Admin ports and paths read.
const (
	ztunnelAdminPort  = 15000
	ztunnelConfigDump = "/config_dump"
	istiodMonitorPort = 15014
	istiodSyncz       = "/debug/syncz"
)

// adminTimeout bounds one admin read, port-forward set-up included.
const adminTimeout = 20 * time.Second

// portForward is Admin over a port-forward (WebSocket, falling back to SPDY,
// as kubectl does) to a local port on 127.0.0.1 that lives for one request.
type portForward struct {
	config *rest.Config
	kube   kubernetes.Interface
}

func (p *portForward) Get(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	u := p.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(p.config)
	if err != nil {
		return nil, err
	}
	var dialer streamhttp.Dialer = spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, p.config); err == nil {
		dialer = portforward.NewFallbackDialerForStreaming(ws, dialer, func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
		})
	}
	stop := make(chan struct{})
	ready := make(chan struct{})
	var errOut bytes.Buffer
	fw, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	defer func() {
		close(stop)
		<-done
	}()
	select {
	case <-ready:
	case err := <-done:
		done <- err
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, ctx.Err())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		return nil, fmt.Errorf("port-forward to %s/%s:%d: no local port", namespace, pod, port)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", ports[0].Local, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		if msg := strings.TrimSpace(errOut.String()); msg != "" {
			return nil, fmt.Errorf("%s/%s:%d%s: %s", namespace, pod, port, path, msg)
		}
		return nil, fmt.Errorf("%s/%s:%d%s: %w", namespace, pod, port, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s/%s:%d%s: %w", namespace, pod, port, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/%s:%d%s: %s: %s", namespace, pod, port, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
