#!/usr/bin/env bash
# Berth and containerd side by side in one run (see integration/src/bin/berth-bench.rs):
# installs the peer (Debian's containerd + runc + CNI plugins), builds release binaries,
# starts the local registry with the test images, runs both runtimes on private sockets and
# directories, prints the table and writes bench-results.json.
#   sudo hack/bench.sh            full run (50 sequential pods, 10 parallel, 100 execs)
#   sudo hack/bench.sh --quick    a few iterations, to check the benchmark still works
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/bench.sh: run as root" >&2; exit 1; }
hack/deps.sh
hack/build.sh --release
export BERTH_BIN=$PWD/target/release/berth BERTH_QUIET=1
export BERTH_REGISTRY_DIR=${BERTH_REGISTRY_DIR:-/tmp/berth-registry}
export BERTH_TEST_REGISTRY=127.0.0.1:5000 BERTH_TEST_AUTH_REGISTRY=127.0.0.1:5001
export BERTH_TEST_IMAGES_ENV=$PWD/hack/build/images.env
started_registry=0
if ! hack/registry.sh status >/dev/null 2>&1; then
  hack/registry.sh start
  started_registry=1
fi
trap '[ $started_registry = 1 ] && hack/registry.sh stop' EXIT
hack/images.sh
target/release/berth-bench --out "${BERTH_BENCH_OUT:-bench-results.json}" "$@"
