//go:build tools

package images

// The echo-advanced image (see the catalog) is built from these upstream
// packages, which nothing in this module imports: the blank imports keep
// istio.io/istio and its dependencies in go.mod and go.sum through
// `go mod tidy`, so that `go build istio.io/istio/...` works offline from
// the module cache. The tools build tag keeps them out of every real build.
import (
	_ "istio.io/istio/pkg/test/echo/cmd/client"
	_ "istio.io/istio/pkg/test/echo/cmd/server"
)
