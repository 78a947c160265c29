package l4bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"fortio.org/fortio/fhttp"
)

// TestFortioLoad runs the fixed-rate load against the app's handler on
// loopback: every request is counted with its latency.
func TestFortioLoad(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(fhttp.EchoHandler))
	defer srv.Close()
	o := fortioOptions{URL: srv.URL + "/", QPS: 200, Conns: 4, Payload: 1024, KeepAlive: true}
	res, err := o.run(500 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests < 80 || res.Requests > 120 || res.Errors != 0 {
		t.Errorf("%d requests, %d errors; want about 100 (200/s for 0.5s), no error", res.Requests, res.Errors)
	}
	if !(0 < res.P50 && res.P50 <= res.P90 && res.P90 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("percentiles not ordered: %+v", res)
	}
	if res.Sockets != 4 {
		t.Errorf("%d connections, want 4 (keep-alive)", res.Sockets)
	}
}

// TestFortioConnections is the connection-rate load: one connection per
// request.
func TestFortioConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(fhttp.EchoHandler))
	defer srv.Close()
	o := fortioOptions{URL: srv.URL + "/", QPS: 0, Conns: 2, KeepAlive: false}
	res, err := o.run(300 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 || res.Sockets < res.Requests {
		t.Errorf("%d requests over %d connections, %d errors; want one connection per request", res.Requests, res.Sockets, res.Errors)
	}
}

// TestBulkToSink sends to the sink over loopback: whole blocks, all
// acknowledged.
func TestBulkToSink(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sinkServer{conns: map[net.Conn]bool{}}
	done := make(chan struct{})
	go func() { s.serve(ln); close(done) }()
	defer func() {
		ln.Close()
		<-done
		s.closeAll()
	}()
	res, err := bulkSend(context.Background(), ln.Addr().String(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes == 0 || res.Bytes%sinkBlock != 0 || res.Seconds < 0.1 {
		t.Errorf("%+v: want whole blocks over at least 0.1s", res)
	}
}

func TestBulkToNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := bulkSend(context.Background(), addr, 10*time.Millisecond); err == nil {
		t.Error("no error with nothing listening")
	}
}
