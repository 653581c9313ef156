#!/usr/bin/env bash
# The scheduler benchmark (issue 18): for each node count (default 1,000 and 5,000) starts
# `berth server` without its scheduler (embedded store, temp data dir), registers fake nodes
# (Node objects, Ready once; hack/bench-scheduler.py renews their Leases as kubelets do), holds
# the scheduler's Lease and creates 10,000 pods; then restarts the server on the same data with
# its scheduler, which waits for the Lease, releases it and follows a pod watch until every pod
# is bound: pods scheduled per second (first to last binding, over pods already created, as
# scheduler_perf's SchedulingThroughput), the time from the Lease's release to the last
# binding, and the server's RSS with the scheduler at the last binding; then starts the server
# once more on that data without its scheduler and notes its RSS after 10 s (the same nodes,
# bound pods and Events). Last, on a copy of the data as it was before scheduling, the same
# scheduler as its own process (`berth scheduler`, as kube-scheduler runs) against a server
# without one: its pods/s and its own RSS at the last binding, the scheduler's share measured
# directly.
#   hack/bench-scheduler.sh                                   release build, 1000 and 5000 nodes
#   BERTH_BIN=target/debug/berth hack/bench-scheduler.sh --nodes 100 --pods 1000
# Temp dirs go under $TMPDIR (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BERTH_BIN:-}" ]; then
    hack/build.sh --release
    BERTH_BIN=target/release/berth
fi
node_counts=(1000 5000)
pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) node_counts=("$2"); shift 2 ;;
        *) pass+=("$1"); shift ;;
    esac
done

# start_server DIR [FLAGS...]: sets $pid and $url.
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

ulimit -n 65536 2>/dev/null || true
pids=()
dirs=()
# (each step may fail in the trap: a server already stopped; the directories go regardless)
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "${dirs[@]}"' EXIT
printf '%-8s %-8s %-10s %-12s %-10s %-14s %-12s %-14s\n' nodes pods "pods/s" "all bound s" "RSS MiB" "no-sched MiB" "own pods/s" "scheduler MiB"
for n in "${node_counts[@]}"; do
    dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-sched.XXXXXX"); dirs+=("$dir")
    start_server "$dir" --disable-scheduler; pids+=("$pid")
    python3 hack/bench-scheduler.py "$dir/data/server" "$url" "$pid" --nodes "$n" --phase create "${pass[@]}" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    mkdir "$dir/own" && cp -a "$dir/data" "$dir/own/data"
    start_server "$dir"; pids+=("$pid")
    # BERTH_BENCH_PERF=<file>: perf record of the server while it schedules (call graphs)
    if [ -n "${BERTH_BENCH_PERF:-}" ]; then perf record -F ${BERTH_BENCH_PERF_FREQ:-499} ${BERTH_BENCH_PERF_CALLGRAPH:--g} -p "$pid" -o "$BERTH_BENCH_PERF.$n" >/dev/null 2>&1 & perf_pid=$!; fi
    result=$(python3 hack/bench-scheduler.py "$dir/data/server" "$url" "$pid" --nodes "$n" --phase schedule "${pass[@]}")
    if [ -n "${BERTH_BENCH_PERF:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # the same data again without the scheduler: the RSS it is compared with
    start_server "$dir" --disable-scheduler; pids+=("$pid")
    baseline=$(python3 hack/bench-scheduler.py "$dir/data/server" "$url" "$pid" --nodes "$n" --phase baseline "${pass[@]}")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # the scheduler as its own process, on the unscheduled copy
    start_server "$dir/own" --disable-scheduler; pids+=("$pid")
    "$BERTH_BIN" scheduler --kubeconfig "$dir/own/data/server/admin.kubeconfig" >/dev/null 2>"$dir/own/scheduler.log" &
    sched_pid=$!; pids+=("$sched_pid")
    own=$(python3 hack/bench-scheduler.py "$dir/own/data/server" "$url" "$sched_pid" --nodes "$n" --phase schedule "${pass[@]}")
    kill "$sched_pid"; wait "$sched_pid" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    read -r _ _ own_rate _ own_rss <<<"$own"
    printf '%s %-14s %-12s %-14s\n' "$result" "$baseline" "$own_rate" "$own_rss"
done
