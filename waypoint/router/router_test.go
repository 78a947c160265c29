package router

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/ambientlite/mesh/internal/routeapi"
)

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// lookupRule is the name of the rule a GET of path gets at dst from a
// client of namespace ns: "passthrough" when there is no rule set, "404"
// when nothing matches.
func lookupRule(t *testing.T, tbl *Table, dst, ns, path string) string {
	t.Helper()
	rs := tbl.Lookup(mustAddrPort(dst)).RuleSet(ns)
	if rs == nil {
		return "passthrough"
	}
	if r := rs.Match(newRequest("GET", path)); r != nil {
		return r.Origin.GetName()
	}
	return "404"
}

func TestLookup(t *testing.T) {
	svc := echoService(oneRule(forwardRule("v1")), "10.96.0.10", "fd00::a")
	svc.Ports = append(svc.Ports,
		&routeapi.PortRoutes{Port: 9090, Name: "tcp", Protocol: routeapi.Protocol_PROTOCOL_TCP, Producer: oneRule(forwardRule("tcp"))},
		&routeapi.PortRoutes{Port: 8081, Name: "web", Protocol: routeapi.Protocol_PROTOCOL_UNSPECIFIED},
	)
	tbl, problems := Update(nil, map[string]*routeapi.ServiceRoutes{echoName: svc}, nil)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	for _, tc := range []struct {
		name, dst, want string
	}{
		{"found by the IPv4 VIP", "10.96.0.10:80", "v1"},
		{"found by the IPv6 VIP", "[fd00::a]:80", "v1"},
		{"an IPv4-mapped destination is the IPv4 VIP", "[::ffff:10.96.0.10]:80", "v1"},
		{"a zone is ignored", "[fd00::a%eth0]:80", "v1"},
		{"an opaque TCP port never applies rules", "10.96.0.10:9090", "passthrough"},
		{"a port without rule sets passes through", "10.96.0.10:8081", "passthrough"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lookupRule(t, tbl, tc.dst, "client", "/"); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, dst := range []string{"10.96.0.11:80", "10.96.0.10:81"} {
		if p := tbl.Lookup(mustAddrPort(dst)); p != nil {
			t.Errorf("Lookup(%s) = port %d, want nil (pass through)", dst, p.Number)
		}
	}
	p := tbl.Lookup(mustAddrPort("10.96.0.10:8081"))
	want := Port{Service: "echo", Namespace: "mesh", Hostname: "echo.mesh.svc.cluster.local", Number: 8081, Name: "web", Protocol: routeapi.Protocol_PROTOCOL_UNSPECIFIED}
	if p == nil || p.Service != want.Service || p.Namespace != want.Namespace || p.Hostname != want.Hostname || p.Number != want.Number || p.Name != want.Name || p.Protocol != want.Protocol {
		t.Errorf("Lookup(:8081) = %+v, want %+v", p, want)
	}
	var empty *Table
	if empty.Lookup(mustAddrPort("10.96.0.10:80")) != nil || empty.Resource(echoName) != nil || empty.Names() != nil {
		t.Error("a nil Table has routes")
	}
}

// TestRuleSetByClientNamespace: GEP-1294 producer and consumer routes.
func TestRuleSetByClientNamespace(t *testing.T) {
	svc := echoService(oneRule(forwardRule("producer")), "10.96.0.10")
	svc.Ports[0].Consumers = []*routeapi.RuleSet{
		// Out of order on purpose: the table sorts them.
		{Namespace: "zeta", Matches: []*routeapi.Match{{Path: pathExact("/only")}}, Rules: []*routeapi.Rule{forwardRule("zeta")}},
		{Namespace: "alpha", Matches: []*routeapi.Match{{Path: pathPrefix("/")}}, Rules: []*routeapi.Rule{forwardRule("alpha")}},
	}
	tbl, problems := Update(nil, map[string]*routeapi.ServiceRoutes{echoName: svc}, nil)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	for _, tc := range []struct{ name, ns, path, want string }{
		{"a consumer namespace uses its consumer set", "alpha", "/x", "alpha"},
		{"a consumer namespace uses only its set, never the producer's", "zeta", "/x", "404"},
		{"consumer set match", "zeta", "/only", "zeta"},
		{"another namespace uses the producer set", "other", "/x", "producer"},
		{"an unknown client namespace uses the producer set", "", "/x", "producer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lookupRule(t, tbl, "10.96.0.10:80", tc.ns, tc.path); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	// Without a producer set, other namespaces pass through.
	svc = proto.Clone(svc).(*routeapi.ServiceRoutes)
	svc.Ports[0].Producer = nil
	tbl, _ = Update(tbl, map[string]*routeapi.ServiceRoutes{echoName: svc}, nil)
	if got := lookupRule(t, tbl, "10.96.0.10:80", "other", "/x"); got != "passthrough" {
		t.Errorf("no producer set: got %q, want passthrough", got)
	}
	if got := lookupRule(t, tbl, "10.96.0.10:80", "alpha", "/x"); got != "alpha" {
		t.Errorf("no producer set, consumer: got %q, want alpha", got)
	}
}

func TestUpdateLifecycle(t *testing.T) {
	v1 := echoService(oneRule(forwardRule("v1")), "10.96.0.10")
	v2 := echoService(oneRule(forwardRule("v2")), "10.96.0.10")
	bad := echoService(&routeapi.RuleSet{Matches: []*routeapi.Match{{Path: pathRegex("/(")}}, Rules: []*routeapi.Rule{forwardRule("bad")}}, "10.96.0.10")
	const dst = "10.96.0.10:80"

	t1, problems := Update(nil, map[string]*routeapi.ServiceRoutes{echoName: v1}, nil)
	if len(problems) > 0 || lookupRule(t, t1, dst, "", "/") != "v1" {
		t.Fatalf("first version: %v, %s", problems, lookupRule(t, t1, dst, "", "/"))
	}
	t2, problems := Update(t1, map[string]*routeapi.ServiceRoutes{echoName: v2}, nil)
	if len(problems) > 0 || lookupRule(t, t2, dst, "", "/") != "v2" {
		t.Fatalf("upsert replaces: %v, %s", problems, lookupRule(t, t2, dst, "", "/"))
	}
	if got := lookupRule(t, t1, dst, "", "/"); got != "v1" {
		t.Errorf("the previous Table changed: %q", got)
	}

	t.Run("a resource that fails keeps its last good version", func(t *testing.T) {
		t3, problems := Update(t2, map[string]*routeapi.ServiceRoutes{echoName: bad}, nil)
		if len(problems) != 1 || problems[0].Resource != echoName || !strings.Contains(problems[0].Err.Error(), "missing closing )") {
			t.Errorf("problems = %v, want the regex error of %s", problems, echoName)
		}
		if got := lookupRule(t, t3, dst, "", "/"); got != "v2" {
			t.Errorf("got %q, want the last good v2", got)
		}
		if t3.Resource(echoName) != v2 {
			t.Error("Resource is not the last good version")
		}
	})
	t.Run("a resource never good is left out", func(t *testing.T) {
		t3, problems := Update(nil, map[string]*routeapi.ServiceRoutes{echoName: bad}, nil)
		if len(problems) != 1 || t3.Lookup(mustAddrPort(dst)) != nil || len(t3.Names()) != 0 {
			t.Errorf("problems %v, names %v; want one problem and no resource", problems, t3.Names())
		}
	})
	t.Run("removal passes the VIP through", func(t *testing.T) {
		t3, problems := Update(t2, nil, []string{echoName, "mesh/unknown"})
		if len(problems) > 0 || t3.Lookup(mustAddrPort(dst)) != nil {
			t.Errorf("after removal: %v, %v", problems, t3.Lookup(mustAddrPort(dst)))
		}
	})
	t.Run("removal then upsert of the same name upserts", func(t *testing.T) {
		t3, _ := Update(t1, map[string]*routeapi.ServiceRoutes{echoName: v2}, []string{echoName})
		if got := lookupRule(t, t3, dst, "", "/"); got != "v2" {
			t.Errorf("got %q, want v2", got)
		}
	})
	t.Run("removal of a failing resource removes its last good version", func(t *testing.T) {
		t3, _ := Update(t2, map[string]*routeapi.ServiceRoutes{echoName: bad}, nil)
		t4, _ := Update(t3, nil, []string{echoName})
		if t4.Lookup(mustAddrPort(dst)) != nil {
			t.Error("still routed")
		}
	})
	t.Run("a changed VIP is re-indexed", func(t *testing.T) {
		moved := echoService(oneRule(forwardRule("moved")), "10.96.0.99")
		t3, _ := Update(t2, map[string]*routeapi.ServiceRoutes{echoName: moved}, nil)
		if t3.Lookup(mustAddrPort(dst)) != nil || lookupRule(t, t3, "10.96.0.99:80", "", "/") != "moved" {
			t.Error("the old VIP is still routed or the new one is not")
		}
	})
}

// TestAddressConflict: the same VIP in two resources goes to the resource
// whose name sorts first, whatever the order of the updates, and the other
// is reported while the conflict lasts.
func TestAddressConflict(t *testing.T) {
	a := echoService(oneRule(forwardRule("a")), "10.96.0.10", "10.96.0.1")
	a.Name, a.Hostname = "a", "a.mesh.svc.cluster.local"
	b := echoService(oneRule(forwardRule("b")), "10.96.0.10", "10.96.0.2")
	b.Name, b.Hostname = "b", "b.mesh.svc.cluster.local"
	an, bn := a.ResourceName(), b.ResourceName()

	wantConflict := func(t *testing.T, problems []Problem) {
		t.Helper()
		if len(problems) != 1 || problems[0].Resource != bn || !errors.Is(problems[0].Err, ErrAddressConflict) || !strings.Contains(problems[0].Err.Error(), "10.96.0.10 is routed by "+an) {
			t.Errorf("problems = %v, want %s losing 10.96.0.10 to %s", problems, bn, an)
		}
	}
	check := func(t *testing.T, tbl *Table) {
		t.Helper()
		for dst, want := range map[string]string{"10.96.0.10:80": "a", "10.96.0.1:80": "a", "10.96.0.2:80": "b"} {
			if got := lookupRule(t, tbl, dst, "", "/"); got != want {
				t.Errorf("%s: got %q, want %q", dst, got, want)
			}
		}
	}
	t.Run("both at once", func(t *testing.T) {
		tbl, problems := Update(nil, map[string]*routeapi.ServiceRoutes{an: a, bn: b}, nil)
		wantConflict(t, problems)
		check(t, tbl)
	})
	t.Run("the later name first", func(t *testing.T) {
		t1, _ := Update(nil, map[string]*routeapi.ServiceRoutes{bn: b}, nil)
		tbl, problems := Update(t1, map[string]*routeapi.ServiceRoutes{an: a}, nil)
		wantConflict(t, problems)
		check(t, tbl)
	})
	t.Run("the earlier name first", func(t *testing.T) {
		t1, _ := Update(nil, map[string]*routeapi.ServiceRoutes{an: a}, nil)
		tbl, problems := Update(t1, map[string]*routeapi.ServiceRoutes{bn: b}, nil)
		wantConflict(t, problems)
		check(t, tbl)

		t.Run("an unrelated update does not report it again", func(t *testing.T) {
			c := echoService(oneRule(forwardRule("c")), "10.96.0.3")
			_, problems := Update(tbl, map[string]*routeapi.ServiceRoutes{c.ResourceName(): c}, nil)
			if len(problems) != 0 {
				t.Errorf("problems = %v", problems)
			}
		})
		t.Run("removing the winner hands the VIP over", func(t *testing.T) {
			t2, problems := Update(tbl, nil, []string{an})
			if len(problems) != 0 || lookupRule(t, t2, "10.96.0.10:80", "", "/") != "b" {
				t.Errorf("problems %v, 10.96.0.10 → %q; want none and b", problems, lookupRule(t, t2, "10.96.0.10:80", "", "/"))
			}
		})
	})
}

func TestUpdateProblemsSorted(t *testing.T) {
	upserts := map[string]*routeapi.ServiceRoutes{}
	for _, n := range []string{"c", "a", "b"} {
		upserts["mesh/"+n] = nil
	}
	_, problems := Update(nil, upserts, nil)
	var got []string
	for _, p := range problems {
		got = append(got, p.Resource)
	}
	if diff := cmp.Diff([]string{"mesh/a", "mesh/b", "mesh/c"}, got); diff != "" {
		t.Errorf("problem order (-want +got):\n%s", diff)
	}
}

// TestCompileErrors: what routeapi.proto promises is checked; a violation
// fails the resource with an error that says where.
func TestCompileErrors(t *testing.T) {
	good := func() *routeapi.ServiceRoutes {
		return echoService(&routeapi.RuleSet{
			Matches: []*routeapi.Match{{Path: pathPrefix("/")}},
			Rules:   []*routeapi.Rule{forwardRule("r")},
		}, "10.96.0.10")
	}
	rule := func(s *routeapi.ServiceRoutes) *routeapi.Rule { return s.Ports[0].Producer.Rules[0] }
	match := func(s *routeapi.ServiceRoutes) *routeapi.Match { return s.Ports[0].Producer.Matches[0] }
	for _, tc := range []struct {
		name   string
		mutate func(s *routeapi.ServiceRoutes)
		want   string // substring of the error
	}{
		{"resource name must be namespace/hostname", func(s *routeapi.ServiceRoutes) { s.Namespace = "other" }, `"other/echo.mesh.svc.cluster.local"`},
		{"address must be an IP", func(s *routeapi.ServiceRoutes) { s.Addresses = []string{"echo"} }, "address"},
		{"port number 0", func(s *routeapi.ServiceRoutes) { s.Ports[0].Port = 0 }, "not a port number"},
		{"port listed twice", func(s *routeapi.ServiceRoutes) { s.Ports = append(s.Ports, s.Ports[0]) }, "port 80 is listed twice"},
		{"unknown protocol", func(s *routeapi.ServiceRoutes) { s.Ports[0].Protocol = 42 }, "unknown protocol 42"},
		{"empty rule set", func(s *routeapi.ServiceRoutes) { s.Ports[0].Producer.Matches = nil }, "no matches"},
		{"rule index out of range", func(s *routeapi.ServiceRoutes) { match(s).Rule = 1 }, "match 0 selects rule 1 of 1"},
		{"bad path regex", func(s *routeapi.ServiceRoutes) { match(s).Path = pathRegex("a(") }, "missing closing )"},
		{"regex that only the anchors would balance", func(s *routeapi.ServiceRoutes) { match(s).Path = pathRegex("a)|(b") }, "unexpected )"},
		{"bad header regex", func(s *routeapi.ServiceRoutes) { match(s).Headers = []*routeapi.HeaderMatch{hdr("x", strRegex("["))} }, "header x"},
		{"header match without value", func(s *routeapi.ServiceRoutes) { match(s).Headers = []*routeapi.HeaderMatch{{Name: "x"}} }, "no value to match"},
		{"bad header name", func(s *routeapi.ServiceRoutes) { match(s).Headers = []*routeapi.HeaderMatch{hdr("x y", strExact("1"))} }, "not a header name"},
		{"query param without name", func(s *routeapi.ServiceRoutes) {
			match(s).QueryParams = []*routeapi.QueryParamMatch{qp("", strExact("1"))}
		}, "without a name"},
		{"bad grpc regex", func(s *routeapi.ServiceRoutes) {
			match(s).GrpcMethod = &routeapi.GRPCMethodMatch{Method: strRegex("(")}
		}, "gRPC method"},
		{"exact path must be absolute", func(s *routeapi.ServiceRoutes) { match(s).Path = pathExact("abc") }, "does not start with '/'"},
		{"missing action", func(s *routeapi.ServiceRoutes) { rule(s).Action = nil }, "no action"},
		{"forward without backends", func(s *routeapi.ServiceRoutes) { rule(s).GetForward().Backends = nil }, "forward without backends"},
		{"backend weight 0", func(s *routeapi.ServiceRoutes) { rule(s).GetForward().Backends[0].Weight = 0 }, "weight 0"},
		{"backend without target", func(s *routeapi.ServiceRoutes) { rule(s).GetForward().Backends[0].Target = nil }, "neither a destination nor invalid"},
		{"destination without port", func(s *routeapi.ServiceRoutes) { rule(s).GetForward().Backends[0].GetDestination().Port = 0 }, "not a port number"},
		{"CORS on a backend", func(s *routeapi.ServiceRoutes) {
			rule(s).GetForward().Backends[0].Filters = []*routeapi.Filter{corsFilter(&routeapi.CORS{})}
		}, "CORS on a backend"},
		{"two CORS filters", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{corsFilter(&routeapi.CORS{}), corsFilter(&routeapi.CORS{})}
		}, "second CORS filter"},
		{"empty filter", func(s *routeapi.ServiceRoutes) { rule(s).Filters = []*routeapi.Filter{{}} }, "filter 0: no filter"},
		{"direct response status out of range", func(s *routeapi.ServiceRoutes) {
			rule(s).Action = &routeapi.Rule_DirectResponse{DirectResponse: &routeapi.DirectResponse{Status: 42}}
		}, "status 42"},
		{"redirect scheme", func(s *routeapi.ServiceRoutes) {
			rule(s).Action = &routeapi.Rule_Redirect{Redirect: &routeapi.Redirect{Scheme: "ftp"}}
		}, `scheme "ftp"`},
		{"redirect status", func(s *routeapi.ServiceRoutes) {
			rule(s).Action = &routeapi.Rule_Redirect{Redirect: &routeapi.Redirect{StatusCode: 200}}
		}, "status 200 is not a redirect status"},
		{"redirect port", func(s *routeapi.ServiceRoutes) {
			rule(s).Action = &routeapi.Rule_Redirect{Redirect: &routeapi.Redirect{Port: 70000}}
		}, "port 70000"},
		{"header modifier value with a newline", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{reqHeaders(hv("x", "a\r\nb"), nil)}
		}, "not a valid header value"},
		{"full path must be absolute", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{rewriteFilter("", fullPath("x"))}
		}, "does not start with '/'"},
		{"path with a bad escape", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{rewriteFilter("", fullPath("/a%zz"))}
		}, "not a valid escaped path"},
		{"mirror fraction above 1", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{mirrorFilter("m", 3, 2)}
		}, "mirror fraction 3/2"},
		{"mirror denominator 0", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{mirrorFilter("m", 0, 0)}
		}, "mirror fraction 0/0"},
		{"bad CORS origin", func(s *routeapi.ServiceRoutes) {
			rule(s).Filters = []*routeapi.Filter{corsFilter(&routeapi.CORS{AllowOrigins: []string{"www.foo.com"}})}
		}, "allowed origin"},
		{"retry code out of range", func(s *routeapi.ServiceRoutes) { rule(s).Retry = &routeapi.Retry{Attempts: 1, Codes: []uint32{200}} }, "status 200"},
		{"negative timeout", func(s *routeapi.ServiceRoutes) {
			rule(s).Timeouts = &routeapi.Timeouts{Request: dur(-time.Second)}
		}, "negative"},
		{"backend timeout longer than the request timeout", func(s *routeapi.ServiceRoutes) {
			rule(s).Timeouts = &routeapi.Timeouts{Request: dur(time.Second), BackendRequest: dur(2 * time.Second)}
		}, "longer than the request timeout"},
		{"consumer set without namespace", func(s *routeapi.ServiceRoutes) {
			s.Ports[0].Consumers = []*routeapi.RuleSet{oneRule(forwardRule("c"))}
		}, "without a namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(s)
			_, problems := Update(nil, map[string]*routeapi.ServiceRoutes{echoName: s}, nil)
			if len(problems) != 1 || !strings.Contains(problems[0].Err.Error(), tc.want) {
				t.Errorf("problems = %v, want one containing %q", problems, tc.want)
			}
		})
	}
	if _, problems := Update(nil, map[string]*routeapi.ServiceRoutes{echoName: good()}, nil); len(problems) > 0 {
		t.Errorf("the good resource fails: %v", problems)
	}
}

// TestCompileDefaults: fields routeapi.proto says are always set get the
// proto's documented default when they arrive zero.
func TestCompileDefaults(t *testing.T) {
	r := compileOne(t, &routeapi.Rule{
		Action: &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{backend("a", 1)}}},
		Retry:  &routeapi.Retry{Codes: []uint32{503, 500, 503}},
	})
	if diff := cmp.Diff(&Retry{Attempts: 2, Codes: []int{500, 503}, Backoff: 25 * time.Millisecond}, r.Retry); diff != "" {
		t.Errorf("retry defaults (-want +got):\n%s", diff)
	}
	r = compileOne(t, &routeapi.Rule{
		Action:   &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{backend("a", 1)}}},
		Timeouts: &routeapi.Timeouts{Request: dur(10 * time.Second), BackendRequest: dur(2 * time.Second)},
		Retry:    &routeapi.Retry{Attempts: 3, Backoff: dur(time.Second)},
	})
	if r.RequestTimeout != 10*time.Second || r.BackendTimeout != 2*time.Second || r.Retry.Attempts != 3 || r.Retry.Backoff != time.Second {
		t.Errorf("timeouts %v/%v, retry %+v", r.RequestTimeout, r.BackendTimeout, r.Retry)
	}
	r = compileOne(t, redirectRule(&routeapi.Redirect{}))
	if loc, status := r.RedirectTarget(newRequest("GET", "/x")); loc != "http://echo/x" || status != 302 {
		t.Errorf("redirect defaults: %q %d, want http://echo/x 302", loc, status)
	}
	r = compileOne(t, forwardRule("r", corsFilter(&routeapi.CORS{AllowOrigins: []string{"*"}})))
	h := make(map[string][]string)
	r.CORS.Preflight(newRequest("OPTIONS", "/", "Origin", "https://a.example", "Access-Control-Request-Method", "GET"), h)
	if got := h["Access-Control-Max-Age"]; len(got) != 1 || got[0] != "5" {
		t.Errorf("max age default: %q, want 5", got)
	}
}

func TestNames(t *testing.T) {
	a := echoService(oneRule(forwardRule("a")), "10.96.0.1")
	b := echoService(oneRule(forwardRule("b")), "10.96.0.2")
	b.Name, b.Hostname = "b", "b.mesh.svc.cluster.local"
	tbl, _ := Update(nil, map[string]*routeapi.ServiceRoutes{b.ResourceName(): b, a.ResourceName(): a}, nil)
	if diff := cmp.Diff([]string{"mesh/b.mesh.svc.cluster.local", echoName}, tbl.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
}
