package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/istiod-lite/kube"
	"github.com/ambientlite/mesh/istiod-lite/model"
	"github.com/ambientlite/mesh/istiod-lite/route"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// servedTypes are the resource types the config server carries.
var servedTypes = []string{xds.AddressType, xds.AuthorizationType, routeapi.TypeURL, routeapi.PolicyTypeURL}

// pipeline turns the Kubernetes cache into served resources: on every
// change (after a short quiet period) it rebuilds the ambient view, diffs it
// against the last one and stores only what changed.
type pipeline struct {
	cache    *kube.Cache
	store    *xds.Store
	modelCfg model.Config
	quiet    time.Duration
	log      *slog.Logger

	prev          *model.View
	routeCfg      route.Config
	tables        map[string]proto.Message // last stored route tables by name
	statuses      *routeStatuses           // latest route status, for the leader's writer
	routeProblems []model.Problem          // of the last compilation
	problems      map[model.Problem]bool   // already logged
	logged        map[string]bool          // decode errors already logged

	translations prometheus.Counter
	duration     prometheus.Histogram
	problemGauge prometheus.Gauge
}

func newPipeline(c *kube.Cache, store *xds.Store, cfg model.Config, log *slog.Logger, reg prometheus.Registerer) (*pipeline, error) {
	p := &pipeline{
		cache: c, store: store, modelCfg: cfg, quiet: 20 * time.Millisecond, log: log,
		problems: map[model.Problem]bool{}, logged: map[string]bool{},
		routeCfg: route.Config{DomainSuffix: cfg.DomainSuffix, ControllerName: route.DefaultControllerName},
		statuses: newRouteStatuses(),
		translations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "istiod_lite_translations_total",
			Help: "Rebuilds of the ambient view from the Kubernetes cache.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "istiod_lite_translation_duration_seconds",
			Help:    "Time to rebuild the ambient view and store what changed.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		problemGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "istiod_lite_config_problems",
			Help: "Objects (or parts of them) skipped by the last translation because they could not be translated.",
		}),
	}
	for _, c := range []prometheus.Collector{p.translations, p.duration, p.problemGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// run rebuilds on every cache change until ctx is done.
func (p *pipeline) run(ctx context.Context) {
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.cache.Changed():
		}
		// Let a burst of events settle, then rebuild once.
		t.Reset(p.quiet)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.sync(); err != nil {
			p.log.Error("store translated config", "err", err)
		}
	}
}

// sync rebuilds once. It is called by run, and once before serving.
func (p *pipeline) sync() error {
	start := time.Now()
	aps, apErrs := p.cache.AuthorizationPolicies()
	pas, paErrs := p.cache.PeerAuthentications()
	for _, err := range append(apErrs, paErrs...) {
		p.logOnce(err.Error())
	}
	snap := model.Snapshot{
		Namespaces:            p.cache.Namespaces(),
		Pods:                  p.cache.Pods(),
		Services:              p.cache.Services(),
		EndpointSlices:        p.cache.EndpointSlices(),
		Gateways:              p.cache.Gateways(),
		AuthorizationPolicies: aps,
		PeerAuthentications:   pas,
	}
	view := model.Build(p.modelCfg, snap)
	// Policies first: a workload must never name a policy the proxy has
	// not been sent yet.
	if err := p.storeChanges(xds.AuthorizationType, model.DiffAuthorizations(p.prev, view), view, authorizationsByName); err != nil {
		return fmt.Errorf("authorizations: %w", err)
	}
	if err := p.storeChanges(routeapi.PolicyTypeURL, model.DiffWaypointPolicies(p.prev, view), view, waypointPoliciesByName); err != nil {
		return fmt.Errorf("waypoint policies: %w", err)
	}
	if err := p.storeChanges(xds.AddressType, model.Diff(p.prev, view), view, addressesByName); err != nil {
		return fmt.Errorf("addresses: %w", err)
	}
	p.prev = view

	// Waypoint route tables, one resource per Service with routes; only
	// recompiled when something the compiler reads changed.
	if p.cache.TakeRoutesDirty() {
		if err := p.compileRoutes(snap); err != nil {
			return err
		}
	}
	view.Problems = append(view.Problems, p.routeProblems...)
	p.reportProblems(view.Problems)
	p.translations.Inc()
	p.duration.Observe(time.Since(start).Seconds())
	return nil
}

// storeChanges stores what changed in one type of resource: the names in
// c.Updated, taken from byName(view), and the removals.
func (p *pipeline) storeChanges(typeURL string, c model.Changes, view *model.View, byName func(*model.View) map[string]proto.Message) error {
	if c.Empty() {
		return nil
	}
	all := byName(view)
	upserts := make(map[string]proto.Message, len(c.Updated))
	for _, n := range c.Updated {
		upserts[n] = all[n]
	}
	if err := p.store.Update(typeURL, upserts, c.Removed); err != nil {
		return err
	}
	p.log.Debug("resources changed", "type", typeURL, "updated", len(c.Updated), "removed", len(c.Removed))
	return nil
}

func authorizationsByName(v *model.View) map[string]proto.Message {
	out := make(map[string]proto.Message, len(v.Authorizations))
	for _, a := range v.Authorizations {
		out[model.AuthorizationResourceName(a)] = a
	}
	return out
}

func waypointPoliciesByName(v *model.View) map[string]proto.Message {
	out := make(map[string]proto.Message, len(v.WaypointPolicies))
	for _, wp := range v.WaypointPolicies {
		out[wp.ResourceName()] = wp
	}
	return out
}

func addressesByName(v *model.View) map[string]proto.Message {
	out := make(map[string]proto.Message, len(v.Workloads)+len(v.Services))
	for _, w := range v.Workloads {
		out[w.GetUid()] = &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	}
	for _, s := range v.Services {
		out[model.ServiceResourceName(s)] = &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
	}
	return out
}

// reportProblems logs each problem once, when it first appears.
func (p *pipeline) reportProblems(problems []model.Problem) {
	seen := make(map[model.Problem]bool, len(problems))
	for _, pr := range problems {
		seen[pr] = true
		if !p.problems[pr] {
			p.log.Warn("skipped untranslatable config", "kind", pr.Ref.Kind, "namespace", pr.Ref.Namespace, "name", pr.Ref.Name, "reason", pr.Reason)
		}
	}
	p.problems = seen
	p.problemGauge.Set(float64(len(problems)))
}

// logOnce logs a warning the first time it is seen.
func (p *pipeline) logOnce(msg string) {
	if !p.logged[msg] {
		p.logged[msg] = true
		p.log.Warn(msg)
	}
}

// diffMessages returns what to upsert and remove to go from old to cur.
func diffMessages(old, cur map[string]proto.Message) (map[string]proto.Message, []string) {
	ups := map[string]proto.Message{}
	var rms []string
	for n, m := range cur {
		if o, ok := old[n]; !ok || !proto.Equal(o, m) {
			ups[n] = m
		}
	}
	for n := range old {
		if _, ok := cur[n]; !ok {
			rms = append(rms, n)
		}
	}
	return ups, rms
}

// compileRoutes compiles the waypoint route tables, stores what changed and
// hands the route status to the writer.
func (p *pipeline) compileRoutes(snap model.Snapshot) error {
	res := route.Compile(p.routeCfg, route.Snapshot{
		Namespaces:      snap.Namespaces,
		Services:        snap.Services,
		HTTPRoutes:      p.cache.HTTPRoutes(),
		GRPCRoutes:      p.cache.GRPCRoutes(),
		ReferenceGrants: p.cache.ReferenceGrants(),
	})
	tables := make(map[string]proto.Message, len(res.Tables))
	for _, t := range res.Tables {
		tables[t.ResourceName()] = t
	}
	if ups, rms := diffMessages(p.tables, tables); len(ups)+len(rms) > 0 {
		if err := p.store.Update(routeapi.TypeURL, ups, rms); err != nil {
			return fmt.Errorf("route tables: %w", err)
		}
		p.log.Debug("route tables changed", "updated", len(ups), "removed", len(rms))
	}
	p.tables = tables
	p.statuses.publish(res.Statuses)
	p.routeProblems = p.routeProblems[:0]
	p.routeProblems = append(p.routeProblems, res.Problems...)
	return nil
}
