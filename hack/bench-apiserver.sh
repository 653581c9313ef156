#!/usr/bin/env bash
# The apiserver benchmark: starts `berth server` (embedded store, temp data dir, killed at the
# end) and drives it through its HTTPS API with hack/bench-apiserver.py: p50/p99 of pod create,
# get, list of 1,000 and 10,000 pods, watch delivery to 500 watchers, and the server's RSS.
#   hack/bench-apiserver.sh                      release build, 10,000 pods, 500 watchers
#   BERTH_BIN=target/debug/berth hack/bench-apiserver.sh --pods 2000 --watchers 100
# Temp dirs go under $TMPDIR (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BERTH_BIN:-}" ]; then
    hack/build.sh --release
    BERTH_BIN=target/release/berth
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-api.XXXXXX")
"$BERTH_BIN" server --data-dir "$dir/data" --listen 127.0.0.1:0 --disable-agent >/dev/null 2>"$dir/server.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 600); do
    if [ -f "$dir/data/server/admin.kubeconfig" ]; then
        url=$(sed -n 's/^ *server: //p' "$dir/data/server/admin.kubeconfig")
        if [ -n "$url" ] && curl -sf --cacert "$dir/data/server/ca.crt" "$url/readyz" >/dev/null 2>&1; then break; fi
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.1
done
ulimit -n 65536 2>/dev/null || true
python3 hack/bench-apiserver.py "$dir/data/server" "$url" "$pid" "$@"
