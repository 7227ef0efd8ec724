#!/usr/bin/env bash
# Fails when the committed generated code differs from what protos/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/generate_protos.sh
if ! git diff --exit-code --stat -- sdk/python/conveyor/v1; then
  echo "generated code is stale: run scripts/generate_protos.sh and commit the result" >&2
  exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- sdk/python/conveyor/v1)
if [ -n "$untracked" ]; then
  echo "generated files not committed: $untracked" >&2
  exit 1
fi
echo "generated code is up to date"
