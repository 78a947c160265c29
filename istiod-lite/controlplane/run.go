// Package controlplane is the istiod-lite process: it loads the mesh CA,
// watches Kubernetes, translates it into Istio's ambient resources, serves
// them over delta ADS next to the certificate service on one TLS gRPC port,
// and — on the elected leader only — writes route status, waypoint objects
// and the root ConfigMaps.
package controlplane

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/ambientlite/mesh/istiod-lite/ca"
	"github.com/ambientlite/mesh/istiod-lite/kube"
	"github.com/ambientlite/mesh/istiod-lite/model"
	"github.com/ambientlite/mesh/istiod-lite/trust"
	"github.com/ambientlite/mesh/istiod-lite/waypoint"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// ErrUsage marks a command-line error; main exits 2 on it.
var ErrUsage = errors.New("usage")

// Run is istiod-lite's main: it serves until ctx is done.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o Options
	fs := NewFlagSet(&o)
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
	if err := o.Validate(); err != nil {
		fs.Usage()
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	level, _ := o.level()
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	if o.LogFormat == "text" {
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	} else {
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	}
	// client-go's own messages (leader election, watch errors) go to the
	// same structured log.
	klog.SetSlogLogger(log.With("component", "client-go"))
	return serve(ctx, o, log)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

func serve(ctx context.Context, o Options, log *slog.Logger) error {
	rc, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "istiod-lite"
	clients := kube.Clients{}
	if clients.Kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if clients.Gateway, err = gatewayclient.NewForConfig(rc); err != nil {
		return err
	}
	if clients.Dynamic, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var (
		hl     health
		leader atomic.Bool
	)
	// Probes answer from the start: live at once, ready later.
	readySrv := &http.Server{Addr: o.ReadyAddr, Handler: hl.handler(), ReadHeaderTimeout: 5 * time.Second}
	go serveHTTP(readySrv, "readiness", log)
	defer readySrv.Close()

	caCfg := ca.Config{TrustDomain: o.TrustDomain, DefaultTTL: o.CertTTL, MaxTTL: o.MaxCertTTL}
	authority, source, err := trust.LoadAuthority(ctx, clients.Kube, o.Namespace, caCfg, log)
	if err != nil {
		return fmt.Errorf("mesh CA: %w", err)
	}
	log.Info("mesh CA loaded", "source", string(source), "trustDomain", authority.TrustDomain())

	kc, err := kube.NewCache(clients)
	if err != nil {
		return err
	}
	kc.Start(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, o.SyncTimeout)
	err = kc.WaitForSync(syncCtx)
	cancel()
	if err != nil {
		return err
	}

	store := xds.NewStore(nil)
	pl, err := newPipeline(kc, store, model.Config{TrustDomain: o.TrustDomain, ClusterID: o.ClusterID, DomainSuffix: o.DomainSuffix}, log.With("component", "model"), reg)
	if err != nil {
		return err
	}
	if err := pl.sync(); err != nil {
		return err
	}
	go pl.run(ctx)

	auth := &kube.TokenAuthenticator{Client: clients.Kube, Audiences: o.audiences(), TrustDomain: o.TrustDomain, Pod: kc.Pod}
	caSrv, err := ca.NewServer(ca.ServerConfig{
		Authority: authority, Authenticator: auth.CA(), NodeChecker: kc,
		Logger: log.With("component", "ca"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	xdsSrv, err := xds.NewServer(xds.Config{
		Store: store, Authenticator: auth.XDS(), Debounce: o.Debounce,
		Logger: log.With("component", "xds"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	sc, err := newServingCert(authority, o.dnsNames(), 24*time.Hour)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(sc.tlsConfig())),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	caSrv.Register(gs)
	xdsSrv.Register(gs)
	lis, err := net.Listen("tcp", o.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	go func() {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("grpc server", "err", err)
		}
	}()
	defer gs.Stop()

	monSrv := &http.Server{Addr: o.MonitoringAddr, Handler: monitoringHandler(reg, xdsSrv, store, &leader), ReadHeaderTimeout: 5 * time.Second}
	go serveHTTP(monSrv, "monitoring", log)
	defer monSrv.Close()

	hl.ready.Store(true)
	log.Info("serving", "grpc", o.GRPCAddr, "monitoring", o.MonitoringAddr, "ready", o.ReadyAddr,
		"workloads+services", store.Len(xds.AddressType))

	writers, err := leaderWriters(ctx, o, clients, kc, authority, log, reg)
	if err != nil {
		return err
	}
	sw := &statusWriter{client: clients.Gateway, cache: kc, statuses: pl.statuses,
		controller: pl.routeCfg.ControllerName, log: log.With("component", "route-status")}
	writers = append(writers, writer{"route-status", sw.run})
	lead(ctx, clients.Kube, o, &leader, log, writers)
	<-ctx.Done()
	// Stop being an endpoint first, keep serving while kube-proxy and
	// clients move away, then close streams (clients reconnect elsewhere).
	hl.ready.Store(false)
	log.Info("shutting down: draining", "for", o.ShutdownDrain)
	time.Sleep(o.ShutdownDrain)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		gs.Stop() // ADS streams never end by themselves
	}
	return nil
}

func serveHTTP(s *http.Server, name string, log *slog.Logger) {
	if err := s.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("http server", "server", name, "addr", s.Addr, "err", err)
	}
}

// leaderWriters are the tasks only the elected replica runs.
func leaderWriters(ctx context.Context, o Options, clients kube.Clients, kc *kube.Cache, authority *ca.Authority, log *slog.Logger, reg prometheus.Registerer) ([]writer, error) {
	pub, err := trust.NewPublisher(clients.Kube, authority.RootsPEM(), log.With("component", "root-configmap"))
	if err != nil {
		return nil, err
	}
	// The waypoint controller has informers of its own (Deployments,
	// Services, ServiceAccounts, Gateways with every field): they run for
	// the life of the process so that a replica that becomes leader again
	// finds them synced.
	kubeInf := informers.NewSharedInformerFactory(clients.Kube, 0)
	gwInf := gatewayinformers.NewSharedInformerFactory(clients.Gateway, 0)
	wp, err := waypoint.New(waypoint.Config{
		Kube: clients.Kube, Gateway: clients.Gateway,
		KubeInformers: kubeInf, GatewayInformers: gwInf,
		Image: o.WaypointImage, XDSAddress: o.xdsAddress(), CAAddress: o.xdsAddress(),
		TrustDomain: o.TrustDomain, DomainSuffix: o.DomainSuffix,
		Logger: log.With("component", "waypoint-controller"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	kubeInf.Start(ctx.Done())
	gwInf.Start(ctx.Done())
	return []writer{
		{"root-configmap", pub.Run},
		{"waypoint-controller", func(ctx context.Context) error {
			if err := waypoint.EnsureGatewayClass(ctx, clients.Gateway); err != nil {
				log.Error("gatewayclass", "name", waypoint.ClassName, "err", err)
			}
			return wp.Run(ctx, 2)
		}},
	}, nil
}
