package route

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

func TestConfigDefaults(t *testing.T) {
	got := Config{}.withDefaults()
	if got.DomainSuffix != "cluster.local" || got.ControllerName != "istio.io/gateway-controller" || !got.Now.IsZero() || got.AllowCrossNamespaceBackends {
		t.Errorf("defaults: %+v", got)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = valid
	}{
		{"custom", Config{DomainSuffix: "corp.example", ControllerName: "example.net/mesh"}, ""},
		{"leading dot", Config{DomainSuffix: ".cluster.local"}, "domain suffix"},
		{"slash", Config{DomainSuffix: "a/b"}, "domain suffix"},
		{"controller without path", Config{ControllerName: "example.net"}, "controller name"},
		{"controller with space", Config{ControllerName: "example.net/a b"}, "controller name"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestPortProtocol(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		port corev1.ServicePort
		want routeapi.Protocol
		ok   bool
	}{
		{corev1.ServicePort{Name: "http", Port: 80}, routeapi.Protocol_PROTOCOL_HTTP, true},
		{corev1.ServicePort{Name: "http-web", Port: 80}, routeapi.Protocol_PROTOCOL_HTTP, true},
		{corev1.ServicePort{Name: "HTTP2-x", Port: 80}, routeapi.Protocol_PROTOCOL_HTTP2, true},
		{corev1.ServicePort{Name: "grpc", Port: 7070}, routeapi.Protocol_PROTOCOL_GRPC, true},
		{corev1.ServicePort{Name: "grpc-web-ui", Port: 7070}, routeapi.Protocol_PROTOCOL_HTTP, true},
		{corev1.ServicePort{Name: "tcp", Port: 80}, routeapi.Protocol_PROTOCOL_TCP, true},
		{corev1.ServicePort{Name: "https", Port: 443}, routeapi.Protocol_PROTOCOL_TCP, true},
		{corev1.ServicePort{Name: "web", Port: 80}, routeapi.Protocol_PROTOCOL_UNSPECIFIED, true},
		{corev1.ServicePort{Port: 3306}, routeapi.Protocol_PROTOCOL_TCP, true},
		{corev1.ServicePort{Name: "http", Port: 3306}, routeapi.Protocol_PROTOCOL_HTTP, true},
		// appProtocol wins over the name.
		{corev1.ServicePort{Name: "tcp", Port: 80, AppProtocol: str("http")}, routeapi.Protocol_PROTOCOL_HTTP, true},
		{corev1.ServicePort{Name: "http", Port: 80, AppProtocol: str("kubernetes.io/h2c")}, routeapi.Protocol_PROTOCOL_HTTP2, true},
		{corev1.ServicePort{Name: "http", Port: 80, AppProtocol: str("kubernetes.io/ws")}, routeapi.Protocol_PROTOCOL_HTTP, true},
		{corev1.ServicePort{Name: "http", Port: 443, AppProtocol: str("kubernetes.io/wss")}, routeapi.Protocol_PROTOCOL_TCP, true},
		{corev1.ServicePort{Name: "http", Port: 80, AppProtocol: str("example.com/custom")}, routeapi.Protocol_PROTOCOL_UNSPECIFIED, true},
		{corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, routeapi.Protocol_PROTOCOL_UNSPECIFIED, false},
		{corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolSCTP}, routeapi.Protocol_PROTOCOL_UNSPECIFIED, false},
	} {
		got, ok := portProtocol(tc.port)
		if got != tc.want || ok != tc.ok {
			t.Errorf("portProtocol(%+v) = %v, %v; want %v, %v", tc.port, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRedirectPort(t *testing.T) {
	for _, tc := range []struct {
		name        string
		r           redirectTemplate
		servicePort int32
		scheme      string
		port        uint32
	}{
		{"nothing set, service port 80", redirectTemplate{}, 80, "http", 0},
		{"nothing set, service port 8080", redirectTemplate{}, 8080, "http", 8080},
		{"https", redirectTemplate{scheme: "https"}, 8080, "https", 0},
		{"http scheme ignores the service port", redirectTemplate{scheme: "http"}, 8080, "http", 0},
		{"explicit port", redirectTemplate{port: 8443}, 80, "http", 8443},
		{"https on 80", redirectTemplate{scheme: "https", port: 80}, 80, "https", 80},
		{"http on 443", redirectTemplate{port: 443}, 80, "http", 443},
		{"https on 443", redirectTemplate{scheme: "https", port: 443}, 80, "https", 0},
	} {
		got := tc.r.build(tc.servicePort)
		if got.Scheme != tc.scheme || got.Port != tc.port {
			t.Errorf("%s: scheme %q port %d, want %q %d", tc.name, got.Scheme, got.Port, tc.scheme, tc.port)
		}
	}
}

func TestPrecedence(t *testing.T) {
	pt := func(t gatewayv1.PathMatchType, v string) *gatewayv1.HTTPPathMatch {
		return &gatewayv1.HTTPPathMatch{Type: &t, Value: &v}
	}
	get := gatewayv1.HTTPMethodGet
	// Each match is more specific than the next.
	ordered := []gatewayv1.HTTPRouteMatch{
		{Path: pt(gatewayv1.PathMatchExact, "/a")},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/abc/")},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/ab")},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/a"), Method: &get},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/a"), Headers: []gatewayv1.HTTPHeaderMatch{{Name: "a", Value: "1"}, {Name: "b", Value: "1"}}},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/a"), Headers: []gatewayv1.HTTPHeaderMatch{{Name: "a", Value: "1"}, {Name: "A", Value: "2"}}},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/a"), QueryParams: []gatewayv1.HTTPQueryParamMatch{{Name: "q", Value: "1"}}},
		{Path: pt(gatewayv1.PathMatchPathPrefix, "/a")},
		{},
		{Path: pt(gatewayv1.PathMatchRegularExpression, "/.*")},
	}
	var prev *matchTemplate
	for i, m := range ordered {
		mt, err := httpMatch(m)
		if err != nil {
			t.Fatalf("match %d: %v", i, err)
		}
		if prev != nil && comparePrecedence(prev.prec, mt.prec) >= 0 {
			t.Errorf("match %d (%v) is not less specific than match %d (%v)", i, mt.prec, i-1, prev.prec)
		}
		prev = &mt
	}
	if got := normalizePrefix("/abc/"); got != "/abc" {
		t.Errorf("normalizePrefix(/abc/) = %q", got)
	}
	if got := normalizePrefix("/"); got != "/" {
		t.Errorf("normalizePrefix(/) = %q", got)
	}
}

func TestGRPCPrecedence(t *testing.T) {
	str := func(s string) *string { return &s }
	ordered := []gatewayv1.GRPCRouteMatch{
		{Method: &gatewayv1.GRPCMethodMatch{Service: str("pkg.LongerService"), Method: str("M")}},
		{Method: &gatewayv1.GRPCMethodMatch{Service: str("pkg.Service"), Method: str("Method")}},
		{Method: &gatewayv1.GRPCMethodMatch{Service: str("pkg.Service"), Method: str("M")}},
		{Method: &gatewayv1.GRPCMethodMatch{Service: str("pkg.Service")}, Headers: []gatewayv1.GRPCHeaderMatch{{Name: "x", Value: "1"}}},
		{Method: &gatewayv1.GRPCMethodMatch{Service: str("pkg.Service")}},
		{Method: &gatewayv1.GRPCMethodMatch{Method: str("Method")}},
		{},
	}
	var prev *matchTemplate
	for i, m := range ordered {
		mt, err := grpcMatch(m)
		if err != nil {
			t.Fatalf("match %d: %v", i, err)
		}
		if prev != nil && comparePrecedence(prev.prec, mt.prec) >= 0 {
			t.Errorf("match %d (%v) is not less specific than match %d (%v)", i, mt.prec, i-1, prev.prec)
		}
		prev = &mt
	}
	for _, bad := range []gatewayv1.GRPCRouteMatch{
		{Method: &gatewayv1.GRPCMethodMatch{}},
		{Method: &gatewayv1.GRPCMethodMatch{Service: str("a/b")}},
		{Method: &gatewayv1.GRPCMethodMatch{Type: ptrTo(gatewayv1.GRPCMethodMatchRegularExpression), Method: str("(")}},
	} {
		if _, err := grpcMatch(bad); err == nil {
			t.Errorf("grpcMatch(%+v) accepted", *bad.Method)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestFilterErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"same header set and removed", func() error {
			_, err := headerModifier(&gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-A", Value: "1"}}, Remove: []string{"x-a"}})
			return err
		}()},
		{"header value with a newline", func() error {
			_, err := headerModifier(&gatewayv1.HTTPHeaderFilter{Add: []gatewayv1.HTTPHeader{{Name: "x", Value: "a\r\nb"}}})
			return err
		}()},
		{"bad header name", func() error {
			_, err := headerModifier(&gatewayv1.HTTPHeaderFilter{Remove: []string{"a b"}})
			return err
		}()},
		{"missing configuration", func() error { _, err := headerModifier(nil); return err }()},
		{"percent and fraction", func() error {
			_, err := mirror(&gatewayv1.HTTPRequestMirrorFilter{Percent: ptrTo[int32](5), Fraction: &gatewayv1.Fraction{Numerator: 1}})
			return err
		}()},
		{"fraction above 1", func() error {
			_, err := mirror(&gatewayv1.HTTPRequestMirrorFilter{Fraction: &gatewayv1.Fraction{Numerator: 3, Denominator: ptrTo[int32](2)}})
			return err
		}()},
		{"redirect status", func() error {
			_, err := redirect(&gatewayv1.HTTPRequestRedirectFilter{StatusCode: ptrTo(200)}, "", false)
			return err
		}()},
		{"redirect scheme", func() error {
			_, err := redirect(&gatewayv1.HTTPRequestRedirectFilter{Scheme: ptrTo("ftp")}, "", false)
			return err
		}()},
		{"retry code", func() error {
			_, err := retry(&gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{302}})
			return err
		}()},
		{"retry attempts", func() error { _, err := retry(&gatewayv1.HTTPRouteRetry{Attempts: ptrTo(0)}); return err }()},
		{"cors origin", func() error {
			_, err := corsFilter(&gatewayv1.HTTPCORSFilter{AllowOrigins: []gatewayv1.CORSOrigin{"example.com"}})
			return err
		}()},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	mt, err := mirror(&gatewayv1.HTTPRequestMirrorFilter{Fraction: &gatewayv1.Fraction{Numerator: 1}})
	if err != nil || mt.numerator != 1 || mt.denominator != 100 {
		t.Errorf("fraction 1 (default denominator) = %+v, %v", mt, err)
	}
	mt, err = mirror(&gatewayv1.HTTPRequestMirrorFilter{})
	if err != nil || mt.numerator != 1 || mt.denominator != 1 {
		t.Errorf("no percent = %+v, %v", mt, err)
	}
}

// TestAllowCrossNamespaceBackends: with the option, as in Istio, a
// backendRef to another namespace needs no ReferenceGrant.
func TestAllowCrossNamespaceBackends(t *testing.T) {
	snap := loadSnapshot(t, "testdata/cross_namespace_backend.yaml")
	strict := Compile(Config{}, snap)
	open := Compile(Config{AllowCrossNamespaceBackends: true}, snap)
	refs := func(res *Result) string {
		for _, c := range res.Statuses[0].Parents[0].Conditions {
			if c.Type == string(gatewayv1.RouteConditionResolvedRefs) {
				return c.Reason
			}
		}
		return ""
	}
	if got := refs(strict); got != string(gatewayv1.RouteReasonRefNotPermitted) {
		t.Errorf("default: ResolvedRefs reason %q, want RefNotPermitted", got)
	}
	if got := refs(open); got != string(gatewayv1.RouteReasonBackendNotFound) {
		// Only nowhere/ghost is left: it does not exist.
		t.Errorf("AllowCrossNamespaceBackends: ResolvedRefs reason %q, want BackendNotFound", got)
	}
}

// TestCompileDoesNotModifyInput compiles twice from the same objects and
// checks that they are unchanged and the results equal.
func TestCompileDoesNotModifyInput(t *testing.T) {
	snap := loadSnapshot(t, "testdata/filters.yaml")
	before := snap.HTTPRoutes[0].DeepCopy()
	first := Compile(Config{Now: goldenNow}, snap)
	if diff := cmp.Diff(before, snap.HTTPRoutes[0]); diff != "" {
		t.Errorf("Compile modified its input (-before +after):\n%s", diff)
	}
	second := Compile(Config{Now: goldenNow}, snap)
	if diff := cmp.Diff(first.Tables, second.Tables, protocmp.Transform()); diff != "" {
		t.Errorf("second Compile differs:\n%s", diff)
	}
	first.Tables[0].Ports[0].Producer.Rules[0].Origin.Name = "changed"
	if second.Tables[0].Ports[0].Producer.Rules[0].Origin.Name == "changed" {
		t.Error("two Compiles share messages")
	}
}

// TestEmptySnapshot: nothing in, nothing out, nil entries ignored.
func TestEmptySnapshot(t *testing.T) {
	res := Compile(Config{}, Snapshot{Services: []*corev1.Service{nil}, HTTPRoutes: []*gatewayv1.HTTPRoute{nil}})
	if len(res.Tables) != 0 || len(res.Statuses) != 0 || len(res.Problems) != 0 {
		t.Errorf("empty snapshot: %+v", res)
	}
}

// TestRouteWithoutRules: the API's default rule (match everything, no
// backends) answers 500.
func TestRouteWithoutRules(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	hr := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "ns"},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{
			{Group: ptrTo[gatewayv1.Group](""), Kind: ptrTo[gatewayv1.Kind]("Service"), Name: "a"},
		}}},
	}
	res := Compile(Config{}, Snapshot{Services: []*corev1.Service{svc}, HTTPRoutes: []*gatewayv1.HTTPRoute{hr}})
	if len(res.Tables) != 1 {
		t.Fatalf("tables: %v", res.Tables)
	}
	rs := res.Tables[0].Ports[0].Producer
	if got := rs.Rules[0].GetDirectResponse().GetStatus(); got != 500 || rs.Matches[0].GetPath().GetPrefix() != "/" {
		t.Errorf("rule set %v", rs)
	}
}
