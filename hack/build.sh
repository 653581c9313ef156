#!/usr/bin/env bash
# The one build invocation every script uses, so that each builds the same `berth` binary
# (a build of one package and of the whole workspace unify dependency features differently,
# and each switch relinks the binary).
#   hack/build.sh            debug: every binary and test of the workspace (what the tests run)
#   hack/build.sh --release  release: every binary of the workspace (berth, berth-cni, berth-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--release" ]; then
  cargo build --release --workspace --bins
else
  # Test executables are built as `cargo test` builds them (the test profile: no debug info),
  # so that the test run reuses them instead of linking a second copy of each.
  cargo build --workspace --bins
  cargo test --workspace --no-run
fi
