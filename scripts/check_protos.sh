#!/usr/bin/env bash
# Lints protos/ with buf (STANDARD rules, plus the v1 exceptions explained in buf.yaml) and
# checks the contract for breaking changes (FILE rules) against main. Needs the pinned buf CLI
# from tools/buf: `npm ci --prefix tools/buf` (.ci/run does that first).
#
# What "against main" means, since CI runs .ci/run on a clean clone of main itself, where HEAD
# *is* main (so `.git#branch=main` would compare the commit with itself and could never fail):
#   - HEAD has commits that the local branch `main` lacks (a feature branch): compare against
#     the merge base with main, i.e. the main this branch grew from. Not main's tip: a field
#     added on main since then would be reported as "deleted" by this branch.
#   - Otherwise (on main, detached at a commit of main, or no local `main` at all, as in a
#     single-branch clone): compare against the parent of the newest commit that changed
#     protos/, so the latest contract change is always checked, even when later commits did
#     not touch protos/. (If one push carries several commits that change protos/, only the
#     newest is checked against its parent; git alone cannot tell where the previous main
#     ended.) With uncommitted edits under protos/, compare against HEAD instead: what main
#     holds now is published, including fields its newest commit added.
#   - No such base (protos/ came in with the root commit, a shallow clone lacks that parent,
#     or this is not a git checkout): breaking is skipped with a message; lint still runs.
# The base is read with `subdir=protos`, so commits from before buf.yaml existed build as the
# same module (paths conveyor/v1/*.proto) as today's.
# BUF_AGAINST=<buf input> overrides the choice, e.g. BUF_AGAINST='.git#branch=main,subdir=protos'.
set -euo pipefail
cd "$(dirname "$0")/.."

buf=tools/buf/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
  echo "buf is not installed: run 'npm ci --prefix tools/buf'" >&2
  exit 1
fi
echo "buf $("$buf" --version)"

echo "-- buf lint"
"$buf" lint
echo "lint: ok"

echo "-- buf breaking"
against=${BUF_AGAINST:-}
if [ -z "$against" ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  base=
  if git rev-parse --verify --quiet refs/heads/main >/dev/null \
    && [ -n "$(git rev-list --max-count=1 refs/heads/main..HEAD)" ]; then
    base=$(git merge-base HEAD refs/heads/main || true)
    why="merge base of HEAD with main"
  fi
  if [ -z "$base" ] && [ -n "$(git status --porcelain -- protos)" ]; then
    base=$(git rev-parse --verify --quiet HEAD || true)
    why="HEAD, since protos/ has uncommitted changes"
  fi
  if [ -z "$base" ]; then
    last=$(git log -1 --format=%H -- protos)
    if [ -n "$last" ] && base=$(git rev-parse --verify --quiet "$last^"); then
      why="parent of $(git log -1 --format='%h (%s)' "$last"), the newest commit that changed protos/"
    else
      base=
    fi
  fi
  if [ -n "$base" ]; then
    against=".git#ref=$base,subdir=protos"
    echo "against $(git rev-parse --short "$base"): $why"
  fi
fi
if [ -z "$against" ]; then
  echo "breaking: SKIPPED - no earlier commit of protos/ to compare with (first commit, shallow clone, or not a git checkout)"
  exit 0
fi
"$buf" breaking --against "$against"
echo "breaking: ok (against $against)"
