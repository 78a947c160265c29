package route

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// request is what a waypoint knows about a request when it picks a rule.
type request struct {
	clientNS string
	vip      string
	port     uint32
	method   string
	path     string // with the query string
	headers  map[string]string
}

// walk picks the rule for req the way routeapi.proto tells a waypoint to:
// table by VIP, port, rule set by client namespace, first match in order.
// It returns "passthrough", "404", or a description of the rule's action.
func walk(t *testing.T, tables []*routeapi.ServiceRoutes, req request) string {
	t.Helper()
	var tbl *routeapi.ServiceRoutes
	for _, x := range tables {
		for _, a := range x.Addresses {
			if a == req.vip {
				tbl = x
			}
		}
	}
	var port *routeapi.PortRoutes
	for _, p := range tbl.GetPorts() {
		if p.Port == req.port {
			port = p
		}
	}
	set := port.GetProducer()
	for _, c := range port.GetConsumers() {
		if c.Namespace == req.clientNS {
			set = c
		}
	}
	if set == nil || port.Protocol == routeapi.Protocol_PROTOCOL_TCP {
		return "passthrough"
	}
	for _, m := range set.Matches {
		if matches(t, m, req) {
			return describe(set.Rules[m.Rule])
		}
	}
	return "404"
}

func matches(t *testing.T, m *routeapi.Match, req request) bool {
	path, rawQuery, _ := strings.Cut(req.path, "?")
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		t.Fatal(err)
	}
	full := func(re, s string) bool { return regexp.MustCompile("^(?:" + re + ")$").MatchString(s) }
	str := func(sm *routeapi.StringMatch, v string, present bool) bool {
		if !present {
			return false
		}
		if sm.GetRegex() != "" {
			return full(sm.GetRegex(), v)
		}
		return sm.GetExact() == v
	}
	switch k := m.GetPath().GetKind().(type) {
	case *routeapi.PathMatch_Exact:
		if path != k.Exact {
			return false
		}
	case *routeapi.PathMatch_Prefix:
		if k.Prefix != "/" && path != k.Prefix && !strings.HasPrefix(path, k.Prefix+"/") {
			return false
		}
	case *routeapi.PathMatch_Regex:
		if !full(k.Regex, path) {
			return false
		}
	}
	if m.Method != "" && m.Method != req.method {
		return false
	}
	for _, h := range m.Headers {
		v, ok := req.headers[h.Name]
		if !str(h.Value, v, ok) {
			return false
		}
	}
	for _, q := range m.QueryParams {
		if !str(q.Value, query.Get(q.Name), query.Has(q.Name)) {
			return false
		}
	}
	if g := m.GrpcMethod; g != nil {
		svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
		if !ok || (g.Service != nil && !str(g.Service, svc, true)) || (g.Method != nil && !str(g.Method, method, true)) {
			return false
		}
	}
	return true
}

// describe renders a rule's action and response headers compactly:
// "echo-v1:8080", "echo-v1:8080*70 echo-v2:8080*30",
// "redirect https://-:0/=302", "500", plus " +x-header-set=v1".
func describe(r *routeapi.Rule) string {
	var b strings.Builder
	switch a := r.Action.(type) {
	case *routeapi.Rule_Forward:
		for i, be := range a.Forward.Backends {
			if i > 0 {
				b.WriteString(" ")
			}
			if d := be.GetDestination(); d != nil {
				fmt.Fprintf(&b, "%s:%d", d.Name, d.Port)
			} else {
				b.WriteString("invalid")
			}
			if len(a.Forward.Backends) > 1 {
				fmt.Fprintf(&b, "*%d", be.Weight)
			}
		}
	case *routeapi.Rule_Redirect:
		rd := a.Redirect
		path := "-"
		switch p := rd.GetPath().GetKind().(type) {
		case *routeapi.PathModifier_FullPath:
			path = p.FullPath
		case *routeapi.PathModifier_Prefix:
			path = p.Prefix.MatchedPrefix + "->" + p.Prefix.Replacement
		}
		host := rd.Hostname
		if host == "" {
			host = "-"
		}
		fmt.Fprintf(&b, "redirect %s://%s:%d%s=%d", rd.Scheme, host, rd.Port, path, rd.StatusCode)
	case *routeapi.Rule_DirectResponse:
		fmt.Fprintf(&b, "%d", a.DirectResponse.Status)
	}
	for _, f := range r.Filters {
		if rh := f.GetResponseHeaderModifier(); rh != nil {
			for _, h := range rh.Set {
				fmt.Fprintf(&b, " +%s=%s", h.Name, h.Value)
			}
		}
		if rw := f.GetUrlRewrite(); rw != nil {
			if p := rw.GetPath().GetPrefix(); p != nil {
				fmt.Fprintf(&b, " rewrite %s->%s", p.MatchedPrefix, p.Replacement)
			}
		}
	}
	return b.String()
}

// TestMeshConformance checks the compiled tables against the requests and
// expected outcomes of the Gateway API v1.6.3 mesh conformance tests
// (conformance/tests/mesh), walked as a waypoint would.
func TestMeshConformance(t *testing.T) {
	res := Compile(Config{}, loadSnapshot(t, "testdata/conformance/mesh.yaml"))
	const (
		ns       = "gateway-conformance-mesh"
		consumer = "gateway-conformance-mesh-consumer"
		echo     = "10.0.0.1"
		echoV1   = "10.0.0.2"
		echoV2   = "10.0.0.3"
	)
	get := func(vip string, port uint32, path string, headers ...string) request {
		h := map[string]string{}
		for i := 0; i+1 < len(headers); i += 2 {
			h[strings.ToLower(headers[i])] = headers[i+1]
		}
		return request{clientNS: ns, vip: vip, port: port, method: "GET", path: path, headers: h}
	}
	from := func(clientNS string, r request) request { r.clientNS = clientNS; return r }
	for _, tc := range []struct {
		test string
		req  request
		want string
	}{
		// MeshPorts
		{"MeshPorts explicit port", get(echoV1, 80, "/"), "echo-v1:80 +x-header-set=v1"},
		{"MeshPorts excluded port", get(echoV1, 9090, "/"), "passthrough"},
		{"MeshPorts no port", get(echoV2, 80, "/"), "echo-v2:80 +x-header-set=v2"},
		{"MeshPorts no port, other port", get(echoV2, 8080, "/"), "echo-v2:80 +x-header-set=v2"},
		// MeshFrontend: a Service without routes, and traffic to pod IPs, pass through.
		{"MeshFrontend no route", get("10.0.0.99", 80, "/"), "passthrough"},
		// MeshConsumerRoute
		{"MeshConsumerRoute consumer", from(consumer, get(echoV1, 80, "/")), "echo-v1:80 +x-header-set=set"},
		{"MeshConsumerRoute producer", get(echoV1, 80, "/"), "echo-v1:80 +x-header-set=v1"},
		// MeshTrafficSplit
		{"MeshTrafficSplit v1", get(echo, 80, "/v1"), "echo-v1:80"},
		{"MeshTrafficSplit v2", get(echo, 80, "/v2"), "echo-v2:80"},
		// MeshHTTPRouteMatching
		{"Matching /", get(echo, 80, "/"), "echo-v1:8080"},
		{"Matching /example", get(echo, 80, "/example"), "echo-v1:8080"},
		{"Matching / version one", get(echo, 80, "/", "Version", "one"), "echo-v1:8080"},
		{"Matching /v2/example", get(echo, 80, "/v2/example"), "echo-v2:8080"},
		{"Matching / version two", get(echo, 80, "/", "Version", "two"), "echo-v2:8080"},
		{"Matching /v2/", get(echo, 80, "/v2/"), "echo-v2:8080"},
		{"Matching /v2example", get(echo, 80, "/v2example"), "echo-v1:8080"},
		{"Matching /foo/v2/example", get(echo, 80, "/foo/v2/example"), "echo-v1:8080"},
		// MeshHTTPRouteQueryParamMatching
		{"Query whale", get(echo, 8080, "/?animal=whale"), "echo-v1:8080"},
		{"Query dolphin", get(echo, 8080, "/?animal=dolphin"), "echo-v2:8080"},
		{"Query whale+other", get(echo, 8080, "/?animal=whale&otherparam=irrelevant"), "echo-v1:8080"},
		{"Query dolphin+color", get(echo, 8080, "/?animal=dolphin&color=yellow"), "echo-v2:8080"},
		{"Query color only", get(echo, 8080, "/?color=blue"), "404"},
		{"Query dog", get(echo, 8080, "/?animal=dog"), "404"},
		{"Query whaledolphin", get(echo, 8080, "/?animal=whaledolphin"), "404"},
		{"Query none", get(echo, 8080, "/"), "404"},
		{"Query path1", get(echo, 8080, "/path1?animal=whale"), "echo-v1:8080"},
		{"Query header+param", get(echo, 8080, "/?animal=whale", "version", "one"), "echo-v2:8080"},
		{"Query path3", get(echo, 8080, "/path3?animal=shark"), "echo-v1:8080"},
		{"Query path4", get(echo, 8080, "/path4?animal=kraken", "version", "three"), "echo-v1:8080"},
		{"Query path5 beats hydra", get(echo, 8080, "/path5?animal=hydra"), "echo-v1:8080"},
		{"Query hydra", get(echo, 8080, "/?animal=hydra"), "echo-v2:8080"},
		// MeshHTTPRouteNamedRule
		{"NamedRule", get(echo, 8080, "/named"), "echo-v1:8080"},
		// Redirects: the mesh request scheme is http; the Location port is
		// derived from the scheme or the service port (8080 here).
		{"SchemeRedirect", get(echoV1, 8080, "/scheme"), "redirect https://-:0-=302"},
		{"RedirectPort", get(echoV1, 8080, "/port"), "redirect http://-:8083-=302"},
		{"RedirectHostname", get(echoV1, 8080, "/hostname-redirect"), "redirect http://example.org:8080-=302"},
		{"RedirectPath", get(echoV1, 8080, "/prefix-redirect/x"), "redirect http://-:8080/prefix-redirect->/replacement-prefix=303"},
		// MeshHTTPRouteRewritePath
		{"RewritePath", get(echoV1, 8080, "/prefix/x"), "echo-v1:8080 rewrite /prefix->/one"},
		// MeshHTTPRouteWeight
		{"Weight", get(echoV1, 8080, "/weighted"), "echo-v1:8080*70 echo-v2:8080*30"},
		// MeshGRPCRouteWeight: weight 0 is left out.
		{"GRPCWeight", request{clientNS: ns, vip: echo, port: 7070, method: "POST", path: "/grpc.testing.EchoTestService/Echo"},
			"echo-v1:7070*70 echo-v2:7070*30"},
	} {
		if got := walk(t, res.Tables, tc.req); got != tc.want {
			t.Errorf("%s: %s %s%s → %q, want %q", tc.test, tc.req.clientNS, tc.req.vip, tc.req.path, got, tc.want)
		}
	}
	for _, st := range res.Statuses {
		for _, p := range st.Parents {
			if p.Conditions[0].Status != "True" {
				t.Errorf("%s %s/%s not accepted: %s", st.Kind, st.Namespace, st.Name, p.Conditions[0].Message)
			}
		}
	}
}
