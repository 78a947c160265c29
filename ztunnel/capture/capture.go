// Package capture installs and removes the traffic redirection that puts a
// pod's TCP traffic through ztunnel, the way Istio's in-pod ambient mode does
// it: rules live in the pod's own network namespace, and ztunnel opens its
// listeners inside that namespace.
//
// In the pod's namespace, Apply installs one nftables table (inet
// ambient_lite) in a single transaction, plus a policy-routing rule and
// route:
//
//   - outbound TCP that is not to loopback and not from ztunnel (SO_MARK
//     0x539) is redirected to 127.0.0.1:15001 (::1 for IPv6);
//   - inbound TCP that is not to port 15008, not to loopback and not from
//     ztunnel is redirected to the pod's address on port 15006;
//   - port 15008 (HBONE) is reached directly;
//   - kubelet probes, which the node agent SNATs to 169.254.7.127 on the
//     host, pass uncaptured;
//   - connections ztunnel opens to the pod's own apps are connmarked (0x111)
//     and their replies routed back to ztunnel.
//
// Redirection is NAT (REDIRECT), so ztunnel's listeners are ordinary sockets
// and OriginalDst recovers each connection's original destination from
// conntrack (SO_ORIGINAL_DST). See README.md for the rules in words and what
// the node agent must still do on the host.
//
// Everything here needs CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter another
// namespace). No nft or iptables binary is used.
package capture

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
)

// ErrNotInstalled is returned by Dump when the namespace has no capture
// table.
var ErrNotInstalled = errors.New("capture rules not installed")

// Apply installs cfg's capture rules in the network namespace at netnsPath,
// replacing whatever capture rules were there. The nftables table is
// replaced in one atomic transaction, so the pod is never without rules once
// it had them. Applying the same config again changes nothing; applying a
// changed config leaves exactly the new rules.
//
// Order: routes and policy rules the new config needs are added first, then
// the table is swapped, then routing the old config needed and the new one
// does not is deleted.
func Apply(netnsPath string, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid capture config: %w", err)
	}
	cfg = cfg.withDefaults()
	err := WithNetNS(netnsPath, func() error {
		conn, err := dialRoute()
		if err != nil {
			return err
		}
		defer conn.Close()
		want := cfg.routing(ipv6Usable())
		if err := addMissingRouting(conn, want); err != nil {
			return err
		}
		if err := replaceTable(cfg); err != nil {
			return err
		}
		return pruneRouting(conn, want)
	})
	if err != nil {
		return fmt.Errorf("apply capture rules in %s: %w", netnsPath, err)
	}
	return nil
}

// Remove deletes the capture table and capture's policy routing from the
// network namespace at netnsPath, restoring plain networking. Removing from
// a namespace without capture rules is not an error.
func Remove(netnsPath string) error {
	err := WithNetNS(netnsPath, func() error {
		if err := deleteTable(); err != nil {
			return err
		}
		conn, err := dialRoute()
		if err != nil {
			return err
		}
		defer conn.Close()
		return pruneRouting(conn, nil)
	})
	if err != nil {
		return fmt.Errorf("remove capture rules from %s: %w", netnsPath, err)
	}
	return nil
}

// Installed reports whether the namespace at netnsPath has the capture table
// and capture's policy routing. It does not compare them with a config; use
// Dump and Ruleset for that.
func Installed(netnsPath string) (bool, error) {
	var ok bool
	err := WithNetNS(netnsPath, func() error {
		found, err := tableExists()
		if err != nil || !found {
			return err
		}
		conn, err := dialRoute()
		if err != nil {
			return err
		}
		defer conn.Close()
		have, err := listRouting(conn)
		if err != nil {
			return err
		}
		for _, e := range have {
			if e.rule {
				ok = true
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("check capture rules in %s: %w", netnsPath, err)
	}
	return ok, nil
}

// Dump reads the capture table, its counters and capture's policy routing
// from the namespace at netnsPath. It returns ErrNotInstalled when there is
// no table.
func Dump(netnsPath string) (*Table, error) {
	var t *Table
	err := WithNetNS(netnsPath, func() error {
		var err error
		if t, err = readTable(); err != nil {
			return err
		}
		conn, err := dialRoute()
		if err != nil {
			return err
		}
		defer conn.Close()
		have, err := listRouting(conn)
		if err != nil {
			return err
		}
		for _, e := range have {
			t.Routing = append(t.Routing, e.String())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dump capture rules in %s: %w", netnsPath, err)
	}
	return t, nil
}

var captureTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

// replaceTable deletes and re-creates the table with cfg's chains and rules
// in one nftables transaction (batch). The leading add makes the delete
// succeed when the table does not exist yet.
func replaceTable(cfg Config) error {
	nft, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	nft.AddTable(captureTable)
	nft.DelTable(captureTable)
	nft.AddTable(captureTable)
	for _, cs := range cfg.chains() {
		ch := nft.AddChain(&nftables.Chain{
			Name: cs.name, Table: captureTable, Type: cs.typ, Hooknum: cs.hook, Priority: cs.priority,
		})
		for _, rs := range cs.rules {
			nft.AddRule(&nftables.Rule{
				Table: captureTable, Chain: ch, Exprs: rs.exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, rs.name),
			})
		}
	}
	if err := nft.Flush(); err != nil {
		return fmt.Errorf("install table inet %s: %w", TableName, err)
	}
	return nil
}

func deleteTable() error {
	nft, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	nft.AddTable(captureTable)
	nft.DelTable(captureTable)
	if err := nft.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	return nil
}

func tableExists() (bool, error) {
	nft, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

func readTable() (*Table, error) {
	found, err := tableExists()
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotInstalled
	}
	nft, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	chains, err := nft.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	t := &Table{Name: TableName}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		c := Chain{Name: ch.Name, Type: string(ch.Type), Hook: hookName(ch.Hooknum)}
		if ch.Priority != nil {
			c.Priority = int32(*ch.Priority)
		}
		rules, err := nft.GetRules(captureTable, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			name, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			text, packets, bytes := renderExprs(r.Exprs)
			c.Rules = append(c.Rules, Rule{Name: name, Expr: text, Packets: packets, Bytes: bytes})
		}
		t.Chains = append(t.Chains, c)
	}
	return t, nil
}

// addMissingRouting adds the routes and rules of want that are not there.
func addMissingRouting(conn *netlink.Conn, want []routeEntry) error {
	return reconcileRouting(conn, want, true, false)
}

// pruneRouting deletes capture's routes and rules that are not in want.
func pruneRouting(conn *netlink.Conn, want []routeEntry) error {
	return reconcileRouting(conn, want, false, true)
}
