#!/usr/bin/env bash
# Regenerates the Python code for protos/ into sdk/python/ (the SDK owns the generated
# stubs; the server imports them from there). CI runs this and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
out=sdk/python
rm -f "$out"/conveyor/v1/*_pb2*.py "$out"/conveyor/v1/*_pb2*.pyi
python -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/conveyor/v1/*.proto
