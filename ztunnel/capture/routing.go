package capture

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Policy routing for connmarked packets, as Istio's in-pod mode sets it up:
//
//	ip route add local 0.0.0.0/0 dev lo table 100
//	ip rule add fwmark 0x111/0xfff pref 32764 lookup 100
//
// When ztunnel forwards inbound traffic to the pod's application it may bind
// its socket (IP_TRANSPARENT) to the original client's address. The
// application then answers to a non-local address; the connmark restored as
// packet mark in mangle-output sends those replies through table 100, where
// every address is local, so they reach ztunnel instead of leaving the pod.
//
// Both objects carry routeProtocol (rtm_protocol / FRA_PROTOCOL), so Apply
// and Remove find exactly what capture installed, whatever config it used.

// routeProtocol tags capture's routes and rules; ip(8) shows it as "proto 161".
// The value is not in iproute2's list of reserved protocols.
const routeProtocol = 161

// loopbackIfindex is the index of lo in every network namespace (the kernel's
// LOOPBACK_IFINDEX).
const loopbackIfindex = 1

// routeEntry is a policy rule or a local default route capture owns.
type routeEntry struct {
	rule     bool  // a policy rule; otherwise a route
	family   uint8 // unix.AF_INET or unix.AF_INET6
	table    uint32
	mark     uint32 // rule only
	mask     uint32 // rule only
	priority uint32 // rule only
}

func (e routeEntry) String() string {
	ip := "ip"
	all := "0.0.0.0/0"
	if e.family == unix.AF_INET6 {
		ip, all = "ip -6", "::/0"
	}
	if e.rule {
		return fmt.Sprintf("%s rule fwmark 0x%x/0x%x lookup %d pref %d proto %d", ip, e.mark, e.mask, e.table, e.priority, routeProtocol)
	}
	return fmt.Sprintf("%s route local %s dev lo table %d proto %d scope host", ip, all, e.table, routeProtocol)
}

// routing is the policy routing for c: per family, the route and then the
// rule (the rule never points at an empty table). withIPv6 is false when the
// namespace cannot take IPv6 routes.
func (c Config) routing(withIPv6 bool) []routeEntry {
	var fams []uint8
	if !c.DisableIPv4 {
		fams = append(fams, unix.AF_INET)
	}
	if !c.DisableIPv6 && withIPv6 {
		fams = append(fams, unix.AF_INET6)
	}
	var out []routeEntry
	for _, f := range fams {
		out = append(out,
			routeEntry{family: f, table: c.RouteTable},
			routeEntry{rule: true, family: f, table: c.RouteTable, mark: c.ConnMark, mask: c.MarkMask, priority: c.RulePriority},
		)
	}
	return out
}

// ipv6Usable reports whether the current thread's network namespace can take
// IPv6 routes on lo. Call it inside WithNetNS.
func ipv6Usable() bool {
	v, err := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
	return err == nil && strings.TrimSpace(string(v)) == "0"
}

// dialRoute opens an rtnetlink socket in the current thread's namespace.
func dialRoute() (*netlink.Conn, error) {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	return conn, nil
}

// reconcileRouting moves capture's routes and rules towards want: with add
// it adds what is missing, with prune it deletes what want does not list
// (rules before routes, the reverse of adding). Apply adds before swapping
// the table and prunes after, so a changed table or priority never leaves a
// moment without a rule.
func reconcileRouting(conn *netlink.Conn, want []routeEntry, add, prune bool) error {
	have, err := listRouting(conn)
	if err != nil {
		return err
	}
	if add {
		for _, e := range want {
			if slices.Contains(have, e) {
				continue
			}
			if err := addRouting(conn, e); err != nil {
				return err
			}
		}
	}
	if !prune {
		return nil
	}
	slices.SortStableFunc(have, func(a, b routeEntry) int {
		switch {
		case a.rule == b.rule:
			return 0
		case a.rule:
			return -1
		}
		return 1
	})
	for _, e := range have {
		if slices.Contains(want, e) {
			continue
		}
		if err := delRouting(conn, e); err != nil {
			return err
		}
	}
	return nil
}

// listRouting returns the rules and routes tagged with routeProtocol.
func listRouting(conn *netlink.Conn) ([]routeEntry, error) {
	var out []routeEntry
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		rules, err := dump(conn, unix.RTM_GETRULE, fam)
		if fam == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, fmt.Errorf("list policy rules: %w", err)
		}
		for _, m := range rules {
			if e, ok := parseRule(m.Data); ok {
				out = append(out, e)
			}
		}
		routes, err := dump(conn, unix.RTM_GETROUTE, fam)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, m := range routes {
			if e, ok := parseRoute(m.Data); ok {
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, compareRouting)
	return out, nil
}

// compareRouting orders entries as routing lists them: by family, the route
// before the rule, then by table and priority.
func compareRouting(a, b routeEntry) int {
	switch {
	case a.family != b.family:
		return cmp.Compare(a.family, b.family)
	case a.rule != b.rule:
		if a.rule {
			return 1
		}
		return -1
	case a.table != b.table:
		return cmp.Compare(a.table, b.table)
	}
	return cmp.Compare(a.priority, b.priority)
}

func dump(conn *netlink.Conn, typ uint16, fam uint8) ([]netlink.Message, error) {
	return conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Dump},
		// rtmsg and fib_rule_hdr both start with the family and are 12 bytes.
		Data: []byte{fam, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	})
}

func addRouting(conn *netlink.Conn, e routeEntry) error {
	var err error
	if e.rule {
		_, err = conn.Execute(ruleMessage(unix.RTM_NEWRULE, netlink.Create|netlink.Excl, e))
		if errors.Is(err, unix.EEXIST) {
			err = nil
		}
	} else {
		_, err = conn.Execute(routeMessage(unix.RTM_NEWROUTE, netlink.Create|netlink.Replace, e))
		if e.family == unix.AF_INET6 && errors.Is(err, unix.ENETDOWN) {
			return fmt.Errorf("add %s: the pod's loopback interface is down; bring lo up first or set DisableIPv6: %w", e, err)
		}
	}
	if err != nil {
		return fmt.Errorf("add %s: %w", e, err)
	}
	return nil
}

func delRouting(conn *netlink.Conn, e routeEntry) error {
	var err error
	if e.rule {
		_, err = conn.Execute(ruleMessage(unix.RTM_DELRULE, 0, e))
	} else {
		_, err = conn.Execute(routeMessage(unix.RTM_DELROUTE, 0, e))
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", e, err)
	}
	return nil
}

// table8 is the 8-bit table field of rtmsg and fib_rule_hdr; larger tables
// travel only in the 32-bit attribute.
func table8(t uint32) uint8 {
	if t < 256 {
		return uint8(t)
	}
	return unix.RT_TABLE_UNSPEC
}

func ruleMessage(typ uint16, flags netlink.HeaderFlags, e routeEntry) netlink.Message {
	// struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2,
	// action, flags(u32).
	hdr := []byte{e.family, 0, 0, 0, table8(e.table), 0, 0, unix.FR_ACT_TO_TBL, 0, 0, 0, 0}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.FRA_PRIORITY, e.priority)
	ae.Uint32(unix.FRA_FWMARK, e.mark)
	ae.Uint32(unix.FRA_FWMASK, e.mask)
	ae.Uint32(unix.FRA_TABLE, e.table)
	ae.Uint8(unix.FRA_PROTOCOL, routeProtocol)
	attrs, _ := ae.Encode() // encoding fixed-size integers cannot fail
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(hdr, attrs...),
	}
}

func routeMessage(typ uint16, flags netlink.HeaderFlags, e routeEntry) netlink.Message {
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
	// type, flags(u32).
	hdr := []byte{e.family, 0, 0, 0, table8(e.table), routeProtocol, unix.RT_SCOPE_HOST, unix.RTN_LOCAL, 0, 0, 0, 0}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.RTA_TABLE, e.table)
	ae.Uint32(unix.RTA_OIF, loopbackIfindex)
	attrs, _ := ae.Encode()
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(hdr, attrs...),
	}
}

func parseRule(b []byte) (routeEntry, bool) {
	if len(b) < 12 {
		return routeEntry{}, false
	}
	e := routeEntry{rule: true, family: b[0], table: uint32(b[4])}
	proto := -1
	ad, err := netlink.NewAttributeDecoder(b[12:])
	if err != nil {
		return routeEntry{}, false
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.FRA_PRIORITY:
			e.priority = ad.Uint32()
		case unix.FRA_FWMARK:
			e.mark = ad.Uint32()
		case unix.FRA_FWMASK:
			e.mask = ad.Uint32()
		case unix.FRA_TABLE:
			e.table = ad.Uint32()
		case unix.FRA_PROTOCOL:
			proto = int(ad.Uint8())
		}
	}
	return e, ad.Err() == nil && proto == routeProtocol
}

func parseRoute(b []byte) (routeEntry, bool) {
	if len(b) < 12 {
		return routeEntry{}, false
	}
	family, dstLen, table, proto, typ := b[0], b[1], b[4], b[5], b[7]
	if proto != routeProtocol || typ != unix.RTN_LOCAL || dstLen != 0 {
		return routeEntry{}, false
	}
	e := routeEntry{family: family, table: uint32(table)}
	ad, err := netlink.NewAttributeDecoder(b[12:])
	if err != nil {
		return routeEntry{}, false
	}
	for ad.Next() {
		if ad.Type() == unix.RTA_TABLE {
			e.table = ad.Uint32()
		}
	}
	return e, ad.Err() == nil
}
