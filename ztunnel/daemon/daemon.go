// Package daemon is the ztunnel process: it runs the node agent (pods
// enrolled on this node, their capture rules, the CNI plugin), takes the
// enrolled pods' network namespaces over the zds socket, and carries their
// traffic with package proxy, using config from istiod-lite (delta ADS into
// package state) and workload certificates by impersonation (package certs).
// It serves readiness on 15021, Prometheus metrics on 15020 and the admin
// endpoint (/config_dump) on localhost:15000.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/ztunnel/certs"
	"github.com/ambientlite/mesh/ztunnel/cniplugin"
	"github.com/ambientlite/mesh/ztunnel/nodeagent"
	"github.com/ambientlite/mesh/ztunnel/nodeagent/zds"
	"github.com/ambientlite/mesh/ztunnel/proxy"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// ErrUsage marks a command-line error.
var ErrUsage = errors.New("usage")

// Options are ztunnel's settings; environment variables (set by the
// DaemonSet from the downward API) give the defaults, flags override.
type Options struct {
	NodeName, PodName, PodNamespace, InstanceIP string
	TrustDomain, ClusterID                      string
	CAAddress, XDSAddress                       string
	TokenFile, RootCertFile                     string
	Kubeconfig                                  string
	AdminAddr, MetricsAddr, ReadyAddr           string
	ZtunnelSocket                               string
	CNIBinDir, CNIConfDir                       string
	DisableCNIInstall                           bool
	DaemonSetName                               string
	LogLevel                                    string
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newFlagSet(o *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.StringVar(&o.NodeName, "node-name", env("NODE_NAME", ""), "Kubernetes node of this ztunnel ($NODE_NAME)")
	fs.StringVar(&o.PodName, "pod-name", env("POD_NAME", ""), "this pod's name ($POD_NAME)")
	fs.StringVar(&o.PodNamespace, "pod-namespace", env("POD_NAMESPACE", "istio-system"), "this pod's namespace ($POD_NAMESPACE)")
	fs.StringVar(&o.InstanceIP, "instance-ip", env("INSTANCE_IP", ""), "this pod's IP ($INSTANCE_IP)")
	fs.StringVar(&o.TrustDomain, "trust-domain", env("TRUST_DOMAIN", "cluster.local"), "SPIFFE trust domain")
	fs.StringVar(&o.ClusterID, "cluster-id", env("CLUSTER_ID", "Kubernetes"), "cluster name")
	fs.StringVar(&o.CAAddress, "ca-address", env("CA_ADDRESS", "istiod.istio-system.svc:15012"), "certificate service")
	fs.StringVar(&o.XDSAddress, "xds-address", env("XDS_ADDRESS", "istiod.istio-system.svc:15012"), "config service")
	fs.StringVar(&o.TokenFile, "token-file", meshcert.DefaultTokenFile, "service-account token (audience istio-ca)")
	fs.StringVar(&o.RootCertFile, "root-cert-file", meshcert.DefaultRootCertFile, "mesh roots (ConfigMap istio-ca-root-cert)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig for the node agent; empty: in-cluster")
	fs.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin endpoint (/config_dump)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":15020", "Prometheus metrics (/metrics, /stats/prometheus)")
	fs.StringVar(&o.ReadyAddr, "ready-addr", ":15021", "readiness (/healthz/ready)")
	fs.StringVar(&o.ZtunnelSocket, "zds-socket", nodeagent.DefaultZtunnelSocket, "unix socket between node agent and proxy")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "the container runtime's CNI binary directory (host path)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "the container runtime's CNI configuration directory (host path)")
	fs.BoolVar(&o.DisableCNIInstall, "disable-cni-install", false, "do not chain the CNI plugin (only running pods are captured)")
	fs.StringVar(&o.DaemonSetName, "daemonset-name", "ztunnel", "this DaemonSet's name: when it is deleted, the CNI plugin is removed on exit")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	return fs
}

func (o Options) validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	if o.PodName == "" {
		errs = append(errs, errors.New("--pod-name (or $POD_NAME) is required"))
	}
	if _, err := netip.ParseAddr(o.InstanceIP); err != nil {
		errs = append(errs, fmt.Errorf("--instance-ip %q (or $INSTANCE_IP): %w", o.InstanceIP, err))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel))
	}
	return errors.Join(errs...)
}

// Run is ztunnel's main.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o Options
	fs := newFlagSet(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if err := o.validate(); err != nil {
		fs.Usage()
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(o.LogLevel))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	return serve(ctx, o, log)
}

func serve(ctx context.Context, o Options, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var rc *rest.Config
	var err error
	if o.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}

	// Config from istiod-lite.
	st := state.New(state.Config{Node: o.NodeName})
	ip, _ := netip.ParseAddr(o.InstanceIP)
	xc, err := xdsclient.New(xdsclient.Config{
		Address: o.XDSAddress, RootCertFile: o.RootCertFile, Token: xdsclient.FileToken(o.TokenFile),
		ClusterID: o.ClusterID,
		Node:      xdsclient.Node{IPs: []netip.Addr{ip}, PodName: o.PodName, PodNamespace: o.PodNamespace, NodeName: o.NodeName},
		Logger:    log.With("component", "xds"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	if err := xc.Watch("type.googleapis.com/istio.workload.Address", st.AddressHandler()); err != nil {
		return err
	}
	if err := xc.Watch("type.googleapis.com/istio.security.Authorization", st.AuthorizationHandler()); err != nil {
		return err
	}

	// Workload certificates by impersonation.
	cc, err := meshcert.NewClient(meshcert.Config{Address: o.CAAddress, RootCertFile: o.RootCertFile, TokenFile: o.TokenFile, Impersonate: true})
	if err != nil {
		return err
	}
	defer cc.Close()
	cm := certs.New(cc, log.With("component", "certs"))
	defer cm.Close()

	metrics, err := proxy.NewMetrics(reg)
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{
		Resolver: resolver{st: st}, Certificates: meshCerts{Manager: cm, rootFile: o.RootCertFile}, Metrics: metrics,
		Logger: log.With("component", "proxy"), AccessLog: log.With("component", "access"),
	})
	if err != nil {
		return err
	}
	defer px.Close()

	// The node agent, in this process, and its hand-off to the proxy.
	agent, err := nodeagent.New(nodeagent.Config{
		NodeName: o.NodeName, ZtunnelSocket: o.ZtunnelSocket,
		// The control plane's own namespace must never wait for the node
		// agent: istiod (and ztunnel itself) could not start while it is
		// down, and it cannot come up without them (Istio excludes it too).
		ExcludeNamespaces: []string{"kube-system", o.PodNamespace},
		CNI:               cniplugin.InstallConfig{BinDir: o.CNIBinDir, ConfDir: o.CNIConfDir},
		DisableCNIInstall: o.DisableCNIInstall,
		RemovedFromNode:   daemonSetGone(kc, o.PodNamespace, o.DaemonSetName, log),
	}, kc, log.With("component", "nodeagent"))
	if err != nil {
		return err
	}
	h := &handoff{proxy: px, certs: cm, td: o.TrustDomain, log: log.With("component", "zds"), pods: map[string]*heldPod{}, synced: xc.Synced()}

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				log.Error("component stopped", "component", name, "err", err)
				cancel()
			}
		}()
	}
	run("xds", xc.Run)
	run("nodeagent", agent.Run)
	run("zds", func(ctx context.Context) error { return h.run(ctx, o.ZtunnelSocket) })

	ready := func() error {
		select {
		case <-xc.Synced():
		default:
			return errors.New("config not received from istiod yet")
		}
		if !h.connected.Load() {
			return errors.New("node agent not connected yet")
		}
		return nil
	}
	servers := []*http.Server{
		{Addr: o.ReadyAddr, Handler: readyHandler(ready)},
		{Addr: o.MetricsAddr, Handler: metricsHandler(reg)},
		{Addr: o.AdminAddr, Handler: adminHandler(st, cm, px, xc, agent)},
	}
	for _, s := range servers {
		s.ReadHeaderTimeout = 5 * time.Second
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
		go s.Serve(ln)
		defer s.Close()
	}
	log.Info("ztunnel started", "node", o.NodeName, "xds", o.XDSAddress, "ca", o.CAAddress)
	<-ctx.Done()
	wg.Wait()
	return nil
}

func readyHandler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h)
	return mux
}

func adminHandler(st *state.Store, cm *certs.Manager, px *proxy.Proxy, xc *xdsclient.Client, agent *nodeagent.Agent) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{
			"state":        st.Snapshot(),
			"certificates": cm.Dump(),
			"connections":  px.Connections(),
			"pods":         agent.Enrolled(),
			"xds":          xc.Status(),
		})
	})
	return mux
}

// handoff takes pods from the node agent over zds and gives them to the
// proxy, holding their network namespace and certificate while enrolled.
type handoff struct {
	proxy     *proxy.Proxy
	certs     *certs.Manager
	td        string
	log       *slog.Logger
	connected atomic.Bool
	pods      map[string]*heldPod
	// synced closes once the first config from istiod-lite is applied. No
	// pod is served before: without its policies (a STRICT converted
	// policy among them) inbound connections would be judged on nothing.
	// The pod's capture rules are in place meanwhile, so its traffic is
	// refused, not let through.
	synced <-chan struct{}
}

type heldPod struct {
	netns *os.File
	id    hbone.Identity
}

func (h *handoff) run(ctx context.Context, socket string) error {
	defer func() {
		for uid := range h.pods {
			h.remove(uid)
		}
	}()
	for ctx.Err() == nil {
		conn, err := zds.Dial(ctx, socket)
		if err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
				continue
			}
		}
		h.connected.Store(true)
		err = h.serve(ctx, conn)
		h.connected.Store(false)
		conn.Close()
		if err != nil && ctx.Err() == nil {
			h.log.Warn("node agent connection lost; reconnecting", "err", err)
		}
	}
	return nil
}

func (h *handoff) serve(ctx context.Context, conn *zds.Conn) error {
	for {
		req, err := conn.Recv(ctx)
		if err != nil {
			return err
		}
		var ackErr error
		switch req.Type {
		case zds.TypePodAdded:
			ackErr = h.add(ctx, req)
		case zds.TypePodRemoved:
			h.remove(req.UID)
		case zds.TypeSnapshot:
			keep := map[string]bool{}
			for _, u := range req.UIDs {
				keep[u] = true
			}
			for uid := range h.pods {
				if !keep[uid] {
					h.remove(uid)
				}
			}
		}
		if err := conn.Ack(ackErr); err != nil {
			return err
		}
	}
}

func (h *handoff) add(ctx context.Context, req zds.Request) error {
	select {
	case <-h.synced:
	case <-ctx.Done():
		req.NetNS.Close()
		return ctx.Err()
	case <-time.After(3 * time.Second):
		req.NetNS.Close()
		return errors.New("no config from istiod-lite yet; the pod stays captured and is retried")
	}
	p := req.Pod
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	id := hbone.Identity{TrustDomain: h.td, Namespace: p.Namespace, ServiceAccount: sa}
	old := h.pods[p.UID]
	if err := h.certs.Acquire(id); err != nil {
		req.NetNS.Close()
		return err
	}
	err := h.proxy.AddPod(ctx, proxy.Pod{
		UID: p.UID, Name: p.Name, Namespace: p.Namespace, Workload: workloadName(p.Name),
		Identity: id, IPs: p.IPs, NetNS: fmt.Sprintf("/proc/self/fd/%d", req.NetNS.Fd()),
	})
	if err != nil {
		h.certs.Release(id)
		req.NetNS.Close()
		return err
	}
	h.pods[p.UID] = &heldPod{netns: req.NetNS, id: id}
	if old != nil {
		h.certs.Release(old.id)
		old.netns.Close()
	}
	h.log.Info("pod added", "pod", p.Namespace+"/"+p.Name, "identity", id.String(), "ips", p.IPs)
	return nil
}

func (h *handoff) remove(uid string) {
	hp := h.pods[uid]
	if hp == nil {
		return
	}
	h.proxy.RemovePod(uid)
	h.certs.Release(hp.id)
	hp.netns.Close()
	delete(h.pods, uid)
	h.log.Info("pod removed", "uid", uid)
}

// workloadName guesses the Deployment name from a pod name
// (<deployment>-<replicaset hash>-<pod hash>), as a metrics label.
func workloadName(pod string) string {
	parts := strings.Split(pod, "-")
	if len(parts) >= 3 {
		return strings.Join(parts[:len(parts)-2], "-")
	}
	return pod
}

// daemonSetGone is nodeagent.Config.RemovedFromNode: the mesh is leaving the
// node when ztunnel's DaemonSet is deleted or being deleted (an uninstall),
// not when one pod stops (a restart, an upgrade, an eviction: the plugin
// stays and new pods wait — fail closed). An unreachable API server counts
// as "not removed".
func daemonSetGone(kc kubernetes.Interface, namespace, name string, log *slog.Logger) func(context.Context) bool {
	return func(ctx context.Context) bool {
		ds, err := kc.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true
		case err != nil:
			log.Warn("cannot tell whether the DaemonSet is being deleted; keeping the CNI plugin", "daemonset", namespace+"/"+name, "err", err)
			return false
		}
		return ds.DeletionTimestamp != nil
	}
}
