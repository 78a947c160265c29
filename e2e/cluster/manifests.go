package cluster

import _ "embed"

//go:embed coredns.yaml
var corednsManifest string
