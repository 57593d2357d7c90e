#!/usr/bin/env bash
# Fails when regenerating Shared/OrreryProto/Generated from Protos/ would change it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
swift build --product protoc-gen-swift >/dev/null
swift build --product protoc-gen-grpc-swift-2 >/dev/null
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$root/Tools/scripts/generate-protos.sh" "$fresh"
if ! diff -r "$fresh" "$root/Shared/OrreryProto/Generated" >/dev/null; then
    diff -r "$fresh" "$root/Shared/OrreryProto/Generated" | head -40 >&2 || true
    echo "Shared/OrreryProto/Generated is stale: run 'make proto' and commit the result" >&2
    exit 1
fi
echo "generated code is current"
