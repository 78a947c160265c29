package meshecho

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestGRPCEcho(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{Name: "echo-v2-xyz", Namespace: "demo", Version: "v2"})
	conn := dialGRPC(t, ts.grpcAddr)
	tests := []struct {
		name       string
		req        map[string]any
		md         metadata.MD
		wantCode   codes.Code
		want       map[string]any // compared without RemoteAddr and RequestHeader
		wantHeader string         // an entry of RequestHeader
		minElapsed time.Duration
	}{
		{
			name:       "message echoed",
			req:        map[string]any{"message": "hi there"},
			md:         metadata.Pairs("x-test", "1"),
			wantHeader: "x-test: 1",
			want: map[string]any{
				"ServiceVersion": "v2",
				"Hostname":       "echo-v2-xyz",
				"Namespace":      "demo",
				"Method":         "/meshecho.Echo/Echo",
				"Host":           ts.grpcAddr,
				"Proto":          "GRPC",
				"Message":        "hi there",
				"StatusCode":     float64(0),
			},
		},
		{name: "status field", req: map[string]any{"status": 5}, wantCode: codes.NotFound},
		{name: "status metadata", md: metadata.Pairs("x-echo-status", "7"), wantCode: codes.PermissionDenied},
		{name: "field wins over metadata", req: map[string]any{"status": 0}, md: metadata.Pairs("x-echo-status", "7"), wantCode: codes.OK},
		{name: "delay field", req: map[string]any{"delay": "100ms", "status": 14}, wantCode: codes.Unavailable, minElapsed: 100 * time.Millisecond},
		{name: "bad status", req: map[string]any{"status": 1.5}, wantCode: codes.InvalidArgument},
		{name: "status out of range", req: map[string]any{"status": 17}, wantCode: codes.InvalidArgument},
		{name: "bad delay", req: map[string]any{"delay": "later"}, wantCode: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := structpb.NewStruct(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			out := new(structpb.Struct)
			ctx := metadata.NewOutgoingContext(t.Context(), tc.md)
			start := time.Now()
			err = conn.Invoke(ctx, EchoMethod, req, out)
			if elapsed := time.Since(start); elapsed < tc.minElapsed {
				t.Errorf("answered after %v, want at least %v", elapsed, tc.minElapsed)
			}
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.wantCode)
			}
			if tc.want == nil {
				return
			}
			got := out.AsMap()
			if _, ok := got["RemoteAddr"].(string); !ok {
				t.Errorf("RemoteAddr missing: %v", got)
			}
			headers, _ := got["RequestHeader"].([]any)
			if !slices.Contains(headers, any(tc.wantHeader)) {
				t.Errorf("RequestHeader = %v, want it to contain %q", headers, tc.wantHeader)
			}
			delete(got, "RemoteAddr")
			delete(got, "RequestHeader")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGRPCFailRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		rate float64
		want codes.Code
	}{
		{name: "rate 1 always fails", rate: 1, want: codes.Unavailable},
		{name: "rate 0 never fails", rate: 0, want: codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, ServerConfig{FailRate: tc.rate})
			conn := dialGRPC(t, ts.grpcAddr)
			for range 20 {
				err := conn.Invoke(t.Context(), EchoMethod, &structpb.Struct{}, new(structpb.Struct))
				if got := status.Code(err); got != tc.want {
					t.Fatalf("code = %v (%v), want %v", got, err, tc.want)
				}
			}
			// Health is not subject to the fail rate.
			resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health = %v, %v; want SERVING", resp.GetStatus(), err)
			}
		})
	}
}

func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{})
	client := healthpb.NewHealthClient(dialGRPC(t, ts.grpcAddr))
	for _, service := range []string{"", EchoService} {
		resp, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", service, resp.GetStatus())
		}
	}
}

func TestGRPCReflection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(dialGRPC(t, ts.grpcAddr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatalf("send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		return resp
	}

	var services []string
	list := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	for _, s := range list.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	slices.Sort(services)
	want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "meshecho.Echo"}
	if diff := cmp.Diff(want, services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}

	resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: EchoService}})
	files := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(files) == 0 {
		t.Fatalf("no file for %s: %v", EchoService, resp.GetErrorResponse())
	}
	var fd descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(files[0], &fd); err != nil {
		t.Fatal(err)
	}
	m := fd.GetService()[0].GetMethod()[0]
	got := []string{fd.GetName(), fd.GetService()[0].GetName(), m.GetName(), m.GetInputType(), m.GetOutputType()}
	if diff := cmp.Diff([]string{"meshecho/echo.proto", "Echo", "Echo", ".google.protobuf.Struct", ".google.protobuf.Struct"}, got); diff != "" {
		t.Errorf("descriptor (-want +got):\n%s", diff)
	}
}
