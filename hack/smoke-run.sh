#!/usr/bin/env bash
# CI's check of the README's run command: `hack/run.sh` exactly as the README gives it (it
# installs packages, builds and installs the release binaries and runs `berth server` with a
# pod CIDR and the default CNI config it writes), but on private data/run dirs, a private CNI
# conf dir and bridge, no masquerade rules, ports of its own and a private pod cgroup root, so
# the host is left as it was. With Debian's CNI plugins installed it runs a pod with kubectl
# (the node Ready, the pod bound, Running with an address of the CIDR, deleted), then one
# through the CRI socket (berth-smoke: address and log), stops the server and checks that
# nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/smoke-run.sh: run as root" >&2; exit 1; }
T=$(mktemp -d /tmp/berth-smoke.XXXXXX)
BRIDGE=berthsmk$(( $$ % 10000000 ))
# the service proxy's nftables table: the run's own, deleted at the end (a node leaves its table
# when it stops, for connections to survive a restart)
PROXY_TABLE=berth-proxy-smoke-$$
CIDR=10.88.77.0/24
PID=""
started_registry=0
fail() { echo "hack/smoke-run.sh: FAIL: $*" >&2; [ -f "$T/run.log" ] && tail -n 50 "$T/run.log" >&2; exit 1; }
cleanup() {
  set +e  # every step runs, whatever the one before did
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill "$PID"; wait "$PID" 2>/dev/null || true; fi
  ip link del "$BRIDGE" 2>/dev/null || true
  nft delete table ip "$PROXY_TABLE" 2>/dev/null || true
  nft delete table ip6 "$PROXY_TABLE" 2>/dev/null || true
  findmnt -rn -o TARGET | grep "^$T" | sort -r | while read -r m; do umount -l "$m"; done
  for c in /sys/fs/cgroup/*/"berth-smoke-$$" /sys/fs/cgroup/"berth-smoke-$$"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "$T"
  if [ "$started_registry" = 1 ]; then hack/registry.sh stop; fi
}
trap cleanup EXIT

if ! hack/registry.sh status >/dev/null; then hack/registry.sh start; started_registry=1; fi
hack/images.sh >/dev/null
cat > "$T/config.toml" <<TOML
[network]
conf_dir = "$T/net.d"
bridge = "$BRIDGE"
masquerade = false
TOML

# The README's run command, with private directories.
BERTH_POD_CIDR=$CIDR hack/run.sh --config "$T/config.toml" --data-dir "$T/data" --run-dir "$T/run" \
  --listen 127.0.0.1:0 --kubelet-address 127.0.0.1 --kubelet-port 0 --pod-manifest-path "$T/manifests" \
  --cgroup-root "/berth-smoke-$$" --node-name berth-smoke --proxy-table "$PROXY_TABLE" --proxy-healthz-bind-address "" > "$T/run.log" 2>&1 &
PID=$!
echo "hack/smoke-run.sh: hack/run.sh started (pid $PID), waiting for the socket (the release build comes first)"
SECONDS=0
until [ -S "$T/run/berth.sock" ]; do
  kill -0 "$PID" 2>/dev/null || fail "hack/run.sh exited before serving"
  [ $SECONDS -lt 3600 ] || fail "no socket after an hour"
  sleep 1
done
echo "hack/smoke-run.sh: serving after ${SECONDS} s"
[ "$(readlink "/proc/$PID/exe")" = /usr/local/bin/berth ] || fail "pid $PID is not the installed berth"
[ -x /opt/cni/bin/berth-cni ] || fail "berth-cni was not installed"

# kubectl, as the README has it, against the single-node cluster.
KC="$T/data/server/admin.kubeconfig"
k() { kubectl --kubeconfig "$KC" --cache-dir "$T/kube-cache" "$@"; }
SECONDS=0
until [ -f "$KC" ] && k wait --for=condition=Ready node/berth-smoke --timeout=5s >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || fail "berth server exited"
  [ $SECONDS -lt 120 ] || fail "node berth-smoke not Ready after 120 s: $(k get nodes -o wide 2>&1)"
  sleep 1
done
k run berth-smoke --image=127.0.0.1:5000/berth/busybox:latest --restart=Never -- sh -c 'echo hello from berth; exec sleep 3600' >/dev/null ||
  fail "kubectl run"
k wait --for=condition=Ready pod/berth-smoke --timeout=120s >/dev/null || fail "pod not Ready: $(k describe pod berth-smoke 2>&1)"
IP=$(k get pod berth-smoke -o jsonpath='{.status.podIP}')
NODE=$(k get pod berth-smoke -o jsonpath='{.spec.nodeName}')
case "$IP" in 10.88.77.*) ;; *) fail "pod address $IP is not in $CIDR" ;; esac
[ "$NODE" = berth-smoke ] || fail "pod bound to '$NODE'"
echo "hack/smoke-run.sh: kubectl: pod berth-smoke Running on node $NODE at $IP"
k delete pod berth-smoke --grace-period=1 --timeout=60s >/dev/null || fail "kubectl delete"

target/release/berth-smoke "$T/run/berth.sock" 127.0.0.1:5000/berth/busybox:latest "$CIDR" | tee "$T/smoke.out" || fail "berth-smoke"
POD=$(sed -n 's/^pod \([0-9a-f]*\) has address.*/\1/p' "$T/smoke.out")
[ -n "$POD" ] || fail "berth-smoke printed no pod ID"
grep -q '"cniVersion": "1.0.0"' "$T/net.d/10-berth.conflist" || fail "default CNI config: $(cat "$T/net.d/10-berth.conflist")"

kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
left=$(ip -o link show master "$BRIDGE" 2>/dev/null | grep -c veth || true)
[ "$left" = 0 ] || fail "$left veths left on $BRIDGE"
[ -z "$(findmnt -rn -o TARGET | grep "^$T" || true)" ] || fail "mounts left under $T"
for d in /sys/fs/cgroup/*/berth/"$POD" /sys/fs/cgroup/berth/"$POD" /sys/fs/cgroup/*/"berth-smoke-$$"/*/* /sys/fs/cgroup/"berth-smoke-$$"/*/*; do
  [ -d "$d" ] && fail "a pod's cgroup is left: $d"
done
pgrep -f "$T" >/dev/null && fail "processes left: $(pgrep -af "$T")"
ls "$T/data/network/ipam/berth" 2>/dev/null | grep -q '^10\.' && fail "addresses left: $(ls "$T/data/network/ipam/berth")"
echo "hack/smoke-run.sh: ok"
