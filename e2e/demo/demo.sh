#!/usr/bin/env bash
# make demo: a cluster (the current context when KUBECONFIG points at a
# reachable cluster, otherwise the local one, brought up here) with the
# bookinfo-lite sample, and what to try next.
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

step "deploy bookinfo-lite (frontend -> reviews v1/v2 -> ratings) in namespace bookinfo"
sed "s#\$IMAGE#$image#g" e2e/demo/bookinfo.yaml | k apply -f -
k -n bookinfo rollout status deployment/frontend-v1 deployment/reviews-v1 deployment/reviews-v2 deployment/ratings-v1 deployment/client --timeout=180s
# Ready pods join the Service a moment later: wait for both reviews
# endpoints, then give kube-proxy a second to program them.
for _ in $(seq 60); do
	ready=$(k -n bookinfo get endpointslices -l kubernetes.io/service-name=reviews \
		-o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | grep -c . || true)
	[ "$ready" -ge 2 ] && break
	sleep 1
done
sleep 1

step "one request to the frontend, as the client pod sees it"
k -n bookinfo exec deploy/client -- meshecho client --print-body http://frontend:9080/productpage

step "50 requests to reviews: kube-proxy spreads them over v1 and v2"
k -n bookinfo exec deploy/client -- meshecho client -n 50 -c 5 --keepalive=false http://reviews:9080/reviews/0

if [ "$use_local" = 1 ]; then
	printf '\nWhat to try next (kubectl v1.37.2 is in _output/bin):\n  export KUBECONFIG=%s PATH=%s:$PATH\n' "$KUBECONFIG" "$bin"
else
	printf '\nWhat to try next:\n'
fi
cat <<EOT
  kubectl -n bookinfo get pods,svc -o wide
  kubectl -n bookinfo exec deploy/client -- meshecho client -n 100 -c 10 http://reviews:9080/
  kubectl -n bookinfo exec deploy/client -- meshecho client --print-body 'http://ratings:9080/?status=503'
  kubectl -n bookinfo logs deploy/reviews-v2
  kubectl -n bookinfo port-forward svc/frontend 9080:9080   # then: curl localhost:9080/productpage
Tear down:
  kubectl delete namespace bookinfo     # just the sample
  make cluster-down                     # the whole local cluster, host restored
EOT
