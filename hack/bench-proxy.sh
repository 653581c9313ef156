#!/usr/bin/env bash
# The service proxy's benchmark (issue 20). Runs `berth server` (its node agent with the proxy)
# in a network namespace of its own, so the proxy's nftables rules land in that namespace and
# nothing on the host changes, and through its HTTPS API (hack/bench-proxy.py):
#   - creates N Services with an EndpointSlice of E endpoints each (objects only: fake pod IPs,
#     no pods) and waits until all are programmed;
#   - makes C changes one after the other (a Service's ports, an EndpointSlice's endpoint) and
#     times each from the write until the proxy logged the transaction with that object's new
#     resourceVersion as applied (the proxy logs after `nft` returned): p50, p99, max;
#   - counts chains, rules and service-ips elements in the table;
#   - restarts the server and reads the first full sync's time from its log (a full resync
#     converging the existing table of N Services);
#   - the server's RSS, and that of a second server with --disable-kube-proxy given the same
#     objects: the difference is the proxy's memory.
#   hack/bench-proxy.sh                                     release build, 1000 x 10, 100 changes
#   BERTH_BIN=target/debug/berth hack/bench-proxy.sh --services 100 --changes 20
# Run as root. Temp dirs go under $TMPDIR (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench-proxy.sh: run as root (a network namespace, nftables)" >&2
    exit 1
fi
if [ -z "${BERTH_BIN:-}" ]; then
    hack/build.sh --release
    BERTH_BIN=target/release/berth
fi
services=1000
endpoints=10
changes=100
while [ $# -gt 0 ]; do
    case "$1" in
        --services) services=$2; shift 2 ;;
        --endpoints) endpoints=$2; shift 2 ;;
        --changes) changes=$2; shift 2 ;;
        *) echo "bench-proxy.sh: unknown flag $1" >&2; exit 2 ;;
    esac
done

netns=berth-bench-proxy-$$
cgroot=/berth-bench-proxy-$$
pids=()
dirs=()

cleanup() {
    local rc=$? p d
    if [ "$rc" -ne 0 ]; then
        for d in "${dirs[@]}"; do
            if [ -f "$d/server.log" ]; then echo "--- the end of $d/server.log" >&2; tail -n 20 "$d/server.log" >&2; fi
        done
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ip netns del "$netns" 2>/dev/null || true
    for d in /sys/fs/cgroup/*"$cgroot"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rm -rf "${dirs[@]}"
}
trap cleanup EXIT

ip netns add "$netns"
ip -n "$netns" link set lo up

# start_server DIR [FLAGS...]: the server on DIR (its log DIR/server.log, appended) inside the
# namespace; sets $pid and $url once it answers /readyz.
start_server() {
    local dir=$1; shift
    mkdir -p "$dir/manifests"
    if [ ! -f "$dir/config.toml" ]; then
        printf '[network]\nconf_dir = "%s/net.d"\nbin_dirs = ["%s"]\nbridge = "bbp%s"\nmasquerade = false\npod_cidr = "10.244.0.0/24"\n' \
            "$dir" "$(dirname "$(readlink -f "$BERTH_BIN")")" "$(( $$ % 100000 ))" > "$dir/config.toml"
    fi
    RUST_LOG=info,berth::proxy=debug ip netns exec "$netns" "$BERTH_BIN" server --config "$dir/config.toml" --data-dir "$dir/data" \
        --run-dir "$dir/run" --listen 127.0.0.1:0 --node-name bench --kubelet-port 0 --kubelet-address 127.0.0.1 \
        --pod-manifest-path "$dir/manifests" --cgroup-root "$cgroot" --eviction-hard 'memory.available<100Mi' "$@" \
        >/dev/null 2>>"$dir/server.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 600); do
        if [ -f "$dir/data/server/admin.kubeconfig" ]; then
            url=$(sed -n 's/^ *server: //p' "$dir/data/server/admin.kubeconfig")
            if [ -n "$url" ] && ip netns exec "$netns" curl -sf --cacert "$dir/data/server/ca.crt" "$url/readyz" >/dev/null 2>&1; then return 0; fi
        fi
        kill -0 "$pid" 2>/dev/null || { echo "the server exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "the server did not get ready" >&2
    exit 1
}

stop_server() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-proxy.XXXXXX"); dirs+=("$dir")
start_server "$dir"
result=$(ip netns exec "$netns" python3 hack/bench-proxy.py "$dir/data/server" "$url" "$pid" "$dir/server.log" \
    --services "$services" --endpoints "$endpoints" --changes "$changes")

# the full resync: the first sync of a restarted server converges the table it left
stop_server
before=$(wc -l < "$dir/server.log")
start_server "$dir"
full=""
for _ in $(seq 1200); do
    full=$(tail -n +"$((before + 1))" "$dir/server.log" | grep -m1 "programmed the full table services=$((services + 1)) " || true)
    [ -n "$full" ] && break
    sleep 0.1
done
[ -n "$full" ] || { echo "no full sync of $services services after the restart" >&2; exit 1; }
full_ms=$(sed -n 's/.* ms=\([0-9.]*\).*/\1/p' <<<"$full")
stop_server

# the same objects without the proxy
base=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-proxy.XXXXXX"); dirs+=("$base")
start_server "$base" --disable-kube-proxy
baseline=$(ip netns exec "$netns" python3 hack/bench-proxy.py "$base/data/server" "$url" "$pid" "$base/server.log" \
    --services "$services" --endpoints "$endpoints" --baseline)
stop_server

python3 - "$result" "$full_ms" "$baseline" "$(nft --version)" <<'EOF'
import json, sys
r, full_ms, baseline, version = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"# {r['services']} Services x {r['endpoints']} endpoints, {r['changes']} changes ({version})")
print(f"{'measure':<44} {'value':>12}")
rows = [
    ("change programmed, p50 (ms)", r["p50_ms"]),
    ("change programmed, p99 (ms)", r["p99_ms"]),
    ("change programmed, max (ms)", r["max_ms"]),
    ("  Service changes p50 / p99 (ms)", f"{r['service_p50_ms']:.1f} / {r['service_p99_ms']:.1f}"),
    ("  EndpointSlice changes p50 / p99 (ms)", f"{r['endpoints_p50_ms']:.1f} / {r['endpoints_p99_ms']:.1f}"),
    ("full resync after a restart (ms)", full_ms),
    ("chains", r["chains"]),
    ("rules", r["rules"]),
    ("service-ips elements", r["service_ips_elements"]),
    ("server RSS with the proxy (MiB)", r["rss_mib"]),
    ("server RSS with --disable-kube-proxy (MiB)", baseline),
    ("the proxy's share (MiB)", r["rss_mib"] - baseline),
]
for name, v in rows:
    print(f"{name:<44} {v if isinstance(v, str) else f'{v:.1f}' if isinstance(v, float) else v:>12}")
EOF
