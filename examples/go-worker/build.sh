#!/usr/bin/env sh
# Builds the Go conformance worker with Debian's Go packages, in GOPATH mode (no module proxy
# needed): golang-go, golang-google-grpc-dev, golang-github-golang-protobuf-1-5-dev (Debian's
# grpc 1.33 marshals through github.com/golang/protobuf; with the 1.3 package the generated
# stubs panic on the first reply), golang-google-protobuf-dev, protobuf-compiler,
# protoc-gen-go and protoc-gen-go-grpc.
#
#   examples/go-worker/build.sh [OUT_DIR]    -> OUT_DIR/conveyor-go-worker (default ./build)
#
# The stubs are generated from protos/ at every build, into OUT_DIR/gopath, never committed:
# they cannot drift from the protos. The M options give the generated package its import path
# whether or not the protos carry a go_package option.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)
gopath="$out/gopath"
rm -rf "$gopath"
mkdir -p "$gopath/src"

map="Mconveyor/v1/coordinator.proto=conveyor.example/gen/conveyorv1;conveyorv1"
protoc -I "$root/protos" \
  --go_out="$gopath/src" --go_opt="$map" \
  --go-grpc_out="$gopath/src" --go-grpc_opt="$map" \
  conveyor/v1/coordinator.proto

cd "$here"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOFLAGS= \
  go build -o "$out/conveyor-go-worker" .
echo "$out/conveyor-go-worker"
