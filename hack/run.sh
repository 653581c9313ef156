#!/usr/bin/env bash
# Build and run Berth on this machine: install the Debian packages the build needs, build a
# release binary, and run `berth runtime` in the foreground (Ctrl-C stops it).
# Extra arguments go to `berth runtime`, e.g. --data-dir /tmp/berth-data.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/run.sh: run as root (sudo hack/run.sh)" >&2; exit 1; }
hack/deps.sh
cargo build --release --bin berth
install -m 0755 target/release/berth /usr/local/bin/berth
exec /usr/local/bin/berth runtime "$@"
