package route

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// benchSnapshot has services Services (each with a v1 and a v2 backend
// Service) and two HTTPRoutes per Service: a 90/10 split on "/", and
// header, query and path matches with filters, timeouts and retries.
func benchSnapshot(services int) Snapshot {
	var snap Snapshot
	str := func(s string) *string { return &s }
	port := func(p int32) *gatewayv1.PortNumber { return &p }
	w := func(v int32) *int32 { return &v }
	prefix := gatewayv1.PathMatchPathPrefix
	exact := gatewayv1.PathMatchExact
	regex := gatewayv1.HeaderMatchRegularExpression
	get := gatewayv1.HTTPMethodGet
	d := func(s string) *gatewayv1.Duration { v := gatewayv1.Duration(s); return &v }
	for i := range services {
		ns := fmt.Sprintf("ns-%d", i%20)
		name := fmt.Sprintf("svc-%d", i)
		for j, n := range []string{name, name + "-v1", name + "-v2"} {
			snap.Services = append(snap.Services, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: ns},
				Spec: corev1.ServiceSpec{
					ClusterIP: fmt.Sprintf("10.%d.%d.%d", j, i/250, i%250),
					Ports:     []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 7070}, {Name: "tcp", Port: 9090}},
				},
			})
		}
		parent := []gatewayv1.ParentReference{{Group: ptrTo[gatewayv1.Group](""), Kind: ptrTo[gatewayv1.Kind]("Service"), Name: gatewayv1.ObjectName(name)}}
		backend := func(n string, weight int32) gatewayv1.HTTPBackendRef {
			return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(n), Port: port(80)}, Weight: w(weight),
			}}
		}
		created := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, i, 0, time.UTC))
		snap.HTTPRoutes = append(snap.HTTPRoutes,
			&gatewayv1.HTTPRoute{
				ObjectMeta: metav1.ObjectMeta{Name: name + "-split", Namespace: ns, CreationTimestamp: created},
				Spec: gatewayv1.HTTPRouteSpec{
					CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent},
					Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{backend(name+"-v1", 90), backend(name+"-v2", 10)}}},
				},
			},
			&gatewayv1.HTTPRoute{
				ObjectMeta: metav1.ObjectMeta{Name: name + "-matches", Namespace: ns, CreationTimestamp: created},
				Spec: gatewayv1.HTTPRouteSpec{
					CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent},
					Rules: []gatewayv1.HTTPRouteRule{
						{
							Matches: []gatewayv1.HTTPRouteMatch{
								{Path: &gatewayv1.HTTPPathMatch{Type: &prefix, Value: str("/api")}, Method: &get},
								{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-version", Type: &regex, Value: "v2.*"}}},
							},
							Filters: []gatewayv1.HTTPRouteFilter{{
								Type:                  gatewayv1.HTTPRouteFilterRequestHeaderModifier,
								RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-route", Value: name}}},
							}},
							BackendRefs: []gatewayv1.HTTPBackendRef{backend(name+"-v2", 1)},
							Timeouts:    &gatewayv1.HTTPRouteTimeouts{Request: d("10s"), BackendRequest: d("2s")},
							Retry:       &gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{503}},
						},
						{
							Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &exact, Value: str("/healthz")}}},
							BackendRefs: []gatewayv1.HTTPBackendRef{backend(name+"-v1", 1)},
						},
					},
				},
			})
	}
	return snap
}

// BenchmarkCompile compiles 200 Services with 2 routes each (every route
// applies to two HTTP-capable ports).
func BenchmarkCompile(b *testing.B) {
	snap := benchSnapshot(200)
	if res := Compile(Config{}, snap); len(res.Tables) != 200 || len(res.Problems) != 0 {
		b.Fatalf("%d tables, problems %v", len(res.Tables), res.Problems)
	}
	b.ReportAllocs()
	for b.Loop() {
		Compile(Config{}, snap)
	}
}
