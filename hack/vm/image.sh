#!/usr/bin/env bash
# hack/vm/image.sh: the guest image of the VM test tier, built once and cached.
#
# A Debian bookworm guest made only from Debian packages: systemd as PID 1 on the unified
# cgroup v2 hierarchy, Debian's own kernel (installed inside the guest, so its modules are
# there too), a 9p share mounted at /mnt/berth and a runner unit that executes
# /mnt/berth/guest.sh once the system is up, writes its output and exit code back to the
# share and powers the guest off. hack/vm/boot.sh starts it.
#
# The image lives in $BERTH_VM_CACHE/<hash of this file> (default /var/cache/berth-vm): any
# change to this script builds a new one, an unchanged script reuses it. Prints that directory.
# Needs root. No loop devices and no mounts on the host: debootstrap into a directory, then
# mkfs.ext4 -d makes the filesystem image from it.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "image.sh: run as root" >&2; exit 1; }
self=$(readlink -f "$0")
cache=${BERTH_VM_CACHE:-/var/cache/berth-vm}
hash=$(sha256sum "$self" | cut -c1-16)
out=$cache/$hash
suite=bookworm
# What the guest gets: systemd and its cgroup v2 tools, the kernel, socat for the registry
# forward, curl and util-linux for the tests (the kubelet API, nsenter, findmnt).
packages=systemd,systemd-sysv,udev,dbus,kmod,iproute2,procps,util-linux,linux-image-amd64,initramfs-tools,zstd,socat,curl

if [ -f "$out/ready" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/ready" ]; then # built by someone else while we waited
  echo "$out"
  exit 0
fi

for p in debootstrap mkfs.ext4; do
  command -v "$p" >/dev/null || { echo "image.sh: $p missing (hack/deps.sh installs it)" >&2; exit 1; }
done
# The Debian mirror apt is configured with, so no host name is written here.
mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' "Release: $suite" 2>/dev/null | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 2>/dev/null | grep -v -e security -e backports | head -n1 || true)
fi
[ -n "$mirror" ] || { echo "image.sh: no Debian $suite source configured for apt (apt-get update first)" >&2; exit 1; }

work=$(mktemp -d "$cache/build.XXXXXX")
root=$work/root
# debootstrap mounts /proc and /sys in the target while it works; whatever happens, nothing of
# it stays mounted and the half-made tree goes.
cleanup() {
  local m
  for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

t0=$SECONDS
echo "image.sh: debootstrap $suite from $mirror into $work (log: $work/build.log)" >&2
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" > "$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  cp "$work/build.log" "$cache/last-failed-build.log" 2>/dev/null || true
  exit 1
fi

# ---- the guest's configuration ------------------------------------------------------------
echo berth-vm > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tberth-vm\n' > "$root/etc/hosts"
cat > "$root/etc/fstab" <<'EOF'
/dev/vda  /           ext4  rw,errors=remount-ro                                0 1
berth     /mnt/berth  9p    trans=virtio,version=9p2000.L,msize=524288,nofail  0 0
EOF
mkdir -p "$root/mnt/berth"
chroot "$root" passwd -d root > /dev/null # an interactive boot logs in as root without a password

# The runner: once the system is up it runs the share's guest.sh, as root, from the share.
cat > "$root/usr/local/sbin/berth-vm-runner" <<'EOF'
#!/bin/bash
# Runs /mnt/berth/guest.sh; its output goes to /mnt/berth/guest.log (and is echoed on the
# console), its exit code to /mnt/berth/guest.rc. The unit powers the guest off afterwards.
cd /mnt/berth || exit 1
echo "berth-vm-runner: start $(cut -d' ' -f1 /proc/uptime)s after boot" > /dev/console
# qemu's user-mode network: the guest is 10.0.2.15, the host's forwarded ports answer on
# 10.0.2.100; no default route, so nothing else is reachable.
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
if [ -n "$nic" ]; then
  ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic"
fi
: > ./guest.log
tail -n +1 -F ./guest.log > /dev/console 2> /dev/null &
tailer=$!
# A file, not a pipe: what the script leaves running in the background cannot hold it up.
bash ./guest.sh < /dev/null > ./guest.log 2>&1
rc=$?
sleep 1
kill "$tailer" 2> /dev/null
echo "$rc" > ./guest.rc.tmp && mv ./guest.rc.tmp ./guest.rc
sync
echo "berth-vm-runner: done, exit code $rc, $(cut -d' ' -f1 /proc/uptime)s after boot" > /dev/console
EOF
chmod 0755 "$root/usr/local/sbin/berth-vm-runner"
cat > "$root/etc/systemd/system/berth-vm-runner.service" <<'EOF'
[Unit]
Description=Berth VM tests from the host's share
After=multi-user.target
RequiresMountsFor=/mnt/berth
ConditionPathExists=/mnt/berth/guest.sh
# Both belong in [Unit]: the guest goes down whatever the script did.
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/berth-vm-runner
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable berth-vm-runner.service > /dev/null 2>&1
# Timers and jobs a throw-away guest never needs.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
  fstrim.timer systemd-tmpfiles-clean.timer man-db.timer > /dev/null 2>&1 || true
# The journal stays in memory (the disk is thrown away anyway).
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/berth-vm.conf"

# The initrd needs the share's and the disk's drivers.
printf '%s\n' 9p 9pnet_virtio virtio_blk virtio_pci virtio_net >> "$root/etc/initramfs-tools/modules"
kver=$(ls "$root/lib/modules" | sort -V | tail -n1)
chroot "$root" update-initramfs -u -k "$kver" >> "$work/build.log" 2>&1
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"

# Smaller: documentation, locales, package caches, /boot, module trees of hardware a VM lacks.
rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/boot/*
k=$root/lib/modules/$kver/kernel
rm -rf "$k"/drivers/{gpu,media,infiniband,staging,iio,hid,usb,bluetooth,isdn,net/wireless,net/ethernet,scsi,mtd,hwmon,thunderbolt,video} \
  "$k"/sound "$k"/net/{wireless,mac80211,bluetooth}
chroot "$root" depmod "$kver"

# (-d lists every file it copies on stdout even with -q: stdout carries only the result here)
mkfs.ext4 -q -F -L berthvm -d "$root" "$work/rootfs.img" 3G >> "$work/build.log"
echo "$kver" > "$work/kernel"
printf 'packages=%s\nmirror=%s\nbuilt=%s\n' "$packages" "$mirror" "$(date -u +%FT%TZ)" > "$work/about"
rm -rf "$root"

# In place in one step; older images (other hashes) go.
for d in "$cache"/*/; do
  d=${d%/}
  [ "$d" = "$out" ] || [ "$d" = "$work" ] || rm -rf "$d"
done
rm -rf "$out"
mv "$work" "$out"
touch "$out/ready"
echo "image.sh: built $out in $((SECONDS - t0)) s (kernel $kver, $(du -h "$out/rootfs.img" | cut -f1) on disk)" >&2
echo "$out"
