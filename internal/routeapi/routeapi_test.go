package routeapi

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestTypeURL(t *testing.T) {
	full := (&ServiceRoutes{}).ProtoReflect().Descriptor().FullName()
	if full != FullName || TypeURL != "type.googleapis.com/"+string(full) {
		t.Errorf("TypeURL %q, FullName %q, descriptor %q", TypeURL, FullName, full)
	}
	if full := (&WaypointPolicy{}).ProtoReflect().Descriptor().FullName(); PolicyTypeURL != "type.googleapis.com/"+string(full) {
		t.Errorf("PolicyTypeURL %q, descriptor %q", PolicyTypeURL, full)
	}
	if got := (&WaypointPolicy{Namespace: "shop", Name: "deny-admin"}).ResourceName(); got != "shop/deny-admin" {
		t.Errorf("WaypointPolicy.ResourceName = %q", got)
	}
}

func TestResourceName(t *testing.T) {
	r := &ServiceRoutes{Name: "echo", Namespace: "mesh", Hostname: "echo.mesh.svc.cluster.local"}
	if got, want := r.ResourceName(), "mesh/echo.mesh.svc.cluster.local"; got != want || ResourceName(r.Namespace, r.Hostname) != want {
		t.Errorf("ResourceName = %q, want %q", got, want)
	}
}

// TestRoundTrip encodes a resource using every kind of field, in binary
// (deterministic, as the xDS server packs it) and in JSON.
func TestRoundTrip(t *testing.T) {
	dest := &Destination{Name: "v1", Namespace: "mesh", Hostname: "v1.mesh.svc.cluster.local", Port: 80, Protocol: Protocol_PROTOCOL_HTTP}
	in := &ServiceRoutes{
		Name: "echo", Namespace: "mesh", Hostname: "echo.mesh.svc.cluster.local",
		Addresses: []string{"10.96.0.1", "fd00::1"},
		Ports: []*PortRoutes{{
			Port: 80, Name: "http", Protocol: Protocol_PROTOCOL_HTTP,
			Producer: &RuleSet{
				Matches: []*Match{
					{Rule: 1, Path: &PathMatch{Kind: &PathMatch_Exact{Exact: "/a"}}, Method: "GET",
						Headers:     []*HeaderMatch{{Name: "x", Value: &StringMatch{Kind: &StringMatch_Regex{Regex: "a.*"}}}},
						QueryParams: []*QueryParamMatch{{Name: "q", Value: &StringMatch{Kind: &StringMatch_Exact{Exact: "1"}}}}},
					{Path: &PathMatch{Kind: &PathMatch_Prefix{Prefix: "/"}}},
				},
				Rules: []*Rule{
					{
						Origin:  &Origin{Kind: "HTTPRoute", Namespace: "mesh", Name: "r", RuleIndex: 1, RuleName: "n"},
						Filters: []*Filter{{Kind: &Filter_RequestMirror{RequestMirror: &Mirror{Destination: dest, Numerator: 1, Denominator: 3}}}},
						Action: &Rule_Forward{Forward: &Forward{Backends: []*Backend{
							{Weight: 9, Target: &Backend_Destination{Destination: dest}},
							{Weight: 1, Target: &Backend_Invalid{Invalid: "not found"}},
						}}},
						Timeouts: &Timeouts{Request: durationpb.New(10 * time.Second)},
						Retry:    &Retry{Attempts: 2, Codes: []uint32{503}, Backoff: durationpb.New(25 * time.Millisecond)},
					},
					{Action: &Rule_Redirect{Redirect: &Redirect{Scheme: "https", StatusCode: 301,
						Path: &PathModifier{Kind: &PathModifier_Prefix{Prefix: &PrefixReplacement{MatchedPrefix: "/a", Replacement: "/b"}}}}}},
				},
			},
			Consumers: []*RuleSet{{Namespace: "client", Matches: []*Match{{GrpcMethod: &GRPCMethodMatch{Service: &StringMatch{Kind: &StringMatch_Exact{Exact: "pkg.S"}}}}},
				Rules: []*Rule{{Action: &Rule_DirectResponse{DirectResponse: &DirectResponse{Status: 500, Reason: "x"}}}}}},
		}},
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := &ServiceRoutes{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("binary round trip:\n in: %v\nout: %v", in, out)
	}
	js, err := protojson.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out = &ServiceRoutes{}
	if err := protojson.Unmarshal(js, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("JSON round trip:\n in: %v\nout: %v", in, out)
	}
}

// TestREADME checks that the README describes every message and enum of
// the protos, and the type URLs.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var names []string
	for _, fd := range []protoreflect.FileDescriptor{File_routeapi_proto, File_policy_proto} {
		for i := range fd.Messages().Len() {
			names = append(names, string(fd.Messages().Get(i).Name()))
		}
		for i := range fd.Enums().Len() {
			names = append(names, string(fd.Enums().Get(i).Name()))
		}
	}
	names = append(names, TypeURL, PolicyTypeURL, "generate.sh")
	for _, n := range names {
		if !strings.Contains(readme, "`"+n+"`") {
			t.Errorf("README.md does not mention `%s`", n)
		}
	}
}
