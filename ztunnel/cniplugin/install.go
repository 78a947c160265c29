package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Defaults of InstallConfig.
const (
	DefaultBinDir  = "/opt/cni/bin"
	DefaultConfDir = "/etc/cni/net.d"
)

// InstallConfig says where the plugin goes. The zero value installs into the
// usual host paths.
type InstallConfig struct {
	// PluginBinary is the ambient-cni executable to copy. Default: the file
	// named ambient-cni next to the running executable.
	PluginBinary string
	// BinDir is the runtime's CNI binary directory (containerd's
	// plugins."io.containerd.grpc.v1.cri".cni.bin_dir). Default /opt/cni/bin.
	BinDir string
	// ConfDir is the runtime's CNI configuration directory. Default
	// /etc/cni/net.d.
	ConfDir string
	// ConfFile is the network configuration list to chain into. Default:
	// the file the runtime loads from ConfDir, the lexically first *.conf,
	// *.conflist or *.json; it must be a conflist (a "plugins" array).
	ConfFile string
	// AgentSocket is written into the plugin's entry. Default
	// DefaultAgentSocket.
	AgentSocket string
	// ExcludeNamespaces are written into the plugin's entry: pods there
	// start without asking the node agent. Default none.
	ExcludeNamespaces []string
}

func (c InstallConfig) withDefaults() (InstallConfig, error) {
	if c.BinDir == "" {
		c.BinDir = DefaultBinDir
	}
	if c.ConfDir == "" {
		c.ConfDir = DefaultConfDir
	}
	if c.AgentSocket == "" {
		c.AgentSocket = DefaultAgentSocket
	}
	if c.PluginBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("find the %s binary: %w", PluginType, err)
		}
		c.PluginBinary = filepath.Join(filepath.Dir(exe), PluginType)
	}
	return c, nil
}

// Entry is the plugin's entry in the conflist for cfg.
func (c InstallConfig) Entry() NetConf {
	sock := c.AgentSocket
	if sock == "" {
		sock = DefaultAgentSocket
	}
	return NetConf{Type: PluginType, AgentSocket: sock, ExcludeNamespaces: c.ExcludeNamespaces}
}

// ErrNoNetworkConfig means the configuration directory holds no network
// configuration yet (the node's network plugin has not written it): try
// again later.
var ErrNoNetworkConfig = errors.New("no CNI network configuration")

// Install copies the plugin binary into BinDir and chains the plugin as the
// last entry of the network configuration list, replacing an entry of ours
// that is there already. It is idempotent: files that already have the
// right content are not rewritten (the runtime reloads the configuration on
// every write). It returns the conflist it chained into.
func Install(cfg InstallConfig) (string, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return "", err
	}
	if err := copyBinary(cfg.PluginBinary, filepath.Join(cfg.BinDir, PluginType)); err != nil {
		return "", err
	}
	path, err := confFile(cfg)
	if err != nil {
		return "", err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read CNI network configuration: %w", err)
	}
	updated, err := InsertPlugin(old, cfg.Entry())
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if err := writeIfChanged(path, old, updated); err != nil {
		return "", err
	}
	return path, nil
}

// Uninstall removes the plugin's entry from the conflist and the binary from
// BinDir. Missing pieces are not an error.
func Uninstall(cfg InstallConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	path, err := confFile(cfg)
	switch {
	case errors.Is(err, ErrNoNetworkConfig):
	case err != nil:
		return err
	default:
		old, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CNI network configuration: %w", err)
		}
		updated, err := RemovePlugin(old)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := writeIfChanged(path, old, updated); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(cfg.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove plugin binary: %w", err)
	}
	return nil
}

// confFile finds the conflist to edit.
func confFile(cfg InstallConfig) (string, error) {
	if cfg.ConfFile != "" {
		return cfg.ConfFile, nil
	}
	entries, err := os.ReadDir(cfg.ConfDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w in %s (directory missing)", ErrNoNetworkConfig, cfg.ConfDir)
		}
		return "", fmt.Errorf("read CNI configuration directory: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".conf") || strings.HasSuffix(n, ".conflist") || strings.HasSuffix(n, ".json")) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("%w in %s yet", ErrNoNetworkConfig, cfg.ConfDir)
	}
	slices.Sort(names)
	return filepath.Join(cfg.ConfDir, names[0]), nil
}

// InsertPlugin returns conflist with entry as its last plugin. An entry of
// type ambient-cni already in the list is dropped first, so inserting twice
// changes nothing. The other keys and plugins keep their order and content;
// the output is indented with two spaces.
func InsertPlugin(conflist []byte, entry NetConf) ([]byte, error) {
	if entry.Type == "" {
		entry.Type = PluginType
	}
	obj, plugins, err := parseConflist(conflist)
	if err != nil {
		return nil, err
	}
	plugins, _ = dropOurs(plugins)
	e, err := json.Marshal(entry)
	if err != nil {
		return nil, err
	}
	return obj.withPlugins(append(plugins, e))
}

// RemovePlugin returns conflist without ambient-cni's entry; without one it
// returns conflist unchanged.
func RemovePlugin(conflist []byte) ([]byte, error) {
	obj, plugins, err := parseConflist(conflist)
	if err != nil {
		return nil, err
	}
	plugins, found := dropOurs(plugins)
	if !found {
		return conflist, nil
	}
	return obj.withPlugins(plugins)
}

// object is a JSON object with its keys in their original order.
type object []member

type member struct {
	key   string
	value json.RawMessage
}

func parseConflist(b []byte) (object, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, errors.New("not a CNI network configuration: want a JSON object")
	}
	var obj object
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("decode network configuration: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("decode network configuration: %w", err)
		}
		obj = append(obj, member{key: t.(string), value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("decode network configuration: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("decode network configuration: trailing data after the object")
	}
	i := slices.IndexFunc(obj, func(m member) bool { return m.key == "plugins" })
	if i < 0 {
		return nil, nil, fmt.Errorf("not a network configuration list (no \"plugins\"): %s chains only into a .conflist; convert the single-plugin configuration into one", PluginType)
	}
	var plugins []json.RawMessage
	if err := json.Unmarshal(obj[i].value, &plugins); err != nil {
		return nil, nil, fmt.Errorf("\"plugins\" is not an array: %w", err)
	}
	return obj, plugins, nil
}

func dropOurs(plugins []json.RawMessage) ([]json.RawMessage, bool) {
	found := false
	out := slices.DeleteFunc(slices.Clone(plugins), func(p json.RawMessage) bool {
		var t struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(p, &t) == nil && t.Type == PluginType {
			found = true
			return true
		}
		return false
	})
	return out, found
}

func (o object) withPlugins(plugins []json.RawMessage) ([]byte, error) {
	if plugins == nil {
		plugins = []json.RawMessage{}
	}
	pb, err := json.Marshal(plugins)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		buf.Write(k)
		buf.WriteByte(':')
		if m.key == "plugins" {
			buf.Write(pb)
		} else {
			buf.Write(m.value)
		}
	}
	buf.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// writeIfChanged replaces path atomically (temp file and rename in the same
// directory, so the runtime never reads half a file) unless it already has
// the content.
func writeIfChanged(path string, old, updated []byte) error {
	if bytes.Equal(old, updated) {
		return nil
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	return writeAtomic(path, updated, mode)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	// A leading dot and no .conf suffix: the runtime never loads the temp file.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+PluginType+"-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// copyBinary installs src at dst unless dst has the same content. It writes
// a temp file and renames it: a running plugin keeps its old inode, so the
// copy never fails with "text file busy".
func copyBinary(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read plugin binary: %w", err)
	}
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create CNI binary directory: %w", err)
	}
	return writeAtomic(dst, data, 0o755)
}
