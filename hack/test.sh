#!/usr/bin/env bash
# The test command: install packages, build, start the local registries with the test images,
# run every test (unit and integration, as root; then the VM suite on cgroup v2 + systemd), and
# stop the registries whatever happens.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/test.sh: the tests run real mounts and processes: run as root" >&2; exit 1; }
hack/deps.sh
hack/build.sh
export BERTH_BIN=$PWD/target/debug/berth
export BERTH_REGISTRY_DIR=${BERTH_REGISTRY_DIR:-/tmp/berth-registry}
export BERTH_TEST_REGISTRY=127.0.0.1:5000 BERTH_TEST_AUTH_REGISTRY=127.0.0.1:5001
export BERTH_TEST_IMAGES_ENV=$PWD/hack/build/images.env
trap 'hack/registry.sh stop' EXIT
hack/registry.sh start
hack/images.sh
cargo test --workspace --no-fail-fast "$@" -- --test-threads=4
# The same tree on cgroup v2 with systemd as PID 1, in a VM (hack/vm/test.sh): on a full run,
# not on one narrowed by arguments (BERTH_VM_SUITE=1 runs it anyway, =0 skips it).
if [ "${BERTH_VM_SUITE:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
  hack/vm/test.sh
fi
