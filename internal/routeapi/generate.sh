#!/usr/bin/env bash
# Regenerates routeapi.pb.go and policy.pb.go from routeapi.proto and
# policy.proto. `make generate` runs it (through `go generate`); running it
# twice gives identical output.
#
# protoc is Debian's (installed with apt-get when missing, which needs root);
# protoc-gen-go is built from the google.golang.org/protobuf version in
# go.mod, so the generated code always matches the runtime library.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v protoc >/dev/null 2>&1 || [ ! -f /usr/include/google/protobuf/duration.proto ]; then
	echo "generate.sh: installing protoc (Debian protobuf-compiler, libprotobuf-dev)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null; }
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go

protoc \
	--plugin=protoc-gen-go="$tmp/protoc-gen-go" \
	--proto_path=. \
	--proto_path=/usr/include \
	--go_out=. \
	--go_opt=paths=source_relative \
	routeapi.proto policy.proto
