package nodeagent

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/ambientlite/mesh/ztunnel/capture"
)

// HostTableName is the nftables table (family inet) the agent owns in the
// host namespace. Nothing else there is touched.
const HostTableName = "ambient_lite_host"

// Set and chain names inside the host table.
const (
	hostSetV4 = "enrolled-v4"
	hostSetV6 = "enrolled-v6"
	hostChain = "postrouting"
)

// hostRules keeps the host table in step with the enrolled pods (as nft
// lists it):
//
//	table inet ambient_lite_host {
//	  set enrolled-v4 { type ipv4_addr; elements = { <enrolled pod IPv4s> } }
//	  set enrolled-v6 { type ipv6_addr; elements = { <enrolled pod IPv6s> } }
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat;
//	    meta l4proto tcp meta skuid >= 0 ip daddr @enrolled-v4 counter snat ip to 169.254.7.127 comment "probe-snat-v4"
//	    meta l4proto tcp meta skuid >= 0 ip6 daddr @enrolled-v6 counter snat ip6 to fd16:9254:7127:1337:ffff:ffff:ffff:ffff comment "probe-snat-v6"
//	  }
//	}
//
// "meta skuid" only evaluates for packets of a local socket, so the rules
// match connections the node itself opens (the kubelet's probes), never
// forwarded traffic; with HostConfig.ProbeUID set the match is "skuid ==
// uid" instead. The first sync of a process replaces the whole table in one
// transaction; later syncs replace only the sets' elements (flush and add,
// one transaction), so counters survive.
type hostRules struct {
	cfg HostConfig

	mu    sync.Mutex
	built bool
}

func (h *hostRules) inNS(fn func() error) error {
	if h.cfg.NetNS == "" {
		return fn()
	}
	return capture.WithNetNS(h.cfg.NetNS, fn)
}

var hostTable = &nftables.Table{Name: HostTableName, Family: nftables.TableFamilyINet}

// sync makes the sets hold exactly ips.
func (h *hostRules) sync(ips []netip.Addr) error {
	if h.cfg.Disabled {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var v4, v6 []nftables.SetElement
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is4() {
			v4 = append(v4, nftables.SetElement{Key: ip.AsSlice()})
		} else {
			v6 = append(v6, nftables.SetElement{Key: ip.AsSlice()})
		}
	}
	err := h.inNS(func() error {
		if h.built {
			if err := h.updateSets(v4, v6); err == nil {
				return nil
			}
			// The table was removed or changed behind our back: rebuild.
		}
		return h.rebuild(v4, v6)
	})
	if err != nil {
		h.built = false
		return fmt.Errorf("host probe rules (table inet %s): %w", HostTableName, err)
	}
	h.built = true
	return nil
}

func (h *hostRules) updateSets(v4, v6 []nftables.SetElement) error {
	nft, err := nftables.New()
	if err != nil {
		return err
	}
	for _, s := range []struct {
		name  string
		elems []nftables.SetElement
	}{{hostSetV4, v4}, {hostSetV6, v6}} {
		set := &nftables.Set{Table: hostTable, Name: s.name}
		nft.FlushSet(set)
		if len(s.elems) > 0 {
			if err := nft.SetAddElements(set, s.elems); err != nil {
				return err
			}
		}
	}
	return nft.Flush()
}

func (h *hostRules) rebuild(v4, v6 []nftables.SetElement) error {
	nft, err := nftables.New()
	if err != nil {
		return err
	}
	nft.AddTable(hostTable)
	nft.DelTable(hostTable)
	nft.AddTable(hostTable)
	setV4 := &nftables.Set{Table: hostTable, Name: hostSetV4, KeyType: nftables.TypeIPAddr}
	setV6 := &nftables.Set{Table: hostTable, Name: hostSetV6, KeyType: nftables.TypeIP6Addr}
	if err := nft.AddSet(setV4, v4); err != nil {
		return err
	}
	if err := nft.AddSet(setV6, v6); err != nil {
		return err
	}
	chain := nft.AddChain(&nftables.Chain{
		Name: hostChain, Table: hostTable, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	for _, f := range []struct {
		name    string
		nfproto byte
		daddr   uint32
		alen    uint32
		set     *nftables.Set
		to      netip.Addr
	}{
		{"probe-snat-v4", unix.NFPROTO_IPV4, 16, 4, setV4, h.cfg.ProbeSourceV4},
		{"probe-snat-v6", unix.NFPROTO_IPV6, 24, 16, setV6, h.cfg.ProbeSourceV6},
	} {
		skuid := &expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)}
		if h.cfg.ProbeUID != nil {
			skuid = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(*h.cfg.ProbeUID)}
		}
		nft.AddRule(&nftables.Rule{
			Table: hostTable, Chain: chain,
			UserData: userdata.AppendString(nil, userdata.TypeComment, f.name),
			Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
				skuid,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: f.alen},
				&expr.Lookup{SourceRegister: 1, SetName: f.set.Name, SetID: f.set.ID},
				&expr.Counter{},
				&expr.Immediate{Register: 1, Data: f.to.AsSlice()},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(f.nfproto), RegAddrMin: 1},
			},
		})
	}
	return nft.Flush()
}

// needsSync reports whether the last sync failed (or none ran yet).
func (h *hostRules) needsSync() bool {
	if h.cfg.Disabled {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.built
}

// remove deletes the host table.
func (h *hostRules) remove() error {
	if h.cfg.Disabled {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.built = false
	err := h.inNS(func() error {
		nft, err := nftables.New()
		if err != nil {
			return err
		}
		nft.AddTable(hostTable)
		nft.DelTable(hostTable)
		return nft.Flush()
	})
	if err != nil {
		return fmt.Errorf("remove table inet %s: %w", HostTableName, err)
	}
	return nil
}

// addresses reads the sets back (for tests and the admin view).
func (h *hostRules) addresses() ([]netip.Addr, error) {
	var out []netip.Addr
	err := h.inNS(func() error {
		nft, err := nftables.New()
		if err != nil {
			return err
		}
		for _, name := range []string{hostSetV4, hostSetV6} {
			set, err := nft.GetSetByName(hostTable, name)
			if err != nil {
				return err
			}
			elems, err := nft.GetSetElements(set)
			if err != nil {
				return err
			}
			for _, e := range elems {
				if a, ok := netip.AddrFromSlice(e.Key); ok {
					out = append(out, a)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out, nil
}
