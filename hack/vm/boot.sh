#!/usr/bin/env bash
# hack/vm/boot.sh IMAGE_DIR SHARE_DIR: boot the test guest (hack/vm/image.sh) once.
#
# SHARE_DIR is the guest's /mnt/berth (9p). The guest runs SHARE_DIR/guest.sh as root once the
# system is up, writes its output to guest.log and its exit code to guest.rc there, and powers
# off. This script waits for that (at most BERTH_VM_TIMEOUT seconds, default 1200), prints the
# guest's output and exits with the guest script's exit code: 124 when the guest ran out of
# time, 125 when it stopped without an exit code. The qemu it started is gone when it returns,
# whatever happened (timeout, Ctrl-C, a failure of its own); the root disk is opened with
# snapshot=on, so the image is never written and every boot starts from the same state.
#
# Network: qemu's user-mode network with restrict=on (the guest reaches neither the host nor
# anything beyond it), except the ports in BERTH_VM_FORWARD (default "5000 5001"): the guest's
# connections to 10.0.2.100:PORT are carried to 127.0.0.1:PORT on the host (a socat per
# connection), which is where the test registries listen.
#
# Env: BERTH_VM_TIMEOUT  BERTH_VM_MEM (MiB, 3072)  BERTH_VM_CPUS (2)
#      BERTH_VM_ACCEL=kvm|tcg (default: kvm only on hardware virtualization, else tcg)
#      BERTH_VM_CONSOLE=1 (stream the serial console to stderr)
set -euo pipefail
img=${1:?usage: boot.sh IMAGE_DIR SHARE_DIR}
share=${2:?usage: boot.sh IMAGE_DIR SHARE_DIR}
img=$(cd "$img" && pwd)
share=$(cd "$share" && pwd)
for f in rootfs.img vmlinuz initrd.img; do
  [ -f "$img/$f" ] || { echo "boot.sh: $img/$f missing (hack/vm/image.sh builds it)" >&2; exit 2; }
done
[ -f "$share/guest.sh" ] || { echo "boot.sh: $share/guest.sh missing" >&2; exit 2; }
command -v qemu-system-x86_64 > /dev/null || { echo "boot.sh: qemu-system-x86_64 missing (hack/deps.sh installs it)" >&2; exit 2; }
command -v socat > /dev/null || { echo "boot.sh: socat missing (hack/deps.sh installs it)" >&2; exit 2; }

# KVM only where the CPU virtualizes for real. /dev/kvm can be kvm_pvm (the host itself a PVM
# guest): that runs only PVM-built guest kernels, and Debian's kernel crawls under it.
accel=${BERTH_VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; fi
fi
case $accel in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  tcg) accel_args=(-accel tcg,thread=multi,tb-size=512 -cpu max) ;;
  *) echo "boot.sh: BERTH_VM_ACCEL must be kvm or tcg" >&2; exit 2 ;;
esac

nic=user,model=virtio-net-pci,restrict=on
for port in ${BERTH_VM_FORWARD-5000 5001}; do
  nic+=",guestfwd=tcp:10.0.2.100:$port-cmd:socat STDIO TCP4:127.0.0.1:$port"
done

rm -f "$share"/{guest.log,guest.rc,console.log}
timeout=${BERTH_VM_TIMEOUT:-1200}
qemu=(qemu-system-x86_64 "${accel_args[@]}" -m "${BERTH_VM_MEM:-3072}" -smp "${BERTH_VM_CPUS:-2}"
  -nodefaults -no-reboot -display none -serial "file:$share/console.log"
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img"
  -append "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 fsck.mode=skip panic=-1 loglevel=4"
  -drive "file=$img/rootfs.img,format=raw,if=virtio,snapshot=on"
  -virtfs "local,path=$share,mount_tag=berth,security_model=none"
  -device virtio-rng-pci -nic "$nic")

qpid=
tail_pid=
stop_qemu() {
  # Only the qemu this script started, by its pid.
  if [ -n "$qpid" ] && kill -0 "$qpid" 2> /dev/null; then
    kill -TERM "$qpid" 2> /dev/null || true
    for _ in $(seq 50); do kill -0 "$qpid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$qpid" 2> /dev/null || true
    wait "$qpid" 2> /dev/null || true
  fi
  qpid=
  if [ -n "$tail_pid" ]; then kill "$tail_pid" 2> /dev/null || true; wait "$tail_pid" 2> /dev/null || true; tail_pid=; fi
}
trap stop_qemu EXIT
trap 'stop_qemu; exit 130' INT TERM

echo "boot.sh: booting ($accel, ${BERTH_VM_CPUS:-2} CPUs, ${BERTH_VM_MEM:-3072} MiB, at most ${timeout}s)" >&2
start=$SECONDS
"${qemu[@]}" < /dev/null &
qpid=$!
if [ "${BERTH_VM_CONSOLE:-0}" = 1 ]; then
  touch "$share/console.log"
  tail -n +1 -f "$share/console.log" >&2 &
  tail_pid=$!
fi
timed_out=0
while kill -0 "$qpid" 2> /dev/null; do
  if [ $((SECONDS - start)) -ge "$timeout" ]; then timed_out=1; break; fi
  sleep 1
done
stop_qemu
elapsed=$((SECONDS - start))

[ -f "$share/guest.log" ] && cat "$share/guest.log"
if [ -f "$share/guest.rc" ]; then
  rc=$(cat "$share/guest.rc")
  echo "boot.sh: guest finished with exit code $rc after ${elapsed}s" >&2
elif [ "$timed_out" = 1 ]; then
  echo "boot.sh: the guest did not finish within ${timeout}s; last console lines:" >&2
  tail -n 30 "$share/console.log" >&2 || true
  rc=124
else
  echo "boot.sh: the guest stopped without an exit code after ${elapsed}s; last console lines:" >&2
  tail -n 30 "$share/console.log" >&2 || true
  rc=125
fi
exit "$rc"
