#!/usr/bin/env bash
# Build and run Berth on this machine: install the Debian packages the build needs, build the
# release binaries, install them (berth in /usr/local/bin, berth-cni in /opt/cni/bin where CNI
# runtimes look for plugins), and run `berth server` in the foreground (Ctrl-C stops it): a
# single-node cluster, the Kubernetes API on :6443 and this machine as its node. kubectl
# reaches it with <data-dir>/server/admin.kubeconfig (default /var/lib/berth/server/...).
# Extra arguments go to `berth server`, e.g. --data-dir /tmp/berth-data or --config FILE.
# Pods get addresses from BERTH_POD_CIDR (default 10.244.0.0/24) through berth-cni when the
# CNI conf dir (/etc/cni/net.d) is empty.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/run.sh: run as root (sudo hack/run.sh)" >&2; exit 1; }
hack/deps.sh
hack/build.sh --release
install -D -m 0755 target/release/berth /usr/local/bin/berth
install -D -m 0755 target/release/berth-cni /opt/cni/bin/berth-cni
mkdir -p /etc/berth
exec /usr/local/bin/berth server --pod-cidr "${BERTH_POD_CIDR:-10.244.0.0/24}" "$@"
