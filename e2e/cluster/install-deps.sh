#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs, only when something
# is missing: containerd, runc, the CNI plugins, iptables, nftables,
# conntrack and iproute2. Safe to run again.
set -euo pipefail

need=()
for c in containerd containerd-shim-runc-v2 ctr; do command -v "$c" >/dev/null || need+=(containerd); done
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: need root to install: ${need[*]}" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null; then
	echo "install-deps: no apt-get on this machine; install these packages by hand: ${need[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
# The Debian package may start containerd as a service; the cluster runs
# its own with its own configuration on the same socket.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
	systemctl stop containerd >&2 || true
	systemctl disable containerd >&2 || true
fi
