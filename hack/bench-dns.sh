#!/usr/bin/env bash
# The cluster DNS benchmark (see integration/src/dns_bench.rs): `berth server` with its own node
# on private dirs (the test harness's: a private bridge, pod CIDR and cgroup root, all removed at
# the end), its node-local DNS on 10.251.0.10 (service CIDR 10.251.0.0/20, a link of its own,
# removed on stop) forwarding to a fake upstream on 127.0.251.53; 1,000 Services (100 of them
# headless) with an EndpointSlice of 10 endpoints each. Then, for each case, a closed-loop UDP
# load (one thread, --concurrency queries in flight) for --seconds: queries/s, p50/p99 latency,
# timeouts; from the host to the bound address and from a pod's network namespace. Then the
# server's RSS and the heap the DNS index takes for those objects.
#   hack/bench-dns.sh                                  release build, defaults
#   BERTH_BIN=target/debug/berth hack/bench-dns.sh --services 200 --seconds 5 --concurrency 16
# Needs root and the local test registry (started and stopped again when it was not running).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/bench-dns.sh: run as root" >&2; exit 1; }
out=${CARGO_TARGET_DIR:-target}
if [ -z "${BERTH_BIN:-}" ]; then
  hack/build.sh --release
  BERTH_BIN=$out/release/berth
fi
BERTH_BIN=$(realpath "$BERTH_BIN")
BENCH=${BERTH_BENCH:-$(dirname "$BERTH_BIN")/berth-bench}
export BERTH_BIN BERTH_QUIET=1
export BERTH_REGISTRY_DIR=${BERTH_REGISTRY_DIR:-/tmp/berth-registry}
export BERTH_TEST_REGISTRY=127.0.0.1:5000 BERTH_TEST_AUTH_REGISTRY=127.0.0.1:5001
export BERTH_TEST_IMAGES_ENV=${BERTH_TEST_IMAGES_ENV:-$PWD/hack/build/images.env}
started_registry=0
if ! hack/registry.sh status >/dev/null 2>&1; then
  hack/registry.sh start
  started_registry=1
  hack/images.sh
fi
trap '[ $started_registry = 1 ] && hack/registry.sh stop' EXIT
"$BENCH" dns "$@"
