package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// BenchmarkThroughput sends 64 KiB chunks from an app in A to B's echo app
// (which echoes; the sender drains the echo concurrently): "direct" is
// plain TCP between the two namespaces bypassing capture on both sides,
// "tunnel" goes A → 15001 → HBONE → B's 15008 → app. The ratio of the two,
// measured in the same run, is logged.
func BenchmarkThroughput(b *testing.B) {
	f := newFixture(b, nil)
	rates := map[string]float64{}
	marked := &net.Dialer{Control: capture.SocketOptions{Mark: capture.DefaultMark}.Control}
	for _, tc := range []struct {
		name string
		dst  netip.AddrPort
		d    *net.Dialer
	}{
		// Marked in A (not captured) to a port B excludes from capture.
		{"direct", netip.AddrPortFrom(ipB, portExcluded), marked},
		{"tunnel", netip.AddrPortFrom(ipB, portEcho), nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := dial(b, f.nsA, tc.dst, tc.d)
			_ = c.SetDeadline(time.Time{})
			done := make(chan int64)
			go func() {
				n, _ := io.Copy(io.Discard, c)
				done <- n
			}()
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.(*net.TCPConn).CloseWrite()
			if n := <-done; n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("echoed %d bytes, sent %d", n, int64(b.N)*int64(len(buf)))
			}
			b.StopTimer()
			rates[tc.name] = float64(b.N) * float64(len(buf)) / b.Elapsed().Seconds() / 1e6
		})
	}
	if rates["direct"] > 0 {
		b.Logf("direct %.0f MB/s, tunnel %.0f MB/s: tunnel/direct = %.2f", rates["direct"], rates["tunnel"], rates["tunnel"]/rates["direct"])
	}
}
