package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// Throughput: one stream sends benchChunk-byte writes to a destination that
// discards them; the run ends when the destination has read everything. The
// baseline is the same over a direct loopback TCP connection.

const benchChunk = 64 << 10

// sinkUpstream reads until EOF, then reports how much it read.
func sinkUpstream(b *testing.B) (addr string, total chan int64) {
	total = make(chan int64, 16)
	addr = startUpstream(b, func(c *net.TCPConn) {
		buf := make([]byte, 64<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				total <- n
				return
			}
		}
	})
	return addr, total
}

func pump(b *testing.B, w io.Writer, closeWrite func() error, total chan int64) {
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	closeWrite()
	if n := <-total; n != int64(b.N)*benchChunk {
		b.Fatalf("destination read %d bytes, want %d", n, int64(b.N)*benchChunk)
	}
	cpu.report(b)
}

// cpuMeter reports the CPU time (user+system, all threads of the process:
// sender, tunnel ends and destination alike) per operation. On a shared
// machine it is steadier than wall-clock throughput, which depends on how
// many cores the other tenants leave free.
type cpuMeter struct{ start time.Duration }

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-m.start)/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkDirectTCPThroughput(b *testing.B) {
	addr, total := sinkUpstream(b)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	pump(b, c, c.(*net.TCPConn).CloseWrite, total)
}

func BenchmarkTunnelThroughput(b *testing.B) {
	addr, total := sinkUpstream(b)
	f := newFixture(b, func(f *fixture) { f.upstream = addr })
	st := f.dial(b)
	defer st.Close()
	pump(b, st, st.CloseWrite, total)
}

// BenchmarkTunnelThroughputDownload is the other direction: the destination
// sends, the client reads.
func BenchmarkTunnelThroughputDownload(b *testing.B) {
	var n int64
	addr := startUpstream(b, func(c *net.TCPConn) {
		buf := make([]byte, benchChunk)
		for range n {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		c.CloseWrite()
	})
	f := newFixture(b, func(f *fixture) { f.upstream = addr })
	n = int64(b.N)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	st := f.dial(b)
	defer st.Close()
	buf := make([]byte, benchChunk)
	var got int64
	for {
		k, err := st.Read(buf)
		got += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if got != n*benchChunk {
		b.Fatalf("read %d bytes, want %d", got, n*benchChunk)
	}
	cpu.report(b)
}

// BenchmarkStreamSetup opens and closes a tunnel on a warm pooled connection:
// CONNECT, the server's dial to the destination, 200.
func BenchmarkStreamSetup(b *testing.B) {
	f := newFixture(b)
	f.dial(b).Close() // warm the pool
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		st, err := f.dialer.DialContext(context.Background(), f.target())
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
}

// BenchmarkConnectionSetup opens a new connection (TCP, TLS 1.3 with client
// certificates, HTTP/2 preface) and one tunnel on it.
func BenchmarkConnectionSetup(b *testing.B) {
	f := newFixture(b)
	cert := f.ca.issue(b, clientID)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d := &Dialer{
			Certificate: func(context.Context, Identity) (*tls.Certificate, error) { return cert, nil },
			Roots:       f.ca.pool,
		}
		st, err := d.DialContext(context.Background(), f.target())
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
		d.Close()
	}
}

// BenchmarkTunnelThroughputWindows measures the effect of the HTTP/2 receive
// windows (set on both sides) on one stream.
func BenchmarkTunnelThroughputWindows(b *testing.B) {
	for _, w := range []struct {
		name         string
		stream, conn int32
	}{
		{"64KiB-64KiB(HTTP2-default)", 65535, 65535},
		{"1MiB-4MiB", 1 << 20, 4 << 20},
		{"4MiB-16MiB(default)", 4 << 20, 16 << 20},
		{"16MiB-64MiB", 16 << 20, 64 << 20},
	} {
		b.Run(w.name, func(b *testing.B) {
			addr, total := sinkUpstream(b)
			f := newFixture(b, func(f *fixture) {
				f.upstream = addr
				f.srv.StreamWindow, f.srv.ConnWindow = w.stream, w.conn
				f.dialer.StreamWindow, f.dialer.ConnWindow = w.stream, w.conn
			})
			st := f.dial(b)
			defer st.Close()
			pump(b, st, st.CloseWrite, total)
		})
	}
}
