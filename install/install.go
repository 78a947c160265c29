// Package install puts Ambient Lite on a cluster. It embeds the Helm chart
// install/chart/ambient-lite and renders it in-process with Helm's own chart
// loader, values coalescing, schema check and template engine, so that
// `ambientctl install`, `helm install` and the plain manifests in
// install/manifests all come from one source.
//
// The chart's crds/ folder is a copy of the YAML in package crds (the
// Gateway API experimental channel and security.istio.io), written by
// `go generate ./install/...` and checked by a test; install/manifests is
// the chart rendered with its default values, written by the same step.
package install

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

//go:generate go run ./gen

// The chart's identity: Render always renders release ReleaseName into
// Namespace, the namespace Istio's proxies dial istiod in.
const (
	ChartName   = "ambient-lite"
	ReleaseName = "ambient-lite"
	Namespace   = "istio-system"
)

// chartDir is the chart's folder inside this package.
const chartDir = "chart/" + ChartName

//go:embed all:chart/ambient-lite
var chartFiles embed.FS

// LoadChart returns the embedded chart, loaded by Helm's loader.
func LoadChart() (*chart.Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(chartFiles, chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := chartFiles.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: strings.TrimPrefix(p, chartDir+"/"), Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the embedded chart: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("load the embedded chart: %w", err)
	}
	return c, nil
}

// ChartFile returns one file of the embedded chart, by its path in the
// chart ("values.yaml", "crds/security.istio.io.yaml").
func ChartFile(name string) ([]byte, error) {
	return chartFiles.ReadFile(path.Join(chartDir, name))
}

// Doc is one rendered YAML document.
type Doc struct {
	// Source is the chart file it came from: "crds/<file>" or
	// "templates/<folder>/<file>".
	Source string
	// YAML is the document as rendered, comments included, ending in a
	// newline and without the "---" separator.
	YAML string
	// Object is the document parsed.
	Object *unstructured.Unstructured
}

// Folder is the folder under templates/ the document came from
// ("istiod-lite", "ztunnel"), or "crds".
func (d Doc) Folder() string {
	if strings.HasPrefix(d.Source, "crds/") {
		return "crds"
	}
	dir := path.Dir(strings.TrimPrefix(d.Source, "templates/"))
	if dir == "." {
		return ""
	}
	return dir
}

// Rendered is the chart rendered with some values.
type Rendered struct {
	// CRDs are the documents of the chart's crds/ folder, file by file in
	// name order, each file's documents in their order. Helm applies them
	// as they are (they are not templates).
	CRDs []Doc
	// Templates are the rendered templates in install order: by kind
	// (Namespace, then identities and RBAC, Services, workloads, the
	// GatewayClass), then by file and position.
	Templates []Doc
	// Notes is the rendered NOTES.txt.
	Notes string
}

// Docs returns the CRDs, then the templates: the order to apply them in.
func (r *Rendered) Docs() []Doc {
	return append(append([]Doc(nil), r.CRDs...), r.Templates...)
}

// Objects returns the objects of Docs, in the same order.
func (r *Rendered) Objects() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, d := range r.Docs() {
		out = append(out, d.Object)
	}
	return out
}

// Render renders the embedded chart with vals over its defaults and returns
// every object to apply, CRDs first, in install order.
func Render(vals Values) ([]*unstructured.Unstructured, error) {
	r, err := RenderChart(vals)
	if err != nil {
		return nil, err
	}
	return r.Objects(), nil
}

// RenderChart renders the embedded chart with vals over its defaults. Values
// are checked against the chart's values.schema.json: an unknown key or a bad
// value is an error.
func RenderChart(vals Values) (*Rendered, error) {
	c, err := LoadChart()
	if err != nil {
		return nil, err
	}
	if vals == nil {
		vals = Values{}
	}
	top, err := util.ToRenderValues(c, vals.clone(), common.ReleaseOptions{
		Name: ReleaseName, Namespace: Namespace, IsInstall: true, Revision: 1,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("invalid values: %s", schemaProblems(err))
	}
	files, err := engine.Engine{Strict: true}.Render(c, top)
	if err != nil {
		return nil, fmt.Errorf("render the chart: %w", err)
	}
	r := &Rendered{}
	for _, crd := range c.CRDObjects() {
		docs, err := splitDocs(crd.Name, string(crd.File.Data))
		if err != nil {
			return nil, err
		}
		r.CRDs = append(r.CRDs, docs...)
	}
	sort.SliceStable(r.CRDs, func(i, j int) bool { return r.CRDs[i].Source < r.CRDs[j].Source })

	prefix := ChartName + "/"
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		src := strings.TrimPrefix(name, prefix)
		switch {
		case path.Base(src) == "NOTES.txt":
			r.Notes = files[name]
			continue
		case strings.HasPrefix(path.Base(src), "_"):
			continue
		}
		docs, err := splitDocs(src, files[name])
		if err != nil {
			return nil, err
		}
		r.Templates = append(r.Templates, docs...)
	}
	sort.SliceStable(r.Templates, func(i, j int) bool {
		return kindRank(r.Templates[i].Object.GetKind()) < kindRank(r.Templates[j].Object.GetKind())
	})
	return r, nil
}

// schemaProblems shortens Helm's schema error to its list of problems, one
// "at '/path': what" per value, joined by "; ".
func schemaProblems(err error) string {
	var problems []string
	for line := range strings.Lines(err.Error()) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok {
			problems = append(problems, p)
		}
	}
	if len(problems) == 0 {
		return err.Error()
	}
	return strings.Join(problems, "; ")
}

// installOrder is the order kinds are applied in; kinds not listed go last.
// Uninstall deletes in the reverse order.
var installOrder = []string{
	"CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
	"Namespace", "ServiceAccount", "Secret", "ConfigMap",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"Service", "Deployment", "DaemonSet", "PodDisruptionBudget", "GatewayClass",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}

// Manifest returns docs as one multi-document YAML stream, each document
// introduced by "---".
func Manifest(docs []Doc) []byte {
	var b bytes.Buffer
	for _, d := range docs {
		b.WriteString("---\n")
		b.WriteString(d.YAML)
	}
	return b.Bytes()
}
