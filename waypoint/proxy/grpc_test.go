package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambientlite/mesh/internal/routeapi"
)

const grpcVIP = "10.96.0.20:9090"

func grpcMatch(service, method string, headers ...*routeapi.HeaderMatch) *routeapi.Match {
	m := &routeapi.Match{GrpcMethod: &routeapi.GRPCMethodMatch{}, Headers: headers}
	if service != "" {
		m.GrpcMethod.Service = &routeapi.StringMatch{Kind: &routeapi.StringMatch_Exact{Exact: service}}
	}
	if method != "" {
		m.GrpcMethod.Method = &routeapi.StringMatch{Kind: &routeapi.StringMatch_Exact{Exact: method}}
	}
	return m
}

func grpcTo(name string, weight uint32) *routeapi.Backend {
	return &routeapi.Backend{Weight: weight, Target: &routeapi.Backend_Destination{Destination: dest(name, 9090, routeapi.Protocol_PROTOCOL_GRPC)}}
}

func grpcRule(name string, backends ...*routeapi.Backend) *routeapi.Rule {
	r := forward(name, backends...)
	r.Origin.Kind = "GRPCRoute"
	return r
}

// grpcShop is Service echo (gRPC port 9090, no endpoints of its own) with
// GRPCRoutes to grpc-a and grpc-b, two real gRPC servers.
func grpcShop(f *l7Fixture, withRoutes bool) {
	a, b := startGRPCBackend(f.t, "a"), startGRPCBackend(f.t, "b")
	f.addresses(clientWorkload(),
		svc("echo", "10.96.0.20", 9090), endpoint("echo-0", "echo", 9090, a),
		svc("grpc-a", "10.96.0.21", 9090), endpoint("grpc-a-0", "grpc-a", 9090, a),
		svc("grpc-b", "10.96.0.22", 9090), endpoint("grpc-b-0", "grpc-b", 9090, b),
		svc("grpc-empty", "10.96.0.23", 9090),
	)
	if !withRoutes {
		return
	}
	f.routesOrSkip(routes("echo", "10.96.0.20", &routeapi.PortRoutes{Port: 9090, Name: "grpc", Protocol: routeapi.Protocol_PROTOCOL_GRPC,
		Producer: ruleSet([]*routeapi.Match{
			grpcMatch("test.Echo", "Say", &routeapi.HeaderMatch{Name: "x-pick", Value: &routeapi.StringMatch{Kind: &routeapi.StringMatch_Exact{Exact: "b"}}}),
			grpcMatch("test.Echo", "Say"),
			grpcMatch("test.Weighted", ""),
			grpcMatch("test.Broken", ""),
			grpcMatch("test.Empty", ""),
		},
			grpcRule("pick-b", grpcTo("grpc-b", 1)),
			withFilters(grpcRule("say", grpcTo("grpc-a", 1)), reqHeaderFilter(headerMod(nil, [][2]string{{"x-added", "by-route"}}))),
			grpcRule("weighted", grpcTo("grpc-a", 1), grpcTo("grpc-b", 1)),
			grpcRule("broken", invalid("no such service", 1)),
			grpcRule("empty", grpcTo("grpc-empty", 1)),
		)}))
}

// TestGRPC: a grpc-go client through the waypoint: GRPCRoute service,
// method and header matches, weights and header modifiers; errors the
// waypoint makes are gRPC statuses.
func TestGRPC(t *testing.T) {
	f := newL7(t, nil)
	grpcShop(f, true)
	cc := f.grpcConn(grpcVIP)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	reply, md, err := grpcSay(ctx, cc, "test.Echo", "Say", "hi")
	if err != nil || reply != "a:hi" {
		t.Fatalf("Say: %q, %v", reply, err)
	}
	if got := strings.Join(md.Get("x-seen-added"), ","); got != "by-route" {
		t.Errorf("backend saw x-added %q, want the route's", got)
	}
	if reply, _, err := grpcSay(ctx, cc, "test.Echo", "Say", "hi", "x-pick", "b"); err != nil || reply != "b:hi" {
		t.Errorf("Say with x-pick: b: %q, %v; want b", reply, err)
	}
	seen := map[string]int{}
	for range 60 {
		reply, _, err := grpcSay(ctx, cc, "test.Weighted", "Any", "w")
		if err != nil {
			t.Fatal(err)
		}
		seen[reply]++
	}
	if seen["a:w"] < 10 || seen["b:w"] < 10 {
		t.Errorf("weighted 1:1 over 60 calls: %v", seen)
	}
	for _, tc := range []struct {
		service, method string
		code            codes.Code
	}{
		{"test.Echo", "Other", codes.Unimplemented}, // no match
		{"test.Broken", "Any", codes.Unavailable},   // invalid backend
		{"test.Empty", "Any", codes.Unavailable},    // no endpoint
	} {
		_, _, err := grpcSay(ctx, cc, tc.service, tc.method, "x")
		if status.Code(err) != tc.code {
			t.Errorf("/%s/%s: %v, want %v", tc.service, tc.method, err, tc.code)
		}
	}
	f.logs.waitLog(t, "request", map[string]any{"path": "/test.Broken/Any", "status": 200.0, "grpcStatus": "14", "flags": "NC"})
	if text := f.metricsText(); !strings.Contains(text, `grpc_response_status="0"`) || !strings.Contains(text, `request_protocol="grpc"`) {
		t.Errorf("gRPC metrics: %s", grep(text, "istio_requests_total"))
	}
}

// TestGRPCWithoutRoutes: gRPC to a service without routes goes to its
// endpoints over HTTP/2; a service without endpoints is UNAVAILABLE.
func TestGRPCWithoutRoutes(t *testing.T) {
	f := newL7(t, nil)
	grpcShop(f, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if reply, _, err := grpcSay(ctx, f.grpcConn(grpcVIP), "any.Service", "Call", "x"); err != nil || reply != "a:x" {
		t.Errorf("without routes: %q, %v", reply, err)
	}
	_, _, err := grpcSay(ctx, f.grpcConn("10.96.0.23:9090"), "any.Service", "Call", "x")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("no endpoint: %v, want Unavailable", err)
	}
}
