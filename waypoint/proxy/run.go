package proxy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// ErrUsage marks a command-line mistake; main exits 2 on it. The usage has
// been printed to stderr by then.
var ErrUsage = errors.New("usage")

// Run is the waypoint's main. It parses args (over the environment's
// defaults), logs JSON to stderr, and serves until ctx is done; then it
// drains (see Options.DrainGrace) and returns nil. stdout is not written.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level, _ := o.level()
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	return serve(ctx, o, log)
}

// serve runs the waypoint: status and metrics listeners at once, the
// configuration stream and the certificate, then (once both are there) the
// HBONE listener; on ctx's end, the drain.
func serve(ctx context.Context, o Options, log *slog.Logger) error {
	id := o.identity()
	log.Info("starting", "identity", id.String(), "gateway", o.GatewayName, "pod", o.PodName,
		"namespace", o.PodNamespace, "node", o.NodeName, "ip", o.InstanceIP,
		"caAddress", o.CAAddress, "xdsAddress", o.XDSAddress)

	m := newMetrics()
	client, err := meshcert.NewClient(meshcert.Config{
		Address:      o.CAAddress,
		ServerName:   o.CAServerName,
		RootCertFile: o.RootCertFile,
		TokenFile:    o.TokenFile,
		TTL:          o.CertTTL,
	})
	if err != nil {
		return err
	}
	defer client.Close()
	src := &meshcert.Source{Fetcher: client, Identity: id, Logger: log}

	// Configuration: workloads and services into the store, routes into
	// the route table, over one delta ADS stream authenticated by the
	// pod's token (as ztunnel does).
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(o.InstanceIP); err == nil {
		ips = append(ips, ip)
	}
	xc, err := xdsclient.New(xdsclient.Config{
		Address:      o.XDSAddress,
		ServerName:   o.XDSServerName,
		RootCertFile: o.RootCertFile,
		Token:        xdsclient.FileToken(o.TokenFile),
		Node: xdsclient.Node{Type: "waypoint", IPs: ips, PodName: o.PodName, PodNamespace: o.PodNamespace,
			NodeName: o.NodeName, Metadata: map[string]string{"GATEWAY_NAME": o.GatewayName}},
		Logger:     log.With("component", "xds"),
		Registerer: m.reg,
	})
	if err != nil {
		return err
	}
	store := state.New(state.Config{Node: o.NodeName})
	routes := newRouteTable(log.With("component", "routes"), m)
	policies := newPolicyTable(log.With("component", "policies"), m)
	cw, err := watchConfig(xc, store, routes, policies)
	if err != nil {
		return err
	}
	ready := &readiness{src: src, now: time.Now, config: cw.received, xdsErr: func() string { return xc.Status().LastError }}

	// Probes and metrics answer from the start: not ready until the
	// certificate, the configuration and the HBONE listener are there.
	stopHTTP, err := serveHTTP(log, []httpListener{
		{"status", o.StatusAddr, ready.handler()},
		{"metrics", o.MetricsAddr, m.handler()},
	})
	if err != nil {
		return err
	}
	defer stopHTTP()

	// The certificate is renewed and the configuration followed for as
	// long as tunnels may run, drain included: their own contexts.
	bgCtx, stopBg := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() { stopBg(); bg.Wait() }()
	bg.Go(func() { src.Run(bgCtx) })
	bg.Go(func() { xc.Run(bgCtx) })
	if _, err := src.Wait(ctx); err != nil {
		log.Info("stopped before a certificate was issued", "lastError", errString(src.Err()))
		return nil
	}
	if !waitUntil(ctx, cw.received) {
		log.Info("stopped before the configuration arrived", "lastError", xc.Status().LastError)
		return nil
	}

	ln, err := net.Listen("tcp", o.HBONEAddr)
	if err != nil {
		return fmt.Errorf("HBONE listener: %w", err)
	}
	dl := newDrainListener(ln)
	dialer := &hbone.Dialer{Certificate: src.Certificate, Roots: src.Roots(), Logger: log.With("component", "hbone-dialer")}
	defer dialer.Close()
	dp, err := newDataPlane(dataPlaneConfig{
		Identity: id, Dialer: dialer, Store: store, Routes: routes,
		Limits: o.limits(), AllowLoopback: o.AllowLoopback, Metrics: m,
		Log: log, AccessLog: log,
		Authorize: policies.authorize(o.PodNamespace, o.gateway()),
	})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &hbone.Server{
		TLS:            src.ServerTLS(),
		TrustDomain:    o.TrustDomain,
		Authorize:      dp.admitTunnel,
		Handle:         dp.handleTunnel,
		CheckAuthority: checkAuthority(o.AllowLoopback),
		OnTunnelClose:  dp.tunnelClosed,
		Logger:         log,
	}
	if err := srv.Validate(); err != nil {
		ln.Close()
		dp.close()
		return err
	}
	// Serve's context cuts every tunnel when it ends, so it ends only after
	// the drain.
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, dl) }()
	ready.listenerUp.Store(true)
	log.Info("listening", "listener", "hbone", "addr", ln.Addr().String())

	select {
	case err := <-served:
		stopServe()
		dialer.Close()
		dp.close()
		return fmt.Errorf("HBONE server: %w", err)
	case <-ctx.Done():
	}

	ready.draining.Store(true)
	dl.stopAccepting()
	dp.shutdown()
	log.Info("draining", "grace", o.DrainGrace.String(), "tunnels", dp.active.Load())
	cut := drain(&dp.active, o.DrainGrace)
	stopServe()
	err = <-served
	dialer.Close() // fails mirrors and upstream requests still running
	dp.close()
	log.Info("stopped", "tunnelsCut", cut)
	return err
}

// waitUntil polls cond until it holds (true) or ctx ends (false).
func waitUntil(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// drain waits until no tunnel is open or grace has passed, and returns how
// many were still open.
func drain(active interface{ Load() int64 }, grace time.Duration) int64 {
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		n := active.Load()
		if n == 0 || !time.Now().Before(deadline) {
			return n
		}
		<-tick.C
	}
}

type httpListener struct {
	name, addr string
	h          http.Handler
}

// serveHTTP binds every listener (so a taken port fails the start) and
// serves them; stop closes them.
func serveHTTP(log *slog.Logger, ls []httpListener) (stop func(), err error) {
	var srvs []*http.Server
	stop = func() {
		for _, s := range srvs {
			s.Close()
		}
	}
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("%s listener: %w", l.name, err)
		}
		s := &http.Server{Handler: l.h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		srvs = append(srvs, s)
		log.Info("listening", "listener", l.name, "addr", ln.Addr().String())
		go func() {
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server failed", "listener", l.name, "err", err)
			}
		}()
	}
	return stop, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
