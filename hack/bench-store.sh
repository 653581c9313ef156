#!/usr/bin/env bash
# The cluster store benchmark (see store/src/bin/berth-store-bench.rs): Berth's embedded store
# and Debian's etcd (one member on loopback, etcd's default settings, its own temp dir, killed
# at the end) through the same Store trait, interleaved, and prints the table.
#   sudo hack/bench-store.sh            full run (1,000,000 updates for the file-size figure)
#   sudo hack/bench-store.sh --quick    fewer iterations, 100,000 updates
#   sudo hack/bench-store.sh --updates N
# Temp dirs go under $TMPDIR (default /tmp): point it at the disk you want to measure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/bench-store.sh: run as root" >&2; exit 1; }
hack/deps.sh
cargo build --release -p berth-store --bin berth-store-bench
target/release/berth-store-bench "$@"
