package capture

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current rules")

// TestRulesetGolden pins the rule set each config produces. Run with
// -update after an intended change and review the diff.
func TestRulesetGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "default", cfg: Config{}},
		{name: "exclude-ports", cfg: Config{
			ExcludeInboundPorts:  []uint16{9090, 22, 9090},
			ExcludeOutboundPorts: []uint16{5432},
		}},
		{name: "ipv4-only", cfg: Config{DisableIPv6: true}},
		{name: "custom", cfg: Config{
			OutboundPort: 25001, InboundPlaintextPort: 25006, HBONEPort: 25008,
			Mark: 0x600, ConnMark: 0x220, MarkMask: 0xff0,
			ProbeSourceV4: netip.MustParseAddr("169.254.9.9"),
			ProbeSourceV6: netip.MustParseAddr("fd00::9"),
			RouteTable:    1000, RulePriority: 100,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table, err := Ruleset(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := table.String()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("rules differ from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

// TestRulesetLive installs each golden config in a namespace and checks the
// kernel hands back exactly the same rules: the renderer and the encoder
// agree, and the kernel accepts every rule.
func TestRulesetLive(t *testing.T) {
	n := newTestNet(t)
	for _, cfg := range []Config{
		{},
		{ExcludeInboundPorts: []uint16{22, 9090}, ExcludeOutboundPorts: []uint16{5432}},
		{DisableIPv6: true},
		{DisableIPv4: true},
		{OutboundPort: 25001, InboundPlaintextPort: 25006, HBONEPort: 25008, Mark: 0x600, ConnMark: 0x220, MarkMask: 0xff0, RouteTable: 1000, RulePriority: 100},
	} {
		if err := Apply(n.pod, cfg); err != nil {
			t.Fatalf("Apply(%+v): %v", cfg, err)
		}
		assertMatches(t, n.pod, cfg)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "zero value", cfg: Config{}},
		{name: "same ports", cfg: Config{OutboundPort: 15006}, wantErr: "capture ports must differ"},
		{name: "mark outside mask", cfg: Config{Mark: 0x1539}, wantErr: "must lie within mark mask"},
		{name: "mark equals connmark", cfg: Config{Mark: 0x111}, wantErr: "mark and connmark must differ"},
		{name: "v6 probe source for v4", cfg: Config{ProbeSourceV4: netip.MustParseAddr("fd00::1")}, wantErr: "not an IPv4 address"},
		{name: "v4 probe source for v6", cfg: Config{ProbeSourceV6: netip.MustParseAddr("::ffff:1.2.3.4")}, wantErr: "not a plain IPv6 address"},
		{name: "no family", cfg: Config{DisableIPv4: true, DisableIPv6: true}, wantErr: "nothing would be captured"},
		{name: "main route table", cfg: Config{RouteTable: 254}, wantErr: "reserved by the kernel"},
		{name: "port zero excluded", cfg: Config{ExcludeOutboundPorts: []uint16{0}}, wantErr: "must not contain 0"},
		{name: "inbound port excluded", cfg: Config{ExcludeInboundPorts: []uint16{15006}}, wantErr: "cannot be excluded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestREADMENamesEveryRule keeps README.md in step with the rules: every
// rule of the default rule set is explained there by name.
func TestREADMENamesEveryRule(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	table, err := Ruleset(Config{ExcludeInboundPorts: []uint16{1}, ExcludeOutboundPorts: []uint16{1}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "`inet "+TableName+"`") {
		t.Errorf("README.md does not mention `inet %s`", TableName)
	}
	var names []string
	for _, c := range table.Chains {
		names = append(names, c.Name)
		for _, r := range c.Rules {
			names = append(names, strings.NewReplacer("-v4", "-v*", "-v6", "-v*", "-1", "-<port>").Replace(r.Name))
		}
	}
	for _, name := range names {
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README.md does not mention `%s`", name)
		}
	}
}
