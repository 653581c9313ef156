#!/usr/bin/env bash
# hack/vm/test.sh: the VM suite. Berth on cgroup v2 with systemd as PID 1, whatever the host
# runs: a Debian bookworm guest (hack/vm/image.sh, built once and cached) booted under qemu
# (hack/vm/boot.sh) with this tree's binaries, unit files and test binaries shared in. It runs
#   integration/tests/systemd_cgroup2.rs  berth runtime and berth node as systemd services
#                                         (both cgroup drivers): limits, OOM, stats, restarts
#   integration/tests/kubelet_fixtures.rs the recorded kubelet's CRI calls, on cgroup v2
# Needs root, the Debian packages of hack/deps.sh and the test registry on 127.0.0.1:5000
# (hack/test.sh runs it; alone, this script starts the registries itself when they are down
# and stops them again). Extra arguments are a test name filter for every binary.
# Env: BERTH_VM_KEEP=1 keeps the share (guest.log, journal.txt, console.log); BERTH_VM_TIMEOUT,
#      BERTH_VM_MEM, BERTH_VM_CPUS, BERTH_VM_ACCEL, BERTH_VM_CONSOLE go to hack/vm/boot.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "hack/vm/test.sh: run as root (the image build and the guest's share need it)" >&2; exit 1; }
src=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$src/target}
t0=$SECONDS
log() { echo "hack/vm/test.sh: $*" >&2; }

img=$(hack/vm/image.sh)
log "guest image $img ($((SECONDS - t0))s)"

# The binaries and test binaries as hack/test.sh builds them (debug, the whole workspace in
# one invocation, so nothing is rebuilt with other features), then the two the guest runs.
hack/build.sh
tests=(systemd_cgroup2 kubelet_fixtures)
mapfile -t executables < <(cargo test --workspace --no-run --message-format=json 2> /dev/null |
  jq -r --argjson want "$(printf '%s\n' "${tests[@]}" | jq -R . | jq -s .)" \
    'select(.reason == "compiler-artifact" and .executable != null and .target.kind == ["test"] and (.target.name as $n | $want | index($n))) | .executable')
[ ${#executables[@]} -eq ${#tests[@]} ] || { log "expected ${#tests[@]} test binaries, cargo built: ${executables[*]:-none}"; exit 1; }
log "built ($((SECONDS - t0))s)"

# The registry: the one running (hack/test.sh's), else our own for this run.
started_registry=0
share=
cleanup() {
  local rc=$?
  if [ "$started_registry" = 1 ]; then hack/registry.sh stop > /dev/null 2>&1 || true; fi
  if [ -n "$share" ]; then
    if [ "${BERTH_VM_KEEP:-0}" = 1 ]; then log "kept $share (guest.log, journal.txt, console.log)"; else rm -rf "$share"; fi
  fi
}
trap cleanup EXIT
if ! curl -s -o /dev/null "http://127.0.0.1:5000/v2/"; then
  log "no registry on 127.0.0.1:5000: starting the test registries"
  started_registry=1
  hack/registry.sh start > /dev/null
  hack/images.sh > /dev/null
fi
images_env=${BERTH_TEST_IMAGES_ENV:-$src/hack/build/images.env}
[ -f "$images_env" ] || { log "$images_env missing (hack/images.sh writes it)"; exit 1; }

share=$(mktemp -d /var/tmp/berth-vm-share.XXXXXX)
mkdir -p "$share"/{bin,systemd,tests,src/integration}
cp "$CARGO_TARGET_DIR/debug/berth" "$CARGO_TARGET_DIR/debug/berth-cni" "$share/bin/"
cp hack/systemd/*.service "$share/systemd/"
cp "${executables[@]}" "$share/tests/"
cp -r integration/fixtures "$share/src/integration/"
cp "$images_env" "$share/images.env"
cp hack/vm/guest.sh "$share/guest.sh"
filter=${1:-}
{
  echo "BERTH_VM_FORWARD='5000 5001'"
  echo "BERTH_SRC_DIR='$src'"
  # binary:arguments (comma-separated), one after the other
  echo "BERTH_VM_TESTS='systemd_cgroup2:--include-ignored${filter:+,$filter} kubelet_fixtures:${filter}'"
} > "$share/env"

rc=0
BERTH_VM_FORWARD='5000 5001' hack/vm/boot.sh "$img" "$share" || rc=$?
log "exit code $rc after $((SECONDS - t0))s"
exit "$rc"
