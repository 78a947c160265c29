package proxy

import (
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// BenchmarkRequest: one small GET per op, keep-alive, over loopback, all
// in one process:
//
//   - direct: client → backend (the baseline);
//   - waypoint-h1, waypoint-h2: client → HBONE → waypoint (rule matched, a
//     request header filter, an endpoint picked, metrics and access log) →
//     HBONE → test ztunnel → backend, HTTP/1.1 or HTTP/2 on both sides.
//
// Compare ns/op and allocs/op with direct in the same run:
//
//	go test -run xxx -bench Request -benchtime 2s ./waypoint/proxy/
func BenchmarkRequest(b *testing.B) {
	f := newL7(b, nil)
	f.dp.accessLog = slogTo(io.Discard) // still formatted, as in production

	f.dp.log = f.dp.accessLog
	be := f.shop()
	if !routerMissing() {
		if err := f.applyRoutes(nil, routes("reviews", "10.96.0.10", httpPort(80, ruleSet([]*routeapi.Match{prefix("/")},
			withFilters(forward("bench", to("reviews", 1)), reqHeaderFilter(headerMod([][2]string{{"x-bench", "1"}}, nil))))))); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B, c *http.Client, url string) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		run(b, &http.Client{Transport: tr}, "http://127.0.0.1:"+strconv.Itoa(int(be.reviews.port))+"/bench")
	})
	b.Run("waypoint-h1", func(b *testing.B) { run(b, f.client(clientID, reviewsVIP, false), "http://reviews.shop/bench") })
	b.Run("waypoint-h2", func(b *testing.B) { run(b, f.client(clientID, reviewsVIP, true), "http://reviews.shop/bench") })
}
