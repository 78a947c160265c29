# Ambient Lite. The two commands a newcomer runs: `make demo` and `make test`.
# Both install what they need (Debian packages, pinned upstream builds) and
# print how long each phase took.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := /usr/local/go/bin:$(PATH)

GO        ?= go
TAG       ?= dev
PREFIX    ?= localhost/ambientlite
PUSH      ?=
STATE_DIR ?= /var/lib/ambient-lite/cluster
OUT       := _output
BIN       := $(OUT)/bin
CLUSTER   := $(BIN)/cluster
KUBECONFIG_LOCAL := $(STATE_DIR)/kubeconfig
E2E_TIMEOUT ?= 30m
# The e2e tests live in ./e2e itself (its other subpackages hold unit tests
# only); ./e2e/lifecycle stops and restarts the shared cluster, so it runs last.
E2E_PKGS ?= ./e2e/
E2E_LIFECYCLE ?= ./e2e/lifecycle/
# The Gateway API mesh conformance suite (e2e/conformance); CONFORMANCE_ARGS go
# to the suite after -args, e.g. CONFORMANCE_ARGS=-run-test=MeshBasic.
CONFORMANCE_TIMEOUT ?= 45m
CONFORMANCE_ARGS ?=

# phase NAME CMD: run CMD and print how long it took.
define phase
	@echo "### $(1)"; s=$$(date +%s); $(2); echo "### $(1): $$(( $$(date +%s) - s ))s"
endef

.PHONY: all build test unit e2e conformance bench demo images cluster-up cluster-down cluster-status generate verify lint tools clean

all: build

## build: compile every binary into _output/bin
build:
	$(GO) build ./...
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./e2e/cmd/...
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X github.com/ambientlite/mesh/ambientctl/cli.version=$(TAG)" -o $(BIN)/ ./ambientctl/cmd/ambientctl

## test: unit tests, then against the local cluster the e2e tests, the Gateway
## API mesh conformance suite and the cluster lifecycle test (what CI runs)
test:
	$(call phase,unit tests,$(MAKE) --no-print-directory unit)
	$(call phase,e2e tests (cluster up + images + tests),$(MAKE) --no-print-directory e2e)

unit:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

## e2e: bring up the local cluster (idempotent), load the images, run the e2e
## tests, then `make conformance` (-o: its cluster-up and images are done
## already), then ambientctl install/uninstall, then the cluster lifecycle test
e2e: cluster-up images
	KUBECONFIG=$(KUBECONFIG_LOCAL) AMBIENT_LITE_STATE_DIR=$(STATE_DIR) \
		$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v $(E2E_PKGS)
	$(MAKE) --no-print-directory -o cluster-up -o images conformance
	$(call phase,ambientctl install then uninstall - the sample back to plain text,KUBECONFIG=$(KUBECONFIG_LOCAL) AMBIENT_LITE_STATE_DIR=$(STATE_DIR) \
		$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./e2e/uninstall/)
	$(call phase,cluster lifecycle - down then up then recovery after kill -9,AMBIENT_LITE_STATE_DIR=$(STATE_DIR) \
		$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v $(E2E_LIFECYCLE))

## conformance: bring up the local cluster, load the images, run the upstream
## Gateway API mesh conformance suite (all 22 mesh tests of v1.6.3); writes
## e2e/conformance/report.yaml and results.md, fails if a test fails
conformance: cluster-up images
	$(call phase,gateway api mesh conformance,KUBECONFIG=$(KUBECONFIG_LOCAL) AMBIENT_LITE_STATE_DIR=$(STATE_DIR) \
		$(GO) test -tags e2e -count=1 -timeout $(CONFORMANCE_TIMEOUT) -v ./e2e/conformance/ -args $(CONFORMANCE_ARGS))

## bench: Go benchmarks, then the ztunnel data path against direct TCP, HAProxy
## and stunnel, then the waypoint (L7) path against the L4 path, direct and
## HAProxy doing the same 90/10 split, in network namespaces (bench/README.md;
## needs root; installs the peers). All print and never fail on a number.
## L4BENCH_FLAGS: l4bench -h; L7BENCH_FLAGS: l7bench -h.
L4BENCH_FLAGS ?=
L7BENCH_FLAGS ?=
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bench/install-peers.sh
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./bench/cmd/l4bench ./bench/cmd/l7bench ./bench/cmd/l7bench-waypoint
	$(BIN)/l4bench $(L4BENCH_FLAGS)
	$(BIN)/l7bench $(L7BENCH_FLAGS)

## demo: a local cluster (or the current reachable context) with the sample app
demo: build
	$(call phase,demo,STATE_DIR=$(STATE_DIR) PREFIX=$(PREFIX) TAG=$(TAG) e2e/demo/demo.sh)

## images: build OCI images of every binary (no Docker); load them into the
## local cluster, or push them with PUSH=registry/prefix
images: build
ifeq ($(PUSH),)
	$(call phase,images,$(BIN)/images --out $(OUT)/images --prefix $(PREFIX) --tag $(TAG) --tools-dir "$$(e2e/cluster/build-tools.sh)" $$( [ -S /run/containerd/containerd.sock ] && echo --load ))
else
	$(call phase,images,$(BIN)/images --out $(OUT)/images --tag $(TAG) --tools-dir "$$(e2e/cluster/build-tools.sh)" --push $(PUSH))
endif

## cluster-up / cluster-down / cluster-status: the local Kubernetes cluster
cluster-up: build tools
	$(call phase,cluster up,$(CLUSTER) up --state-dir=$(STATE_DIR) --tools-dir "$$(e2e/cluster/build-tools.sh)")
	@ln -sf "$$(e2e/cluster/build-tools.sh)/kubectl" $(BIN)/kubectl

cluster-down: build
	$(CLUSTER) down --state-dir=$(STATE_DIR)

cluster-status: build
	$(CLUSTER) status --state-dir=$(STATE_DIR)

## tools: host packages and the pinned upstream Kubernetes build (cached)
tools:
	$(call phase,host packages,e2e/cluster/install-deps.sh)
	$(call phase,upstream binaries,e2e/cluster/build-tools.sh >/dev/null)

## generate: regenerate generated code: CRDs (crds/gen) and the route API protobuf (internal/routeapi/generate.sh)
generate:
	$(GO) generate ./...

## verify: fail if generated code or formatting is out of date
verify: generate
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w"; exit 1; }
	@git diff --exit-code --stat || { echo "make generate changed the tree"; exit 1; }

## lint: gofmt and go vet
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "run gofmt -w"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

clean:
	rm -rf $(OUT)
