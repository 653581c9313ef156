#!/usr/bin/env bash
# Build and run Berth on this machine: install the Debian packages the build needs, build a
# release binary, and run `berth runtime` in the foreground (Ctrl-C stops it).
# Extra arguments go to `berth runtime`, e.g. --data-dir /tmp/berth-data. Pods get addresses
# from BERTH_POD_CIDR (default 10.244.0.0/24) through berth-cni when /etc/cni/net.d is empty.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/run.sh: run as root (sudo hack/run.sh)" >&2; exit 1; }
hack/deps.sh
cargo build --release --bin berth --bin berth-cni
install -m 0755 target/release/berth /usr/local/bin/berth
# The CNI plugin goes where CNI runtimes look for plugins (Berth, containerd, CRI-O).
install -D -m 0755 target/release/berth-cni /opt/cni/bin/berth-cni
exec /usr/local/bin/berth runtime --pod-cidr "${BERTH_POD_CIDR:-10.244.0.0/24}" "$@"
