#!/usr/bin/env bash
# The pod startup SLO on a real node (issue 19): starts `berth server` WITH its own node (the
# apiserver, controller manager, scheduler and kubelet in one process; embedded store) on private
# dirs under a temp dir (the run dir on a tmpfs), a private CNI conf dir and bridge (berth-cni from next to the binary, no
# masquerade rules), a pod CIDR of 10.88.X.0/24 that no interface uses, kubelet API and
# listener on 127.0.0.1 ports of its own, and a private pod cgroup root, so the host is left as
# it was. hack/bench-pod-startup.py then, through the HTTPS API:
#   warm-up              waits for the node to be Ready and runs one pod of the image
#                        (127.0.0.1:5000/berth/busybox:latest), deleted again: image pulls are
#                        not in the cases, as the upstream SLO excludes them
#   startup N            for each N of --replicas: a Deployment of N replicas (busybox sleeping,
#                        trapping TERM; requests cpu 1m, memory 8Mi; imagePullPolicy
#                        IfNotPresent) POSTed, its pods seen through a watch opened before it.
#                        Seconds from the POST until all N pods exist, are bound, are Running,
#                        are Ready; the per-pod startup latency (first seen -> seen Running by the
#                        watch) p50 / p90 / p99 / max (the SLO: p99 <= 5 s; the target: <= 1 s
#                        for 100 pods); the server's CPU seconds (utime+stime) from the POST
#                        until all are Ready and its RSS then; then the Deployment deleted:
#                        seconds until all its pods are gone and the server's CPU for that
# The table goes to stdout, progress to stderr. It must run as root (pods are real), uses the
# local test registry (hack/registry.sh; started and stopped again when it was not running;
# hack/images.sh pushes the images when the registry lacks berth/busybox:latest) and checks at
# the end that the node left nothing behind (veths, mounts, processes, pod cgroups): it fails if so.
#   hack/bench-pod-startup.sh                                       release build, 100 replicas
#   BERTH_BIN=target/debug/berth hack/bench-pod-startup.sh --replicas "10 30" --timeout 600
# --timeout S is each wait's limit (default 300). Temp dirs go under $TMPDIR (default /tmp). The
# node runs with --eviction-hard memory.available<100Mi only and image garbage collection off
# (--image-gc-high-threshold 100): a build machine's disk is often past the default thresholds,
# and the node would evict the pods or remove the warmed-up image.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "hack/bench-pod-startup.sh: run as root" >&2; exit 1; }
if [ -z "${BERTH_BIN:-}" ]; then
    hack/build.sh --release
    BERTH_BIN=target/release/berth
fi
BERTH_BIN=$(realpath "$BERTH_BIN")
BIN_DIR=$(dirname "$BERTH_BIN")
[ -x "$BIN_DIR/berth-cni" ] || { echo "hack/bench-pod-startup.sh: no berth-cni next to $BERTH_BIN" >&2; exit 1; }
replicas="100"
pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --replicas) replicas=$2; shift 2 ;;
        *) pass+=("$1"); shift ;;
    esac
done

log() { echo "hack/bench-pod-startup.sh: $*" >&2; }
T=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-startup.XXXXXX")
BRIDGE=berthbps$(( $$ % 10000000 ))
CG=berth-bench-$$
# the service proxy's nftables table: one of this run's own, deleted at the end (a node leaves
# its table when it stops, for connections to survive a restart)
PROXY_TABLE=berth-proxy-bench-$$
NODE=berth-bench
PID=""
started_registry=0

# cleanup (on exit, also on failure): when the benchmark failed, the end of the server's log;
# the server stopped by pid; what its pods may have left killed and removed: processes in the
# pod cgroup root, the bridge, mounts under the temp dir, the cgroups; the temp dir; the
# registry, when this script started it.
cleanup() {
    local rc=$?
    set +e  # every step runs, whatever the one before did
    if [ "$rc" -ne 0 ] && [ -f "$T/server.log" ]; then
        echo "--- the end of $T/server.log" >&2; tail -n 40 "$T/server.log" >&2
    fi
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill "$PID"; wait "$PID" 2>/dev/null; fi
    local c p left=0
    for c in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
        [ -d "$c" ] || continue
        for p in $(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do kill -9 "$p" 2>/dev/null && left=$((left + 1)); done
    done
    [ "$left" = 0 ] || { log "killed $left processes left in the pod cgroups"; sleep 1; }
    ip link del "$BRIDGE" 2>/dev/null
    nft delete table ip "$PROXY_TABLE" 2>/dev/null
    nft delete table ip6 "$PROXY_TABLE" 2>/dev/null
    findmnt -rn -o TARGET | grep "^$T" | sort -r | while read -r m; do umount -l "$m"; done
    for c in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "$T"
    if [ "$started_registry" = 1 ]; then hack/registry.sh stop; fi
    return "$rc"
}
trap cleanup EXIT

if ! hack/registry.sh status >/dev/null; then hack/registry.sh start >&2; started_registry=1; fi
# hack/images.sh rebuilds hack/build (a test run may be reading it): only when the image is missing
if ! curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' http://127.0.0.1:5000/v2/berth/busybox/manifests/latest; then
    hack/images.sh >/dev/null
fi

# a /24 of 10.88.0.0/16 that no address or route on this host is in
x=$(( 100 + $$ % 150 ))
for _ in $(seq 150); do
    [ -z "$(ip -4 -o addr show to "10.88.$x.0/24")$(ip -4 route show "10.88.$x.0/24")" ] && break
    x=$(( x >= 249 ? 100 : x + 1 ))
done
CIDR=10.88.$x.0/24

mkdir -p "$T/manifests" "$T/run"
# the run dir on a tmpfs, as /run is on the hosts Berth runs on (systemd mounts it so; containerd
# keeps its state there too); the data dir stays on the disk (unmounted by cleanup)
mount -t tmpfs -o mode=0755 berth-bench-run "$T/run"
cat > "$T/config.toml" <<TOML
[network]
conf_dir = "$T/net.d"
bin_dirs = ["$BIN_DIR"]
bridge = "$BRIDGE"
masquerade = false
TOML

ulimit -n 65536 2>/dev/null || true
"$BERTH_BIN" server --config "$T/config.toml" --data-dir "$T/data" --run-dir "$T/run" --listen 127.0.0.1:0 \
    --pod-cidr "$CIDR" --kubelet-address 127.0.0.1 --kubelet-port 0 --pod-manifest-path "$T/manifests" \
    --cgroup-root "/$CG" --node-name "$NODE" --eviction-hard 'memory.available<100Mi' --image-gc-high-threshold 100 \
    --default-local-storage-path "$T/storage" --proxy-table "$PROXY_TABLE" --proxy-healthz-bind-address "" >"$T/server.log" 2>&1 &
PID=$!
log "berth server (pid $PID, $BERTH_BIN) on $T, bridge $BRIDGE, pod CIDR $CIDR"
url=""
for _ in $(seq 1200); do
    if [ -f "$T/data/server/admin.kubeconfig" ]; then
        url=$(sed -n 's/^ *server: //p' "$T/data/server/admin.kubeconfig")
        if [ -n "$url" ] && curl -sf --cacert "$T/data/server/ca.crt" "$url/readyz" >/dev/null 2>&1; then break; fi
        url=""
    fi
    kill -0 "$PID" 2>/dev/null || { log "the server exited"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { log "the server did not get ready in 120 s"; exit 1; }

python3 hack/bench-pod-startup.py "$T/data/server" "$url" "$PID" --node "$NODE" --replicas "$replicas" "${pass[@]}"

# The server's warnings and errors while it ran (not those of its shutdown), on stderr.
lines=$(wc -l < "$T/server.log")
n=$(head -n "$lines" "$T/server.log" | grep -cE '^\S+ +(ERROR|WARN) ' || true)
if [ "$n" != 0 ]; then
    log "$n warnings and errors in the server's log; the last ones:"
    head -n "$lines" "$T/server.log" | grep -E '^\S+ +(ERROR|WARN) ' | tail -n 10 | cut -c1-400 >&2
fi
# Stop the server and check that its pods left nothing (the cases deleted them all): what is
# left fails the script (the cleanup removes it still).
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
ok=1
left=$(ip -o link show master "$BRIDGE" 2>/dev/null | grep -c veth || true)
[ "$left" = 0 ] || { log "FAIL: $left veths left on $BRIDGE"; ok=0; }
[ -z "$(findmnt -rn -o TARGET | grep "^$T" || true)" ] || { log "FAIL: mounts left under $T: $(findmnt -rn -o TARGET | grep "^$T" | head -5)"; ok=0; }
for c in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
    [ -d "$c" ] || continue
    procs=$(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | wc -l)
    [ "$procs" = 0 ] || { log "FAIL: $procs processes left in $c"; ok=0; }
    pods=$(find "$c" -mindepth 1 -type d -name 'pod*' | head -5)
    [ -z "$pods" ] || { log "FAIL: pod cgroups left: $pods"; ok=0; }
done
if pgrep -f "$T" >/dev/null; then log "FAIL: processes left: $(pgrep -af "$T")"; ok=0; fi
[ "$ok" = 1 ]
