#!/usr/bin/env bash
# Installs what the benchmarks (bench/l4bench, bench/l7bench) need from
# Debian's packages, only when missing: the peer proxies they measure ztunnel
# and the waypoint against (haproxy: the L4 pair and the L7 split; stunnel4)
# and the tools that build their namespaces (iproute2, util-linux's nsenter).
# Safe to run again. Never fails: what cannot be installed is reported by the
# benchmark (a peer as "not measured").
set -uo pipefail

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need+=(stunnel4)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	echo "install-peers: cannot install ${need[*]} here (needs root and apt-get)" >&2
	exit 0
fi
echo "install-peers: installing ${need[*]}" >&2
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
	tail -n 20 "$log" >&2
	echo "install-peers: apt-get failed; the benchmark reports what is missing" >&2
fi
rm -f "$log"
# Where an init system runs, the packages start their default services; the
# benchmark runs its own instances inside its own namespaces.
if command -v systemctl >/dev/null; then
	for svc in haproxy stunnel4; do
		if systemctl is-active --quiet "$svc" 2>/dev/null; then
			systemctl stop "$svc" >&2 || true
			systemctl disable "$svc" >&2 || true
		fi
	done
fi
exit 0
