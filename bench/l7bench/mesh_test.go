package l7bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/internal/golden"
	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/istiod-lite/xds"
	"github.com/ambientlite/mesh/ztunnel/state"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestMeshGolden: what the xDS server serves, as protojson by type and
// name (testdata/mesh.golden; go test -update rewrites it).
func TestMeshGolden(t *testing.T) {
	res, err := compileMesh()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, typeURL := range []string{xds.AddressType, xds.AuthorizationType, routeapi.TypeURL} {
		b.WriteString("# " + typeURL + "\n")
		byName := res[typeURL]
		for _, name := range sortedKeys(byName) {
			js, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(byName[name])
			if err != nil {
				t.Fatal(err)
			}
			// protojson's spacing is not stable by design: reformat.
			var out bytes.Buffer
			if err := jsonIndent(&out, js); err != nil {
				t.Fatal(err)
			}
			b.WriteString("## " + name + "\n" + out.String() + "\n")
		}
	}
	golden.Check(t, filepath.Join("testdata", "mesh.golden"), b.Bytes(), *update)
}

// TestMesh: the translated mesh resolves as the topology needs, in a
// ztunnel's store: the reviews VIP goes to the waypoint (its pod, HBONE,
// with the VIP as authority), the v1 pod's address straight to it; the
// route splits reviews 90/10 between reviews-v1 and reviews-v2, whose
// endpoints are the two server pods.
func TestMesh(t *testing.T) {
	res, err := compileMesh()
	if err != nil {
		t.Fatal(err)
	}
	st := state.New(state.Config{Node: "client"})
	var ups []xdsclient.TypedResource[*workloadapi.Address]
	for name, m := range res[xds.AddressType] {
		ups = append(ups, xdsclient.TypedResource[*workloadapi.Address]{Name: name, Message: m.(*workloadapi.Address)})
	}
	if err := st.ApplyAddresses(ups, nil); err != nil {
		t.Fatal(err)
	}
	for ip, id := range map[netip.Addr]string{clientIP: clientID.String(), v1IP: reviewsID.String(), v2IP: reviewsID.String(), waypointIP: waypointID.String()} {
		w := st.WorkloadByAddress("", ip)
		if w == nil || w.Identity().String() != id {
			t.Errorf("workload at %s: %v, want identity %s", ip, w, id)
		}
	}
	src := st.SourceWorkload(clientIP)
	d, err := st.DestinationFor("", reviewsVIP, portService, src)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != state.ViaWaypoint || d.Address != netip.AddrPortFrom(waypointIP, portHBONE) ||
		d.Authority != netip.AddrPortFrom(reviewsVIP, portService) || d.Identity != waypointID {
		t.Errorf("reviews VIP: %+v, want the waypoint pod over HBONE with the VIP as authority", d)
	}
	d, err = st.DestinationFor("", v1IP, portApp, src)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != state.Direct || d.Protocol != state.HBONE || d.Address != netip.AddrPortFrom(v1IP, portHBONE) || d.Identity != reviewsID {
		t.Errorf("v1 pod: %+v, want it directly over HBONE", d)
	}

	var routes *routeapi.ServiceRoutes
	for _, m := range res[routeapi.TypeURL] {
		routes = m.(*routeapi.ServiceRoutes)
	}
	if len(res[routeapi.TypeURL]) != 1 || !slices.Contains(routes.GetAddresses(), reviewsVIP.String()) {
		t.Fatalf("routes: %v, want one table for the reviews VIP", res[routeapi.TypeURL])
	}
	var weights = map[string]uint32{}
	for _, p := range routes.GetPorts() {
		if p.GetPort() != uint32(portService) {
			continue
		}
		for _, r := range p.GetProducer().GetRules() {
			for _, be := range r.GetForward().GetBackends() {
				weights[be.GetDestination().GetName()] = be.GetWeight()
			}
		}
	}
	if weights["reviews-v1"] != 90 || weights["reviews-v2"] != 10 || len(weights) != 2 {
		t.Errorf("backends of port %d: %v, want reviews-v1 90, reviews-v2 10", portService, weights)
	}
	for _, name := range []string{"reviews-v1", "reviews-v2"} {
		d, err := st.DestinationFor("", svcVIP(t, st, name), portService, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]netip.Addr{"reviews-v1": v1IP, "reviews-v2": v2IP}[name]
		if d.Kind != state.Direct || d.Address.Addr() != want || d.Authority != netip.AddrPortFrom(want, portApp) {
			t.Errorf("%s: %+v, want its pod %s, port %d", name, d, want, portApp)
		}
	}
}

// svcVIP is the VIP of Service name in namespace bench.
func svcVIP(t *testing.T, st *state.Store, name string) netip.Addr {
	t.Helper()
	for _, s := range st.Snapshot().Services {
		if s.Name == name && s.Namespace == "bench" {
			for _, a := range s.VIPs {
				return a.Address
			}
		}
	}
	t.Fatalf("no Service %s", name)
	return netip.Addr{}
}

func sortedKeys(m map[string]proto.Message) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func jsonIndent(out *bytes.Buffer, js []byte) error { return json.Indent(out, js, "", "  ") }
