#!/usr/bin/env bash
# The CEL evaluation benchmark: 10,000 evaluations of a typical ValidatingAdmissionPolicy
# validation against a 3-container pod, with fresh bindings each time (one request, one
# expression: the object converted once per evaluation) and with one bindings for all (the
# object converted once), then of an expression using Kubernetes' libraries (quantity, matches).
# It is the ignored unit test `cel_evaluation_cost`; it prints figures and asserts none.
#   hack/bench-cel.sh              debug build (what the tests use)
#   hack/bench-cel.sh --release    release build
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
if [ "${1:-}" = "--release" ]; then
    profile=(--release)
fi
cargo test "${profile[@]}" -p berth-apiserver --lib cel_evaluation_cost -- --ignored --nocapture 2>&1 | grep 'expression:'
