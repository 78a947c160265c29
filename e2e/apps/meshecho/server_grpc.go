package meshecho

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The gRPC echo service. There is no .proto compiler in the build, so the
// service is described by hand: request and response are
// google.protobuf.Struct.
const (
	// EchoService is the gRPC service name.
	EchoService = "meshecho.Echo"
	// EchoMethod is the full method name of the unary Echo call.
	EchoMethod = "/meshecho.Echo/Echo"
	// echoProtoFile is the file name the service is described under for
	// server reflection.
	echoProtoFile = "meshecho/echo.proto"
)

// Request fields of Echo (all optional).
const (
	grpcFieldMessage = "message" // echoed back as Message
	grpcFieldStatus  = "status"  // gRPC code number to return
	grpcFieldDelay   = "delay"   // Go duration to sleep first
)

// echoServer is the handler type of the service.
type echoServer interface {
	Echo(ctx context.Context, in *structpb.Struct) (*structpb.Struct, error)
}

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: EchoService,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler:    echoHandler,
	}},
	Metadata: echoProtoFile,
}

func echoHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(structpb.Struct)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(echoServer).Echo(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(echoServer).Echo(ctx, req.(*structpb.Struct))
	})
}

// echoFiles describes the service for server reflection, in a registry of
// its own (nothing is added to the global one).
var echoFiles = sync.OnceValues(func() (*protoregistry.Files, error) {
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String(echoProtoFile),
		Package:    proto.String("meshecho"),
		Dependency: []string{structpb.File_google_protobuf_struct_proto.Path()},
		Syntax:     proto.String("proto3"),
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Echo"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Echo"),
				InputType:  proto.String(".google.protobuf.Struct"),
				OutputType: proto.String(".google.protobuf.Struct"),
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		return nil, fmt.Errorf("describing %s: %w", echoProtoFile, err)
	}
	files := new(protoregistry.Files)
	if err := files.RegisterFile(structpb.File_google_protobuf_struct_proto); err != nil {
		return nil, err
	}
	if err := files.RegisterFile(fd); err != nil {
		return nil, err
	}
	return files, nil
})

func (s *Server) grpcComponent(ln net.Listener) (component, error) {
	files, err := echoFiles()
	if err != nil {
		return component{}, err
	}
	gs := grpc.NewServer()
	gs.RegisterService(&echoServiceDesc, grpcEcho{s})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(EchoService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	refl := reflection.NewServerV1(reflection.ServerOptions{Services: gs, DescriptorResolver: files})
	reflectionv1.RegisterServerReflectionServer(gs, refl)
	reflectionv1alpha.RegisterServerReflectionServer(gs, reflection.NewServer(reflection.ServerOptions{Services: gs, DescriptorResolver: files}))
	return component{
		name:  "grpc",
		addr:  ln.Addr(),
		serve: func() error { return gs.Serve(ln) },
		stop: func(ctx context.Context) {
			hs.Shutdown() // health turns NOT_SERVING while draining
			done := make(chan struct{})
			go func() {
				gs.GracefulStop()
				close(done)
			}()
			select {
			case <-done:
			case <-ctx.Done():
				gs.Stop()
				<-done
			}
		},
	}, nil
}

// grpcEcho implements echoServer.
type grpcEcho struct{ s *Server }

func (g grpcEcho) Echo(ctx context.Context, in *structpb.Struct) (*structpb.Struct, error) {
	s := g.s
	start := time.Now()
	// Like the HTTP x-echo-* headers: who answered, even with an error.
	grpc.SetHeader(ctx, metadata.Pairs(HeaderHostname, s.cfg.Name, HeaderVersion, s.cfg.Version))
	md, _ := metadata.FromIncomingContext(ctx)
	var remote string
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	code, err := s.grpcEcho(ctx, in, md)
	s.log.Debug("grpc request", "method", EchoMethod, "remote", remote, "code", code, "duration", time.Since(start))
	if err != nil {
		return nil, err
	}
	return structpb.NewStruct(map[string]any{
		"ServiceVersion": s.cfg.Version,
		"Hostname":       s.cfg.Name,
		"Namespace":      s.cfg.Namespace,
		"Method":         EchoMethod,
		"Host":           first(md.Get(":authority")),
		"Proto":          "GRPC",
		"RemoteAddr":     remote,
		"RequestHeader":  metadataLines(md),
		"Message":        in.GetFields()[grpcFieldMessage].GetStringValue(),
		"StatusCode":     int(codes.OK),
	})
}

// grpcEcho applies the failure rate and the request's controls, returning
// the code it answers with and the error to return (nil for OK).
func (s *Server) grpcEcho(ctx context.Context, in *structpb.Struct, md metadata.MD) (codes.Code, error) {
	if s.injectFailure() {
		return codes.Unavailable, status.Error(codes.Unavailable, "meshecho: injected failure (fail rate)")
	}
	code, delay, err := grpcControls(in, md)
	if err != nil {
		return codes.InvalidArgument, status.Error(codes.InvalidArgument, "meshecho: "+err.Error())
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			st := status.FromContextError(ctx.Err())
			return st.Code(), st.Err()
		}
	}
	if code != codes.OK {
		return code, status.Errorf(code, "meshecho: requested status %s", code)
	}
	return codes.OK, nil
}

// grpcControls reads status and delay from the request fields, else from the
// x-echo-status and x-echo-delay metadata.
func grpcControls(in *structpb.Struct, md metadata.MD) (codes.Code, time.Duration, error) {
	fields := in.GetFields()
	code := codes.OK
	switch v := fields[grpcFieldStatus]; {
	case v != nil:
		n := v.GetNumberValue()
		if _, isNum := v.GetKind().(*structpb.Value_NumberValue); !isNum || n != math.Trunc(n) || n < 0 || n > 16 {
			return 0, 0, fmt.Errorf("status %v: want a gRPC code number from 0 to 16", v.AsInterface())
		}
		code = codes.Code(n)
	case len(md.Get("x-echo-status")) > 0:
		raw := md.Get("x-echo-status")[0]
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 || n > 16 {
			return 0, 0, fmt.Errorf("status %q: want a gRPC code number from 0 to 16", raw)
		}
		code = codes.Code(n)
	}
	raw := fields[grpcFieldDelay].GetStringValue()
	if raw == "" {
		raw = first(md.Get("x-echo-delay"))
	}
	var delay time.Duration
	if raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < 0 {
			return 0, 0, fmt.Errorf("delay %q: want a duration such as 150ms", raw)
		}
		delay = d
	}
	return code, delay, nil
}

// metadataLines renders md as "name: value" entries sorted by name, without
// pseudo-headers such as :authority (reported as Host).
func metadataLines(md metadata.MD) []any {
	names := make([]string, 0, len(md))
	for k := range md {
		if !strings.HasPrefix(k, ":") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	lines := []any{}
	for _, k := range names {
		for _, v := range md[k] {
			lines = append(lines, k+": "+v)
		}
	}
	return lines
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}
