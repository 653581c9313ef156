#!/usr/bin/env bash
# Install the Debian packages Berth's build and tests need (idempotent).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "hack/deps.sh: run as root" >&2; exit 1; }
PKGS=(build-essential pkg-config protobuf-compiler ca-certificates curl jq iproute2 util-linux
      umoci skopeo docker-registry busybox-static apache2-utils zstd openssl libseccomp-dev containerd runc
      containernetworking-plugins iptables nftables etcd-server libprotobuf-dev
      qemu-system-x86 debootstrap e2fsprogs socat systemd)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "hack/deps.sh: cargo not found: install Rust first (https://rustup.rs), then rerun" >&2
  exit 1
fi
