package cniplugin

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("differs from %s (-want +got):\n%s", path, diff)
	}
}

var testEntry = InstallConfig{AgentSocket: "/var/run/ambient-lite/cni.sock", ExcludeNamespaces: []string{"kube-system"}}.Entry()

// TestInsertRemoveGolden: testdata/<case>.conflist → <case>.installed.golden
// (InsertPlugin) → <case>.uninstalled.golden (RemovePlugin).
func TestInsertRemoveGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.conflist")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no test cases: %v", err)
	}
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".conflist")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			installed, err := InsertPlugin(src, testEntry)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".installed.golden"), installed)

			again, err := InsertPlugin(installed, testEntry)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(installed), string(again)); diff != "" {
				t.Errorf("second insert changed the file (-first +second):\n%s", diff)
			}

			removed, err := RemovePlugin(installed)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".uninstalled.golden"), removed)
			if strings.Contains(string(removed), PluginType) {
				t.Error("uninstalled config still names the plugin")
			}
		})
	}
}

func TestInsertErrors(t *testing.T) {
	for name, in := range map[string]string{
		"single plugin conf": `{"cniVersion":"0.4.0","name":"n","type":"bridge"}`,
		"not json":           `plugins`,
		"plugins not array":  `{"plugins":{}}`,
		"trailing data":      `{"plugins":[]} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			if out, err := InsertPlugin([]byte(in), testEntry); err == nil {
				t.Fatalf("InsertPlugin accepted it:\n%s", out)
			}
		})
	}
}

func TestRemoveWithoutEntryUnchanged(t *testing.T) {
	src := []byte(`{"plugins":[{"type":"bridge"}]}`)
	out, err := RemovePlugin(src)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(src) {
		t.Errorf("RemovePlugin rewrote a config without our entry: %s", out)
	}
}

// installDirs is a fake host: a CNI bin dir, a conf dir holding a copy of
// testdata/bridge.conflist, and a plugin binary to install.
func installDirs(t *testing.T) InstallConfig {
	t.Helper()
	dir := t.TempDir()
	cfg := InstallConfig{
		PluginBinary:      filepath.Join(dir, "src", PluginType),
		BinDir:            filepath.Join(dir, "bin"),
		ConfDir:           filepath.Join(dir, "net.d"),
		AgentSocket:       "/var/run/ambient-lite/cni.sock",
		ExcludeNamespaces: []string{"kube-system"},
	}
	for _, d := range []string{filepath.Dir(cfg.PluginBinary), cfg.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(cfg.PluginBinary, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("testdata/bridge.conflist")
	if err != nil {
		t.Fatal(err)
	}
	// The lexically first file is the one the runtime loads.
	if err := os.WriteFile(filepath.Join(cfg.ConfDir, "10-bridge.conflist"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.ConfDir, "99-other.conflist"), []byte(`{"plugins":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestInstallUninstall(t *testing.T) {
	cfg := installDirs(t)
	conf := filepath.Join(cfg.ConfDir, "10-bridge.conflist")

	path, err := Install(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if path != conf {
		t.Errorf("Install chained into %s, want %s", path, conf)
	}
	got, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/bridge.installed.golden", got)
	bin := filepath.Join(cfg.BinDir, PluginType)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatalf("plugin binary not installed: %v", err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("plugin binary mode %v, want 0755", fi.Mode().Perm())
	}
	if other, _ := os.ReadFile(filepath.Join(cfg.ConfDir, "99-other.conflist")); string(other) != `{"plugins":[]}` {
		t.Errorf("Install touched another conflist: %s", other)
	}

	// Idempotent: nothing is rewritten the second time.
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{conf, bin} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{conf, bin} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(old) {
			t.Errorf("second Install rewrote %s", p)
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(cfg.ConfDir, ".*")); len(tmp) > 0 {
		t.Errorf("temp files left behind: %v", tmp)
	}

	if err := Uninstall(cfg); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/bridge.uninstalled.golden", got)
	if _, err := os.Stat(bin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plugin binary still there after Uninstall: %v", err)
	}
	if err := Uninstall(cfg); err != nil {
		t.Errorf("second Uninstall: %v", err)
	}
}

func TestInstallExplicitConfFile(t *testing.T) {
	cfg := installDirs(t)
	cfg.ConfFile = filepath.Join(cfg.ConfDir, "99-other.conflist")
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(cfg.ConfFile)
	if !strings.Contains(string(got), PluginType) {
		t.Errorf("explicit ConfFile not edited:\n%s", got)
	}
}

func TestInstallNoNetworkConfig(t *testing.T) {
	cfg := installDirs(t)
	os.RemoveAll(cfg.ConfDir)
	if _, err := Install(cfg); !errors.Is(err, ErrNoNetworkConfig) {
		t.Errorf("Install without a conf dir = %v, want ErrNoNetworkConfig", err)
	}
	os.MkdirAll(cfg.ConfDir, 0o755)
	if _, err := Install(cfg); !errors.Is(err, ErrNoNetworkConfig) {
		t.Errorf("Install with an empty conf dir = %v, want ErrNoNetworkConfig", err)
	}
	if err := Uninstall(cfg); err != nil {
		t.Errorf("Uninstall with nothing installed: %v", err)
	}
}
