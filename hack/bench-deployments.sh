#!/usr/bin/env bash
# The workload controllers' benchmark (issue 19): starts `berth server --disable-agent`
# (embedded store, temp data dir, killed at the end), registers fake nodes (Node objects of
# 32 cpu / 256Gi / 110 pods; hack/bench-deployments.py keeps their Leases renewed and plays their
# kubelet: bound pods are patched Running and Ready, pods being deleted are deleted with
# gracePeriodSeconds=0) and runs, through the HTTPS API:
#   deploy N             for each N of --replicas: a Deployment of N replicas POSTed; seconds
#                        until its N pods exist, until all are bound, and until the Deployment
#                        reports the rollout done (as `kubectl rollout status` decides it), from
#                        the POST, seen through watches opened before it; pods/s = N / bound s
#   rolling update N     the last Deployment's pod template changed (PATCH, an env var): the same
#                        times from the PATCH, for the N pods of the new template
# Each row also has the server's CPU seconds during the case (utime+stime) and its RSS after it,
# and the RSS of a second server started with --controllers=*,-replicaset,-deployment,
# -replicationcontroller,-job,-ttl-after-finished,-cronjob,-daemonset,-disruption,-podgc that gets the same nodes and the same pods created directly (the
# memory without the workload controllers).
#   hack/bench-deployments.sh                                  release build, 100 nodes, 100 and 1000 replicas
#   BERTH_BIN=target/debug/berth hack/bench-deployments.sh --nodes 10 --replicas "20 50"
# Other flags go to the python (--workers N, --timeout SECONDS for each wait). Temp dirs go under
# $TMPDIR (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BERTH_BIN:-}" ]; then
    hack/build.sh --release
    BERTH_BIN=target/release/berth
fi
nodes=100
replicas="100 1000"
pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes=$2; shift 2 ;;
        --replicas) replicas=$2; shift 2 ;;
        *) pass+=("$1"); shift ;;
    esac
done

# start_server DIR [FLAGS...]: starts the server on DIR/data, its log in DIR/server.log; sets
# $pid and $url once it answers /readyz.
start_server() {
    local dir=$1; shift
    "$BERTH_BIN" server --data-dir "$dir/data" --listen 127.0.0.1:0 --disable-agent "$@" >/dev/null 2>"$dir/server.log" &
    pid=$!
    for _ in $(seq 600); do
        if [ -f "$dir/data/server/admin.kubeconfig" ]; then
            url=$(sed -n 's/^ *server: //p' "$dir/data/server/admin.kubeconfig")
            if [ -n "$url" ] && curl -sf --cacert "$dir/data/server/ca.crt" "$url/readyz" >/dev/null 2>&1; then return 0; fi
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "server did not get ready" >&2
    exit 1
}

# stop_server: stops the server of $pid (the only one running) and waits for it; the exit trap
# then has no pid left to stop.
stop_server() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pids=()
}

# cleanup (on exit): when the benchmark failed, shows the end of the servers' logs (before they
# stop: after, it is all shutdown); stops the servers this script started, by pid (each may be
# stopped already: the loop goes on); removes the temp dirs.
cleanup() {
    local rc=$? p d
    if [ "$rc" -ne 0 ]; then
        for d in "${dirs[@]}"; do
            if [ -f "$d/server.log" ]; then echo "--- the end of $d/server.log" >&2; tail -n 20 "$d/server.log" >&2; fi
        done
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "${dirs[@]}"
}

ulimit -n 65536 2>/dev/null || true
pids=()
dirs=()
trap cleanup EXIT

dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-deploy.XXXXXX"); dirs+=("$dir")
start_server "$dir"; pids+=("$pid")
result=$(python3 hack/bench-deployments.py "$dir/data/server" "$url" "$pid" --nodes "$nodes" --replicas "$replicas" "${pass[@]}")
stop_server

base=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-deploy.XXXXXX"); dirs+=("$base")
start_server "$base" '--controllers=*,-replicaset,-deployment,-replicationcontroller,-job,-ttl-after-finished,-cronjob,-daemonset,-disruption,-podgc'; pids+=("$pid")
baseline=$(python3 hack/bench-deployments.py "$base/data/server" "$url" "$pid" --nodes "$nodes" --replicas "$replicas" --baseline "${pass[@]}")
stop_server

echo "# $nodes nodes"
printf '%-20s %-9s %-10s %-10s %-9s %-9s %-8s %-9s %s\n' case replicas "created s" "bound s" "pods/s" "done s" "CPU s" "RSS MiB" "no-controllers MiB"
paste -d ' ' <(printf '%s\n' "$result") <(printf '%s\n' "$baseline")
