package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// TableName is the nftables table (family inet) that holds all capture rules
// in a pod's network namespace. Remove deletes it by this name, so it is not
// configurable.
const TableName = "ambient_lite"

// Defaults, Istio's values. ztunnel and the node agent must agree on them.
const (
	DefaultOutboundPort         uint16 = 15001
	DefaultInboundPlaintextPort uint16 = 15006
	DefaultHBONEPort            uint16 = 15008

	// DefaultMark is the SO_MARK ztunnel puts on every socket it opens inside a
	// pod's namespace (1337). Packets carrying it are never redirected.
	DefaultMark uint32 = 0x539
	// DefaultConnMark is the conntrack mark given to connections that ztunnel
	// opened towards the pod's own applications; it steers the replies back
	// to ztunnel (see Config.RouteTable).
	DefaultConnMark uint32 = 0x111
	// DefaultMarkMask is the part of the packet and conntrack marks that
	// capture owns; bits outside it are left to other software.
	DefaultMarkMask uint32 = 0xfff

	// DefaultRouteTable and DefaultRulePriority are the policy-routing table
	// and rule preference used for DefaultConnMark ("ip rule add fwmark
	// 0x111/0xfff pref 32764 lookup 100").
	DefaultRouteTable   uint32 = 100
	DefaultRulePriority uint32 = 32764
)

// Link-local (and, for IPv6, ULA) source addresses the node agent SNATs the
// kubelet's health probes to on the host, so that they can be told apart from
// other node traffic inside the pod. Istio's values.
var (
	DefaultProbeSourceV4 = netip.MustParseAddr("169.254.7.127")
	DefaultProbeSourceV6 = netip.MustParseAddr("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
)

// Config describes the capture rules for one pod. The zero value is Istio's
// default in-pod capture for IPv4 and IPv6; every field documents its default.
type Config struct {
	// OutboundPort is ztunnel's outbound capture listener; TCP the pod sends
	// out is redirected to 127.0.0.1 (::1) on this port. Default 15001.
	OutboundPort uint16
	// InboundPlaintextPort is ztunnel's inbound plaintext listener; TCP
	// arriving for the pod is redirected to it. Default 15006.
	InboundPlaintextPort uint16
	// HBONEPort is ztunnel's inbound HBONE listener. Traffic to it is never
	// redirected. Default 15008.
	HBONEPort uint16

	// Mark is the SO_MARK ztunnel sets on its own sockets in the pod's
	// namespace (see SocketOptions). Default 0x539.
	Mark uint32
	// ConnMark is the conntrack mark for connections ztunnel opens to the pod's
	// own applications. Default 0x111.
	ConnMark uint32
	// MarkMask selects the bits of the marks that capture reads and writes.
	// Mark and ConnMark must lie within it. Default 0xfff.
	MarkMask uint32

	// ProbeSourceV4 and ProbeSourceV6 are the addresses the node agent SNATs
	// kubelet probes to on the host; TCP from them is not captured.
	// Defaults 169.254.7.127 and fd16:9254:7127:1337:ffff:ffff:ffff:ffff.
	ProbeSourceV4 netip.Addr
	ProbeSourceV6 netip.Addr

	// ExcludeInboundPorts are pod ports whose inbound TCP is delivered to the
	// application directly, bypassing ztunnel (and its policy). Default none.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports whose outbound TCP leaves the
	// pod directly, bypassing ztunnel. Default none.
	ExcludeOutboundPorts []uint16

	// DisableIPv4 and DisableIPv6 leave out the rules of one address family.
	// Traffic of a family without rules is NOT captured. Default: both on.
	// IPv6 policy routing is skipped when IPv6 is disabled on the pod's
	// loopback interface.
	DisableIPv4 bool
	DisableIPv6 bool

	// RouteTable is the routing table that delivers every destination
	// locally; RulePriority is the preference of the rule sending
	// ConnMark-marked packets to it. Defaults 100 and 32764.
	RouteTable   uint32
	RulePriority uint32
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPlaintextPort == 0 {
		c.InboundPlaintextPort = DefaultInboundPlaintextPort
	}
	if c.HBONEPort == 0 {
		c.HBONEPort = DefaultHBONEPort
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.ConnMark == 0 {
		c.ConnMark = DefaultConnMark
	}
	if c.MarkMask == 0 {
		c.MarkMask = DefaultMarkMask
	}
	if !c.ProbeSourceV4.IsValid() {
		c.ProbeSourceV4 = DefaultProbeSourceV4
	}
	if !c.ProbeSourceV6.IsValid() {
		c.ProbeSourceV6 = DefaultProbeSourceV6
	}
	if c.RouteTable == 0 {
		c.RouteTable = DefaultRouteTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	c.ExcludeInboundPorts = sortedUnique(c.ExcludeInboundPorts)
	c.ExcludeOutboundPorts = sortedUnique(c.ExcludeOutboundPorts)
	return c
}

func sortedUnique(ports []uint16) []uint16 {
	if len(ports) == 0 {
		return nil
	}
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

// Validate reports what is wrong with c after defaults are applied. Apply
// calls it; the zero value is valid.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.OutboundPort == c.InboundPlaintextPort || c.OutboundPort == c.HBONEPort || c.InboundPlaintextPort == c.HBONEPort {
		errs = append(errs, fmt.Errorf("capture ports must differ: outbound %d, inbound plaintext %d, HBONE %d",
			c.OutboundPort, c.InboundPlaintextPort, c.HBONEPort))
	}
	if c.Mark&^c.MarkMask != 0 || c.ConnMark&^c.MarkMask != 0 {
		errs = append(errs, fmt.Errorf("marks 0x%x and 0x%x must lie within mark mask 0x%x", c.Mark, c.ConnMark, c.MarkMask))
	}
	if c.Mark == c.ConnMark {
		errs = append(errs, fmt.Errorf("mark and connmark must differ (both 0x%x)", c.Mark))
	}
	if !c.ProbeSourceV4.Is4() {
		errs = append(errs, fmt.Errorf("probe source %s is not an IPv4 address", c.ProbeSourceV4))
	}
	if !c.ProbeSourceV6.Is6() || c.ProbeSourceV6.Is4In6() || c.ProbeSourceV6.Zone() != "" {
		errs = append(errs, fmt.Errorf("probe source %s is not a plain IPv6 address", c.ProbeSourceV6))
	}
	if c.DisableIPv4 && c.DisableIPv6 {
		errs = append(errs, errors.New("both IPv4 and IPv6 are disabled: nothing would be captured"))
	}
	switch c.RouteTable {
	case 253, 254, 255: // default, main, local
		errs = append(errs, fmt.Errorf("route table %d is reserved by the kernel; pick another (default %d)", c.RouteTable, DefaultRouteTable))
	}
	if slices.Contains(c.ExcludeInboundPorts, 0) || slices.Contains(c.ExcludeOutboundPorts, 0) {
		errs = append(errs, errors.New("exclude ports must not contain 0"))
	}
	if slices.Contains(c.ExcludeInboundPorts, c.InboundPlaintextPort) {
		errs = append(errs, fmt.Errorf("inbound plaintext port %d cannot be excluded from inbound capture", c.InboundPlaintextPort))
	}
	return errors.Join(errs...)
}
