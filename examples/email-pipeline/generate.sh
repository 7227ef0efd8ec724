#!/bin/sh
# Generates the Python code for the pipeline's contracts into gen/ (or the directory given as
# the first argument). Only pipeline.proto is generated: its import of conveyor/v1/task.proto
# resolves to the conveyor SDK's own conveyor.v1.task_pb2, so both share one descriptor.
# Node.js needs nothing generated: node/steps.mjs loads the .proto at run time.
# Run it with the Python that has the conveyor SDK and grpcio-tools (the repository's venv),
# or name that interpreter in $PYTHON.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/gen"}
mkdir -p "$out"
out=$(cd "$out" && pwd) # absolute, so that a relative argument still means from the caller
cd "$here"
"${PYTHON:-python}" -m grpc_tools.protoc -I ../../protos -I protos --python_out="$out" \
  protos/pipeline/v1/pipeline.proto
echo "generated $out/pipeline/v1/pipeline_pb2.py"
