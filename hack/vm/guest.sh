#!/bin/bash
# hack/vm/guest.sh: the VM suite's side inside the guest (systemd, cgroup v2). hack/vm/test.sh
# copies it into the share with what it needs and boots the guest, whose runner starts it as
# root from /mnt/berth:
#   bin/berth, bin/berth-cni   installed in /usr/local/bin (berth-cni also in /opt/cni/bin)
#   systemd/*.service          the project's unit files, installed in /etc/systemd/system
#   tests/*                    integration test binaries, run one after the other
#   src/                       the integration crate's fixtures, where the binaries look for them
#   env                        settings from the host (registry ports, source dir, test args)
# Prints each test binary's output and a summary; exits 0 only when every binary passed.
set -u
cd /mnt/berth || exit 1
# shellcheck source=/dev/null
. ./env
t0=$SECONDS
say() { echo "guest.sh: $*"; }

say "$(uname -r), systemd $(systemctl --version | head -n1 | cut -d' ' -f2), $(stat -fc %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"

# The host's test registries, at the same addresses as on the host: 127.0.0.1:PORT here goes
# to 10.0.2.100:PORT, which qemu carries to 127.0.0.1:PORT on the host.
for port in $BERTH_VM_FORWARD; do
  socat "TCP4-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "TCP4:10.0.2.100:$port" &
done

install -m 0755 bin/berth bin/berth-cni /usr/local/bin/
install -D -m 0755 bin/berth-cni /opt/cni/bin/berth-cni
install -m 0644 systemd/*.service /etc/systemd/system/
systemctl daemon-reload

# The fixtures where the test binaries were built to find them (CARGO_MANIFEST_DIR).
if [ -n "${BERTH_SRC_DIR:-}" ] && [ -d src/integration ]; then
  mkdir -p "$BERTH_SRC_DIR"
  ln -sfn /mnt/berth/src/integration "$BERTH_SRC_DIR/integration"
fi

export BERTH_BIN=/usr/local/bin/berth BERTH_VM_GUEST=1
export BERTH_TEST_REGISTRY=127.0.0.1:5000 BERTH_TEST_AUTH_REGISTRY=127.0.0.1:5001
export BERTH_TEST_IMAGES_ENV=/mnt/berth/images.env RUST_BACKTRACE=1
# Scratch space on the guest's own disk (test directories under /tmp).
mkdir -p /var/tmp/berth-vm && export TMPDIR=/var/tmp/berth-vm

for port in $BERTH_VM_FORWARD; do
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break
    sleep 0.1
  done
done
if ! curl -s -o /dev/null "http://127.0.0.1:5000/v2/"; then
  say "the test registry does not answer on 127.0.0.1:5000 (forwarded to the host's): is it running there?"
  exit 1
fi

failed=()
passed=()
for t in $BERTH_VM_TESTS; do
  name=${t%%:*}
  args=${t#*:}
  [ "$args" = "$t" ] && args=
  args=${args//,/ }
  bin=$(ls tests/"$name"-* 2> /dev/null | head -n1)
  if [ -z "$bin" ]; then
    say "no test binary for $name"
    failed+=("$name")
    continue
  fi
  say "---- $name $args"
  s=$SECONDS
  # shellcheck disable=SC2086
  if "./$bin" $args --test-threads=1; then
    passed+=("$name ($((SECONDS - s))s)")
  else
    failed+=("$name ($((SECONDS - s))s)")
    say "---- journal of the berth units after $name fails:"
    journalctl --no-pager -o short-monotonic -u berth-runtime.service -u berth-node.service | tail -n 80
  fi
done

# The whole journal of the run, for the host to look at.
journalctl --no-pager -o short-monotonic > journal.txt 2>&1 || true

# Nothing of the tests may stay behind.
leftover=$(find /sys/fs/cgroup \( -name 'berth*' -o -name '*kubepods*' \) ! -name berth-vm-runner.service 2> /dev/null | head -n 20)
if [ -n "$leftover" ]; then
  say "cgroups left behind:"
  echo "$leftover"
  failed+=("leftover cgroups")
fi

say "passed: ${passed[*]:-none}"
say "failed: ${failed[*]:-none}"
say "took $((SECONDS - t0))s"
[ ${#failed[@]} -eq 0 ]
