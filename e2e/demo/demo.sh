#!/usr/bin/env bash
# make demo: a cluster (the current context when KUBECONFIG points at a
# reachable cluster, otherwise the local one, brought up here), Ambient Lite
# installed by ambientctl, the bookinfo-lite sample enrolled with a waypoint
# and a 90/10 HTTPRoute; it prints the measured split, the mTLS proof from
# ztunnel's metrics, ambientctl check and proxy-status. Idempotent.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
STATE_DIR=${STATE_DIR:-/var/lib/ambient-lite/cluster}
PREFIX=${PREFIX:-localhost/ambientlite}
TAG=${TAG:-dev}
local_kubeconfig=$STATE_DIR/kubeconfig
bin=$root/_output/bin
image=$PREFIX/meshecho:$TAG
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# Which cluster: the user's current context if KUBECONFIG reaches one.
use_local=1
if [ -n "${KUBECONFIG:-}" ] && [ "$KUBECONFIG" != "$local_kubeconfig" ]; then
	kubectl_bin=$(command -v kubectl || true)
	[ -n "$kubectl_bin" ] || kubectl_bin=$("$root/e2e/cluster/build-tools.sh")/kubectl
	if "$kubectl_bin" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
		use_local=0
		step "using your current context: $("$kubectl_bin" config current-context)"
		if [ "${PREFIX%%/*}" = localhost ]; then
			echo "note: the sample uses image $image; a cluster other than the local one must be able to"
			echo "      pull it: push the images (make images PUSH=registry/prefix) and run"
			echo "      make demo PREFIX=registry/prefix"
		fi
	else
		echo "KUBECONFIG=$KUBECONFIG does not reach a cluster; using the local one instead"
	fi
fi
if [ "$use_local" = 1 ]; then
	step "local cluster"
	make --no-print-directory cluster-up STATE_DIR="$STATE_DIR"
	export KUBECONFIG=$local_kubeconfig
	kubectl_bin=$bin/kubectl
	step "images"
	make --no-print-directory images PREFIX="$PREFIX" TAG="$TAG"
fi
k() { "$kubectl_bin" "$@"; }
actl() { "$bin/ambientctl" "$@"; }

step "install Ambient Lite (ambientctl install: CRDs, istiod-lite, ztunnel, GatewayClass)"
if [ "$use_local" = 1 ]; then
	# The local node keeps its CNI plugins and config in its own places.
	actl install --set global.hub="$PREFIX" --set global.tag="$TAG" \
		--set cni.binDir=/usr/lib/cni --set cni.confDir="$STATE_DIR/cni"
	# Images were just (re)loaded under the same tag: restart to run them.
	k -n istio-system rollout restart deployment/istiod daemonset/ztunnel >/dev/null
	k -n istio-system rollout status deployment/istiod daemonset/ztunnel --timeout=180s >/dev/null
else
	actl install --set global.hub="$PREFIX" --set global.tag="$TAG"
fi

step "deploy bookinfo-lite (frontend -> reviews v1/v2 -> ratings) in namespace bookinfo"
sed "s#\$IMAGE#$image#g" e2e/demo/bookinfo.yaml | k apply -f -
k -n bookinfo rollout status deployment/frontend-v1 deployment/reviews-v1 deployment/reviews-v2 deployment/ratings-v1 deployment/client --timeout=180s

step "enrol namespace bookinfo in the mesh (no restart) and give it a waypoint"
k label namespace bookinfo istio.io/dataplane-mode=ambient --overwrite
actl waypoint apply -n bookinfo --enroll-namespace --wait
# The running pods are captured by the node agent: wait for all of them.
for _ in $(seq 60); do
	pods=$(k -n bookinfo get pods -l 'app in (frontend,reviews,ratings,client)' -o name | grep -c . || true)
	enrolled=$(k -n bookinfo get pods -l 'app in (frontend,reviews,ratings,client)' \
		-o jsonpath='{range .items[*]}{.metadata.annotations.ambient\.istio\.io/redirection}{"\n"}{end}' | grep -c enabled || true)
	[ "$pods" -gt 0 ] && [ "$enrolled" -eq "$pods" ] && break
	sleep 1
done
echo "$enrolled of $pods pods captured by ztunnel"

step "route reviews: 90% to v1, 10% to v2, retry 503s (plain Gateway API HTTPRoute)"
cat e2e/demo/reviews-route.yaml | grep -v '^#'
k apply -f e2e/demo/reviews-route.yaml
for _ in $(seq 60); do
	st=$(k -n bookinfo get httproute reviews -o jsonpath='{.status.parents[0].conditions[?(@.type=="Accepted")].status}/{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}')
	[ "$st" = "True/True" ] && break
	sleep 1
done
echo "HTTPRoute reviews: Accepted/ResolvedRefs = $st"
sleep 1

step "one request to the frontend, as the client pod sees it (client -> ztunnel -> waypoint -> pod)"
k -n bookinfo exec deploy/client -- meshecho client --print-body http://frontend:9080/productpage

step "the measured split: 500 requests to reviews"
out=$(k -n bookinfo exec deploy/client -- meshecho client -n 500 -c 10 -o json http://reviews:9080/reviews/0)
v1=$(printf '%s' "$out" | tr -d ' \n' | grep -o '"v1":[0-9]*' | head -1 | cut -d: -f2)
v2=$(printf '%s' "$out" | tr -d ' \n' | grep -o '"v2":[0-9]*' | head -1 | cut -d: -f2)
ok=$(printf '%s' "$out" | tr -d ' \n' | grep -o '"200":[0-9]*' | head -1 | cut -d: -f2)
v1=${v1:-0} v2=${v2:-0} ok=${ok:-0}
printf 'reviews v1: %d (%d.%d%%)   reviews v2: %d (%d.%d%%)   HTTP 200: %d of 500\n' \
	"$v1" $((v1 * 100 / 500)) $((v1 * 1000 / 500 % 10)) "$v2" $((v2 * 100 / 500)) $((v2 * 1000 / 500 % 10)) "$ok"

# metrics NS POD PORT: GET /metrics of a pod's port through the API server.
metrics() {
	local out="" pf
	"$kubectl_bin" -n "$1" port-forward "pod/$2" "15920:$3" >/dev/null 2>&1 &
	pf=$!
	for _ in $(seq 30); do
		out=$({ exec 3<>/dev/tcp/127.0.0.1/15920 && printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 && cat <&3; } 2>/dev/null) && break
		sleep 0.3
	done
	kill "$pf" 2>/dev/null || true
	wait "$pf" 2>/dev/null || true
	printf '%s\n' "$out"
}

step "proof of mutual TLS, from the proxies' own metrics"
echo "client -> waypoint (requests the waypoint served, by verified client principal):"
wp=$(k -n bookinfo get pods -l gateway.networking.k8s.io/gateway-name=waypoint -o jsonpath='{.items[0].metadata.name}')
metrics bookinfo "$wp" 15020 | grep '^istio_requests_total{' |
	sed -E 's/.*destination_service="([^"]*)".*source_principal="([^"]*)".*\} ([0-9.e+]+)$/\2 -> \1 \3/' |
	awk '{n[$1" "$2" "$3]+=$4} END {for (k in n) printf "  mutual_tls  %s  (%d requests)\n", k, n[k]}' | sort
echo "waypoint -> pods (connections the destination ztunnel accepted, by principal):"
zt=$(k -n istio-system get pods -l app=ztunnel -o jsonpath='{.items[0].metadata.name}')
metrics istio-system "$zt" 15020 | grep '^istio_tcp_connections_opened_total{' | grep 'reporter="destination"' | grep 'destination_workload_namespace="bookinfo"' |
	sed -E 's/.*connection_security_policy="([^"]*)".*destination_principal="([^"]*)".*source_principal="([^"]*)".*\} ([0-9.e+]+)$/\1 \3 -> \2 \4/' |
	awk '{n[$1"  "$2" "$3" "$4]+=$5} END {for (k in n) printf "  %s  (%d connections)\n", k, n[k]}' | sort

step "ambientctl check"
actl check || true

step "ambientctl proxy-status"
actl proxy-status

if [ "$use_local" = 1 ]; then
	printf '\nWhat to try next (kubectl v1.37.2 and ambientctl are in _output/bin):\n  export KUBECONFIG=%s PATH=%s:$PATH\n' "$KUBECONFIG" "$bin"
else
	printf '\nWhat to try next (ambientctl is in _output/bin):\n'
fi
cat <<EOT
  ambientctl ztunnel-config workloads          # what ztunnel knows, from its admin endpoint
  ambientctl ztunnel-config certificates
  ambientctl waypoint status -n bookinfo
  kubectl -n bookinfo get httproute reviews -o yaml   # the route and its status
  kubectl -n bookinfo edit httproute reviews          # change the weights; the waypoint follows in < 1 s
  kubectl -n bookinfo exec deploy/client -- meshecho client -n 100 -c 10 http://reviews:9080/
  kubectl -n bookinfo logs deploy/waypoint            # one access-log line per request
Tear down:
  kubectl delete namespace bookinfo     # just the sample
  ambientctl uninstall                  # the mesh (running pods keep plain networking)
  make cluster-down                     # the whole local cluster, host restored
EOT
