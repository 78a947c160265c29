package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// the IPv6 twin of SO_ORIGINAL_DST at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a redirected connection was sent to
// before capture rewrote it: ztunnel calls it on every connection accepted on
// the outbound (15001) and inbound plaintext (15006) listeners. It asks
// conntrack through getsockopt(SO_ORIGINAL_DST) for IPv4 (including IPv4
// connections accepted on a dual-stack socket) and
// getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) for IPv6. For a connection that
// was not redirected it returns the connection's own local address.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T has no file descriptor", c)
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %v is not a TCP address", c.LocalAddr())
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	ipv4 := local.IP.To4() != nil

	var (
		ap    netip.AddrPort
		opErr error
	)
	err = raw.Control(func(fd uintptr) {
		if ipv4 {
			var sa unix.RawSockaddrInet4
			if opErr = getsockopt(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4); opErr == nil {
				ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
			}
			return
		}
		var sa unix.RawSockaddrInet6
		if opErr = getsockopt(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unix.SizeofSockaddrInet6); opErr == nil {
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
		}
	})
	if err = errors.Join(err, opErr); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w", c.LocalAddr(), err)
	}
	return ap, nil
}

// ntohs reads a port stored in network byte order in a host-order uint16.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func getsockopt(fd, level, opt int, val unsafe.Pointer, size uint32) error {
	l := size
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
