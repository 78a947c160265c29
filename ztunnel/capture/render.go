package capture

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Table is the capture state of one pod network namespace: the nftables
// table and the policy routing that goes with it. Dump reads it from the
// kernel; Ruleset computes what Apply would install. Its String form is what
// the admin endpoint shows, its fields are what it serves as JSON.
type Table struct {
	Name   string  `json:"name"`
	Chains []Chain `json:"chains"`
	// Routing lists the policy rules and routes capture owns, in ip(8)
	// syntax, e.g. "ip rule fwmark 0x111/0xfff lookup 100 pref 32764".
	Routing []string `json:"routing"`
}

// Chain is one base chain of the table.
type Chain struct {
	Name     string `json:"name"`
	Type     string `json:"type"` // filter, route or nat
	Hook     string `json:"hook"` // prerouting or output
	Priority int32  `json:"priority"`
	Rules    []Rule `json:"rules"`
}

// Rule is one rule: Name is its comment, Expr its match and statements in
// nft syntax with the counter written as a bare "counter"; Packets and Bytes
// are the counter's values.
type Rule struct {
	Name    string `json:"name"`
	Expr    string `json:"expr"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Rule returns the rule of the table with the given name (comment).
func (t *Table) Rule(name string) (Rule, bool) {
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			if r.Name == name {
				return r, true
			}
		}
	}
	return Rule{}, false
}

// String renders t like "nft list table" followed by the routing as
// comments.
func (t *Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", t.Name)
	for i, c := range t.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", c.Type, c.Hook, c.Priority)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s comment %q\n", r.withCounter(), r.Name)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	for _, r := range t.Routing {
		fmt.Fprintf(&b, "# %s\n", r)
	}
	return b.String()
}

func (r Rule) withCounter() string {
	fields := strings.Fields(r.Expr)
	for i, f := range fields {
		if f == "counter" {
			fields[i] = fmt.Sprintf("counter packets %d bytes %d", r.Packets, r.Bytes)
		}
	}
	return strings.Join(fields, " ")
}

// Ruleset returns the table Apply installs for cfg, without touching any
// namespace. The node agent can compare it (counters aside) with Dump to
// detect drift. It lists IPv6 routing whenever IPv6 is enabled in cfg; Apply
// leaves that out in a namespace whose lo has IPv6 disabled.
func Ruleset(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid capture config: %w", err)
	}
	cfg = cfg.withDefaults()
	t := &Table{Name: TableName}
	for _, cs := range cfg.chains() {
		c := Chain{Name: cs.name, Type: string(cs.typ), Hook: hookName(cs.hook), Priority: int32(*cs.priority)}
		for _, rs := range cs.rules {
			text, _, _ := renderExprs(rs.exprs)
			c.Rules = append(c.Rules, Rule{Name: rs.name, Expr: text})
		}
		t.Chains = append(t.Chains, c)
	}
	for _, r := range cfg.routing(true) {
		t.Routing = append(t.Routing, r.String())
	}
	return t, nil
}

func hookName(h *nftables.ChainHook) string {
	if h == nil {
		return "none"
	}
	switch *h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return strconv.Itoa(int(*h))
}

// valueKind says how the value compared against a register prints.
type valueKind int

const (
	kindRaw valueKind = iota
	kindHex32
	kindL4Proto
	kindNFProto
	kindAddr
	kindPort
	kindIfname
)

// renderExprs prints a rule's expressions in nft syntax. It knows the
// expressions capture emits and prints anything else as [type], so a Dump
// never fails on a rule someone else added. Like nft, it leaves out the
// protocol checks that only guard a header load ("meta nfproto ipv4" before
// "ip daddr", "meta l4proto tcp" before "tcp dport").
func renderExprs(exprs []expr.Any) (text string, packets, bytes uint64) {
	var (
		out     []string
		lhs     string
		kind    valueKind
		masked  bool
		pending []byte // data an Immediate put in the register
	)
	later := func(i int, base expr.PayloadBase) bool {
		for _, e := range exprs[i+1:] {
			if p, ok := e.(*expr.Payload); ok && p.Base == base {
				return true
			}
		}
		return false
	}
	for i, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			name := metaName(e.Key)
			if e.SourceRegister {
				out = append(out, name+" set "+lhs)
				continue
			}
			lhs, masked = name, false
			switch e.Key {
			case expr.MetaKeyMARK:
				kind = kindHex32
			case expr.MetaKeyL4PROTO:
				kind = kindL4Proto
			case expr.MetaKeyNFPROTO:
				kind = kindNFProto
			case expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME:
				kind = kindIfname
			default:
				kind = kindRaw
			}
		case *expr.Ct:
			name := "ct " + ctKeyName(e.Key)
			// github.com/google/nftables v0.3.0 does not decode
			// NFTA_CT_SREG: a "ct set" read back from the kernel comes out
			// as a load into register 0, which no real load uses (it is the
			// verdict register).
			if e.SourceRegister || e.Register == 0 {
				out = append(out, name+" set "+lhs)
				continue
			}
			lhs, masked = name, false
			kind = kindRaw
			if e.Key == expr.CtKeyMARK {
				kind = kindHex32
			}
		case *expr.Payload:
			lhs, kind, masked = payloadName(e), kindRaw, false
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && (e.Len == 4 || e.Len == 16):
				kind = kindAddr
			case e.Base == expr.PayloadBaseTransportHeader && e.Len == 2:
				kind = kindPort
			}
		case *expr.Bitwise:
			lhs += " & " + formatValue(kindHex32, e.Mask)
			if x := binaryutil.NativeEndian.Uint32(pad4(e.Xor)); x != 0 {
				lhs += " | " + formatValue(kindHex32, e.Xor)
			}
			masked = true
		case *expr.Cmp:
			if e.Op == expr.CmpOpEq && ((kind == kindNFProto && later(i, expr.PayloadBaseNetworkHeader)) ||
				(kind == kindL4Proto && later(i, expr.PayloadBaseTransportHeader))) {
				continue
			}
			op := cmpOpName(e.Op)
			if op == "==" && !masked {
				op = ""
			}
			out = append(out, strings.Join(nonEmpty(lhs, op, formatValue(kind, e.Data)), " "))
		case *expr.Counter:
			out = append(out, "counter")
			packets, bytes = e.Packets, e.Bytes
		case *expr.Verdict:
			out = append(out, verdictName(e))
		case *expr.Immediate:
			pending = e.Data
		case *expr.Redir:
			if e.RegisterProtoMin != 0 && len(pending) == 2 {
				out = append(out, "redirect to :"+formatValue(kindPort, pending))
			} else {
				out = append(out, "redirect")
			}
		default:
			out = append(out, fmt.Sprintf("[%T]", e))
		}
	}
	return strings.Join(out, " "), packets, bytes
}

func nonEmpty(parts ...string) []string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func pad4(b []byte) []byte {
	if len(b) >= 4 {
		return b[:4]
	}
	return append(make([]byte, 4-len(b)), b...)
}

func formatValue(kind valueKind, b []byte) string {
	switch kind {
	case kindHex32:
		if len(b) == 4 {
			return fmt.Sprintf("0x%x", binaryutil.NativeEndian.Uint32(b))
		}
	case kindL4Proto:
		if len(b) == 1 {
			switch b[0] {
			case unix.IPPROTO_TCP:
				return "tcp"
			case unix.IPPROTO_UDP:
				return "udp"
			}
			return strconv.Itoa(int(b[0]))
		}
	case kindNFProto:
		if len(b) == 1 {
			switch b[0] {
			case unix.NFPROTO_IPV4:
				return "ipv4"
			case unix.NFPROTO_IPV6:
				return "ipv6"
			}
			return strconv.Itoa(int(b[0]))
		}
	case kindAddr:
		if a, ok := netip.AddrFromSlice(b); ok {
			return a.String()
		}
	case kindPort:
		if len(b) == 2 {
			return strconv.Itoa(int(binaryutil.BigEndian.Uint16(b)))
		}
	case kindIfname:
		return strconv.Quote(strings.TrimRight(string(b), "\x00"))
	}
	return fmt.Sprintf("0x%x", b)
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyMARK:
		return "meta mark"
	case expr.MetaKeyL4PROTO:
		return "meta l4proto"
	case expr.MetaKeyNFPROTO:
		return "meta nfproto"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyIIFNAME:
		return "iifname"
	}
	return fmt.Sprintf("meta key%d", k)
}

func ctKeyName(k expr.CtKey) string {
	switch k {
	case expr.CtKeyMARK:
		return "mark"
	case expr.CtKeySTATE:
		return "state"
	}
	return fmt.Sprintf("key%d", k)
}

func payloadName(p *expr.Payload) string {
	switch {
	case p.Base == expr.PayloadBaseNetworkHeader && p.Len == 4 && p.Offset == 12:
		return "ip saddr"
	case p.Base == expr.PayloadBaseNetworkHeader && p.Len == 4 && p.Offset == 16:
		return "ip daddr"
	case p.Base == expr.PayloadBaseNetworkHeader && p.Len == 16 && p.Offset == 8:
		return "ip6 saddr"
	case p.Base == expr.PayloadBaseNetworkHeader && p.Len == 16 && p.Offset == 24:
		return "ip6 daddr"
	case p.Base == expr.PayloadBaseTransportHeader && p.Len == 2 && p.Offset == 0:
		return "tcp sport"
	case p.Base == expr.PayloadBaseTransportHeader && p.Len == 2 && p.Offset == 2:
		return "tcp dport"
	}
	return fmt.Sprintf("@payload(base %d, offset %d, len %d)", p.Base, p.Offset, p.Len)
}

func cmpOpName(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return "=="
	case expr.CmpOpNeq:
		return "!="
	case expr.CmpOpLt:
		return "<"
	case expr.CmpOpLte:
		return "<="
	case expr.CmpOpGt:
		return ">"
	case expr.CmpOpGte:
		return ">="
	}
	return fmt.Sprintf("op%d", op)
}

func verdictName(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}
