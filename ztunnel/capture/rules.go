package capture

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// chainSpec is one base chain of the capture table as Apply installs it.
type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	rules    []ruleSpec
}

// ruleSpec is one rule: its comment (a stable name, shown by nft and Dump)
// and its expressions.
type ruleSpec struct {
	name  string
	exprs []expr.Any
}

// Chain names. One table holds them all; each is a base chain.
const (
	chainManglePrerouting = "mangle-prerouting"
	chainMangleOutput     = "mangle-output"
	chainNATPrerouting    = "nat-prerouting"
	chainNATOutput        = "nat-output"
)

// family is one address family's view of the rules.
type family struct {
	suffix    string // rule-name suffix: "v4" or "v6"
	nfproto   byte
	loopback  netip.Addr
	probe     netip.Addr
	saddrOff  uint32
	daddrOff  uint32
	addrBytes uint32
}

func (c Config) families() []family {
	var fams []family
	if !c.DisableIPv4 {
		fams = append(fams, family{
			suffix: "v4", nfproto: unix.NFPROTO_IPV4,
			loopback: netip.AddrFrom4([4]byte{127, 0, 0, 1}),
			probe:    c.ProbeSourceV4, saddrOff: 12, daddrOff: 16, addrBytes: 4,
		})
	}
	if !c.DisableIPv6 {
		fams = append(fams, family{
			suffix: "v6", nfproto: unix.NFPROTO_IPV6,
			loopback: netip.IPv6Loopback(),
			probe:    c.ProbeSourceV6, saddrOff: 8, daddrOff: 24, addrBytes: 16,
		})
	}
	return fams
}

// chains is the whole rule set for c, in install order. c must have its
// defaults applied. It is pure: the same config always yields the same rules.
//
// The rules follow Istio's in-pod (ambient) redirection:
//
//   - mangle-prerouting: a packet that carries ztunnel's mark as it enters
//     (ztunnel talking to the pod's own app over loopback) gives its
//     connection the connmark.
//   - mangle-output (a route chain, so a changed mark re-routes the packet):
//     packets of connmarked connections get the connmark as packet mark, so
//     the policy rule "fwmark connmark → table RouteTable (all local)" sends
//     the app's replies back to ztunnel even when ztunnel used the client's
//     address as source.
//   - nat-prerouting: probes from the SNATed kubelet address pass; excluded
//     inbound ports pass; everything else not to loopback, not to the HBONE
//     port and not carrying ztunnel's mark is redirected to the inbound
//     plaintext port.
//   - nat-output: replies to the probe address pass; connmarked traffic
//     passes; traffic that leaves on lo (the pod talking to itself) passes;
//     excluded outbound ports pass; every other TCP connection not to
//     loopback and not carrying ztunnel's mark is redirected to the outbound
//     port.
func (c Config) chains() []chainSpec {
	fams := c.families()
	markMask := c.MarkMask

	manglePre := chainSpec{
		name: chainManglePrerouting, typ: nftables.ChainTypeFilter,
		hook: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityMangle,
		rules: []ruleSpec{{
			name: "ztunnel-mark-to-connmark",
			exprs: concat(
				metaMark(expr.CmpOpEq, c.Mark, markMask),
				counter(),
				setCtMark(^markMask, c.ConnMark),
			),
		}},
	}

	mangleOut := chainSpec{
		name: chainMangleOutput, typ: nftables.ChainTypeRoute,
		hook: nftables.ChainHookOutput, priority: nftables.ChainPriorityMangle,
		rules: []ruleSpec{{
			name: "connmark-to-mark",
			exprs: concat(
				ctMark(expr.CmpOpEq, c.ConnMark, markMask),
				counter(),
				restoreMark(),
			),
		}},
	}

	natPre := chainSpec{
		name: chainNATPrerouting, typ: nftables.ChainTypeNAT,
		hook: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityNATDest,
	}
	for _, f := range fams {
		natPre.rules = append(natPre.rules, ruleSpec{
			name:  "probe-bypass-" + f.suffix,
			exprs: concat(l4protoTCP(), f.addr(f.saddrOff, expr.CmpOpEq, f.probe), counter(), accept()),
		})
	}
	for _, p := range c.ExcludeInboundPorts {
		natPre.rules = append(natPre.rules, ruleSpec{
			name:  fmt.Sprintf("exclude-inbound-%d", p),
			exprs: concat(tcpDport(expr.CmpOpEq, p), counter(), accept()),
		})
	}
	for _, f := range fams {
		natPre.rules = append(natPre.rules, ruleSpec{
			name: "inbound-redirect-" + f.suffix,
			exprs: concat(
				f.addr(f.daddrOff, expr.CmpOpNeq, f.loopback),
				tcpDport(expr.CmpOpNeq, c.HBONEPort),
				metaMark(expr.CmpOpNeq, c.Mark, markMask),
				counter(),
				redirect(c.InboundPlaintextPort),
			),
		})
	}

	natOut := chainSpec{
		name: chainNATOutput, typ: nftables.ChainTypeNAT,
		hook: nftables.ChainHookOutput, priority: nftables.ChainPriorityNATDest,
	}
	for _, f := range fams {
		natOut.rules = append(natOut.rules, ruleSpec{
			name:  "probe-reply-bypass-" + f.suffix,
			exprs: concat(l4protoTCP(), f.addr(f.daddrOff, expr.CmpOpEq, f.probe), counter(), accept()),
		})
	}
	natOut.rules = append(natOut.rules, ruleSpec{
		name:  "connmark-bypass",
		exprs: concat(l4protoTCP(), metaMark(expr.CmpOpEq, c.ConnMark, markMask), counter(), accept()),
	})
	for _, f := range fams {
		natOut.rules = append(natOut.rules, ruleSpec{
			name:  "loopback-bypass-" + f.suffix,
			exprs: concat(oifname(expr.CmpOpEq, "lo"), f.addr(f.daddrOff, expr.CmpOpNeq, f.loopback), counter(), accept()),
		})
	}
	for _, p := range c.ExcludeOutboundPorts {
		natOut.rules = append(natOut.rules, ruleSpec{
			name:  fmt.Sprintf("exclude-outbound-%d", p),
			exprs: concat(tcpDport(expr.CmpOpEq, p), counter(), accept()),
		})
	}
	for _, f := range fams {
		natOut.rules = append(natOut.rules, ruleSpec{
			name: "outbound-redirect-" + f.suffix,
			exprs: concat(
				l4protoTCP(),
				f.addr(f.daddrOff, expr.CmpOpNeq, f.loopback),
				metaMark(expr.CmpOpNeq, c.Mark, markMask),
				counter(),
				redirect(c.OutboundPort),
			),
		})
	}

	return []chainSpec{manglePre, mangleOut, natPre, natOut}
}

// Expression building blocks. Everything uses register 1; nothing here
// needs more than one value at a time.
const reg = 1

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func l4protoTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// addr matches the source or destination address (by header offset) of the
// family, guarded by a check of the family as nft does in inet tables.
func (f family) addr(offset uint32, op expr.CmpOp, a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{f.nfproto}},
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: f.addrBytes},
		&expr.Cmp{Op: op, Register: reg, Data: a.AsSlice()},
	}
}

func tcpDport(op expr.CmpOp, port uint16) []expr.Any {
	return append(l4protoTCP(),
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: op, Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
	)
}

// Marks live in host byte order in nftables registers.

func metaMark(op expr.CmpOp, mark, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
		maskReg(mask, 0),
		&expr.Cmp{Op: op, Register: reg, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}
}

func ctMark(op expr.CmpOp, mark, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg},
		maskReg(mask, 0),
		&expr.Cmp{Op: op, Register: reg, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}
}

// setCtMark is "ct mark set ct mark & keep | value".
func setCtMark(keep, value uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg},
		maskReg(keep, value),
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg, SourceRegister: true},
	}
}

// restoreMark is "meta mark set ct mark".
func restoreMark() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg, SourceRegister: true},
	}
}

func maskReg(mask, xor uint32) *expr.Bitwise {
	return &expr.Bitwise{
		SourceRegister: reg, DestRegister: reg, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(mask),
		Xor:  binaryutil.NativeEndian.PutUint32(xor),
	}
}

func oifname(op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg},
		&expr.Cmp{Op: op, Register: reg, Data: b},
	}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

// redirect is "redirect to :port": the destination becomes the primary
// address of the incoming interface (prerouting) or loopback (output).
func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: reg},
	}
}
