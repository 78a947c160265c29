//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sniffer is a packet capture on the node: an AF_PACKET socket on every
// interface (the pods' veths and the bridge), keeping the TCP segments
// between a set of pod IPs. It is what `tcpdump -i any` would show, read
// here so the test can check the bytes.
type sniffer struct {
	fd       int
	ips      map[netip.Addr]bool
	done     chan struct{}
	stopOnce sync.Once

	mu   sync.Mutex
	segs []segment
}

// segment is one captured TCP segment between two watched IPs.
type segment struct {
	src, dst netip.AddrPort
	syn      bool
	payload  []byte // at most the first 64 bytes
}

func (s segment) String() string {
	return fmt.Sprintf("%s → %s syn=%v %d payload bytes %q", s.src, s.dst, s.syn, len(s.payload), s.payload)
}

// sniff starts capturing IPv4 TCP between any two of ips until the test
// ends or stop is called.
func sniff(t *testing.T, ips ...netip.Addr) *sniffer {
	t.Helper()
	// ETH_P_ALL: taps for one protocol only see frames the bridge did not
	// consume, so pod-to-pod frames would be missed on the veths.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL)}); err != nil {
		unix.Close(fd)
		t.Fatalf("bind packet socket: %v", err)
	}
	// Reads wake up every 100 ms to see whether to stop.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	s := &sniffer{fd: fd, ips: map[netip.Addr]bool{}, done: make(chan struct{})}
	for _, ip := range ips {
		s.ips[ip.Unmap()] = true
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 65536)
		for {
			select {
			case <-s.done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			// IPv4 only; outgoing copies on the host side duplicate the
			// incoming ones.
			if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Protocol != htons(unix.ETH_P_IP) || ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if seg, ok := s.parse(buf[:n]); ok {
				s.mu.Lock()
				s.segs = append(s.segs, seg)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		s.stopOnce.Do(func() { close(s.done) })
		<-stopped
		unix.Close(fd)
	})
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parse reads an IPv4 packet and keeps TCP between watched addresses.
func (s *sniffer) parse(p []byte) (segment, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return segment{}, false
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if total > len(p) || ihl < 20 || total < ihl+20 {
		return segment{}, false
	}
	src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
	if !s.ips[src] || !s.ips[dst] {
		return segment{}, false
	}
	tcp := p[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return segment{}, false
	}
	payload := tcp[off:]
	if len(payload) > 64 {
		payload = payload[:64]
	}
	return segment{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		syn:     tcp[13]&0x02 != 0,
		payload: bytes.Clone(payload),
	}, true
}

// stop ends the capture (waiting a moment for the last packets) and
// returns what it saw.
func (s *sniffer) stop() []segment {
	time.Sleep(200 * time.Millisecond)
	s.stopOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]segment(nil), s.segs...)
}

// tlsOnly checks that every captured segment between the pods goes to or
// comes from port hbonePort, that each connection's first payload from the
// client is a TLS handshake record, and that no payload carries the
// plaintext marker. It returns the number of TCP connections seen.
func tlsOnly(segs []segment, hbonePort uint16, plaintext []byte) (conns int, problems []string) {
	firstPayload := map[[2]netip.AddrPort]bool{}
	for _, s := range segs {
		if s.src.Port() != hbonePort && s.dst.Port() != hbonePort {
			problems = append(problems, "not HBONE: "+s.String())
			continue
		}
		if s.syn && s.dst.Port() == hbonePort {
			conns++
		}
		if bytes.Contains(s.payload, plaintext) {
			problems = append(problems, "plaintext on the wire: "+s.String())
		}
		if len(s.payload) == 0 || s.dst.Port() != hbonePort {
			continue
		}
		k := [2]netip.AddrPort{s.src, s.dst}
		if !firstPayload[k] {
			firstPayload[k] = true
			// TLS record: type 22 (handshake), version 3.x.
			if len(s.payload) < 3 || s.payload[0] != 22 || s.payload[1] != 3 {
				problems = append(problems, "first client bytes are not a TLS handshake: "+s.String())
			}
		}
	}
	return conns, problems
}
