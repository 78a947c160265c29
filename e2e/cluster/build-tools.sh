#!/usr/bin/env bash
# Builds the upstream binaries the local cluster runs (Kubernetes, etcd,
# CoreDNS) from the pinned tools module, into a cache outside the work tree
# keyed by the module's contents. Prints the directory holding the binaries.
# A second run with the same pins is a no-op.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools=$here/tools
k8s_version=v1.37.2
cache=${AMBIENT_LITE_CACHE:-/var/cache/ambient-lite}
key=$(cat "$tools/go.mod" "$tools/go.sum" "$tools"/*/main.go "$0" | sha256sum | cut -c1-12)
out=$cache/tools/k8s-$k8s_version-$key
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns)

complete=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || complete=0; done
if [ "$complete" = 1 ]; then
	echo "$out"
	exit 0
fi

command -v go >/dev/null || { echo "build-tools: the Go toolchain (go) is not on PATH; install Go 1.26" >&2; exit 1; }
mkdir -p "$out.tmp"
start=$(date +%s)
echo "build-tools: building Kubernetes $k8s_version, etcd and CoreDNS into $out (cold: 10-15 min on 2 cores)" >&2

minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$tools"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubelet \
	k8s.io/kubernetes/cmd/kube-proxy \
	k8s.io/kubernetes/cmd/kubectl \
	./etcd ./coredns >&2
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build-tools: done in $(( $(date +%s) - start ))s" >&2
echo "$out"
