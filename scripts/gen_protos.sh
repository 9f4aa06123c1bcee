#!/usr/bin/env bash
# Regenerate the committed gRPC code from protos/*.proto into OUT (default: the tree).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.}
mkdir -p "$OUT/protos"
.venv/bin/python -m grpc_tools.protoc -I . --python_out="$OUT" --grpc_python_out="$OUT" --pyi_out="$OUT" protos/*.proto
