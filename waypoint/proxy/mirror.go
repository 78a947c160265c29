package proxy

import (
	"context"
	"io"
	"math/rand/v2"

	"github.com/ambientlite/mesh/waypoint/router"
)

// mirror sends a copy of x's request to each RequestMirror of its rule and
// of the backend picked, sampled by their fractions. Fire and forget: the
// copies run on their own (bounded by Limits.MirrorTimeout), their
// responses are read and dropped, and they never delay or fail the
// request. A copy carries the body as far as the retry buffer keeps it: a
// larger body cuts the copy (counted as failed).
func (dp *dataPlane) mirror(x *exchange, rnd *rand.Rand) {
	for _, list := range [][]router.Mirror{x.rule.Mirrors, x.backend.Mirrors} {
		for _, m := range list {
			if m.Destination != nil && m.Sample(rnd) {
				dp.sendMirror(x, m)
			}
		}
	}
}

func (dp *dataPlane) sendMirror(x *exchange, m router.Mirror) {
	if dp.mirrorsInFlight.Add(1) > int64(dp.lim.MaxMirrors) {
		dp.mirrorsInFlight.Add(-1)
		dp.m.mirrors.WithLabelValues("dropped").Inc()
		return
	}
	t := backendTarget(m.Destination, x.r)
	d, err := dp.resolve(t, x.caller.Identity.Namespace)
	if err != nil {
		dp.mirrorsInFlight.Add(-1)
		dp.m.mirrors.WithLabelValues("failed").Inc()
		dp.log.Debug("mirror: no endpoint", "destination", t.key, "err", err)
		return
	}
	// The copy outlives the request: its own deadline, the request's values.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(x.r.Context()), dp.lim.MirrorTimeout)
	req := x.r.Clone(context.WithValue(ctx, dialKey{}, &d))
	req.RequestURI = ""
	req.URL.Scheme, req.URL.Host = "http", hostOf(d)
	removeHopHeaders(req.Header)
	x.rule.RewriteRequest(req, nil)
	req.GetBody = nil
	req.Body = nil
	if x.body != nil {
		req.Body = x.body.reader(false)
	}
	tr := dp.h1
	if t.h2 {
		tr = dp.h2
	}
	dp.mirrors.Go(func() {
		defer dp.mirrorsInFlight.Add(-1)
		defer cancel()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			dp.m.mirrors.WithLabelValues("failed").Inc()
			dp.log.Debug("mirror failed", "destination", t.key, "err", err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		dp.m.mirrors.WithLabelValues("sent").Inc()
	})
}
