// Command gen keeps the install folder in step with its sources. Run from
// install/ by `go generate ./install/...` (part of `make generate`):
//
//   - chart/ambient-lite/crds/ gets the CRD YAML of package crds (the one
//     source of truth): the Gateway API experimental channel and
//     security.istio.io;
//   - manifests/ gets the chart rendered with its default values.
//
// Both are byte-for-byte reproducible; tests fail when either is stale.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ambientlite/mesh/crds"
	"github.com/ambientlite/mesh/install"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "install/gen:", err)
		os.Exit(1)
	}
}

func run() error {
	for name, data := range install.ChartCRDs(crds.GatewayAPIExperimental, crds.Security) {
		if err := write(filepath.Join("chart", install.ChartName, "crds", name), data); err != nil {
			return err
		}
	}
	r, err := install.RenderChart(nil)
	if err != nil {
		return err
	}
	for name, data := range install.Manifests(r) {
		if err := write(filepath.Join("manifests", name), data); err != nil {
			return err
		}
	}
	return nil
}

func write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
