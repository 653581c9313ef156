#!/usr/bin/env python3
"""Load generator for `berth server`, through the HTTPS API (not the store): latency of create,
get and list (1,000 and 10,000 pods), watch event delivery to many watchers, and the server's RSS
with 10,000 pods stored. Standard library only; hack/bench-apiserver.sh starts the server.

usage: bench-apiserver.py DATA_DIR SERVER_URL PID [--pods N] [--watchers N] [--workers N]
"""
import argparse
import http.client
import json
import queue
import ssl
import threading
import time
import urllib.parse

NS = "berth-bench"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def fmt(xs):
    return f"p50 {pct(xs, 50) * 1000:7.2f} ms  p99 {pct(xs, 99) * 1000:7.2f} ms  (n={len(xs)})"


class Client:
    """One keep-alive HTTPS connection with the admin's client certificate."""

    def __init__(self, data, url):
        ctx = ssl.create_default_context(cafile=f"{data}/ca.crt")
        ctx.load_cert_chain(f"{data}/admin.crt", f"{data}/admin.key")
        ctx.check_hostname = False
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=120)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        t = time.perf_counter()
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        out = r.read()
        dt = time.perf_counter() - t
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return dt, out


def pod(i):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"bench-{i:05d}", "labels": {"app": "bench", "shard": str(i % 10)}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }


def parallel(args, jobs, fn):
    """Runs fn(client, job) for every job over args.workers connections; the latencies."""
    q = queue.Queue()
    for j in jobs:
        q.put(j)
    lat, errs = [], []
    lock = threading.Lock()

    def work():
        c = Client(args.data, args.url)
        while True:
            try:
                j = q.get_nowait()
            except queue.Empty:
                return
            try:
                dt = fn(c, j)
                with lock:
                    lat.append(dt)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errs.append(str(e))

    ts = [threading.Thread(target=work) for _ in range(args.workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise SystemExit(f"{len(errs)} requests failed, first: {errs[0]}")
    return lat


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def create_pods(args, lo, hi):
    base = f"/api/v1/namespaces/{NS}/pods"
    return parallel(args, range(lo, hi), lambda c, i: c.call("POST", base, pod(i))[0])


def lists(args, n):
    c = Client(args.data, args.url)
    return [c.call("GET", f"/api/v1/namespaces/{NS}/pods")[0] for _ in range(n)]


def watch_delivery(args):
    """args.watchers watches on configmaps; the time from each create's start to each watcher's
    line for it."""
    path = f"/api/v1/namespaces/{NS}/configmaps?watch=1&timeoutSeconds=120"
    started, seen = {}, []
    lock = threading.Lock()
    ready = threading.Barrier(args.watchers + 1)
    events = 20

    def watcher():
        c = Client(args.data, args.url)
        c.conn.request("GET", path, headers={"Accept": "application/json"})
        r = c.conn.getresponse()
        ready.wait()
        got = 0
        while got < events:
            line = r.readline()
            if not line:
                return
            if not line.strip():
                continue
            now = time.perf_counter()
            ev = json.loads(line)
            name = ev["object"]["metadata"]["name"]
            if ev["type"] == "ADDED":
                got += 1
                with lock:
                    seen.append((name, now))
        c.conn.close()

    ts = [threading.Thread(target=watcher, daemon=True) for _ in range(args.watchers)]
    for t in ts:
        t.start()
    ready.wait()
    time.sleep(0.5)  # the last watch requests reach the server before the first event
    c = Client(args.data, args.url)
    for i in range(events):
        name = f"bench-cm-{i}"
        started[name] = time.perf_counter()
        c.call("POST", f"/api/v1/namespaces/{NS}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
        time.sleep(0.05)
    for t in ts:
        t.join(timeout=60)
    return [at - started[n] for n, at in seen if n in started], len(seen), args.watchers * events


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("url")
    p.add_argument("pid", type=int)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--watchers", type=int, default=500)
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args()

    c = Client(args.data, args.url)
    c.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    rss0 = rss_mib(args.pid)
    first = min(1000, args.pods)
    created = create_pods(args, 0, first)
    gets = parallel(args, range(2000), lambda c, i: c.call("GET", f"/api/v1/namespaces/{NS}/pods/bench-{i % first:05d}")[0])
    list1k = lists(args, 20)
    t = time.perf_counter()
    created += create_pods(args, first, args.pods)
    rate = (args.pods - first) / (time.perf_counter() - t) if args.pods > first else float("nan")
    list10k = lists(args, 10)
    rss = rss_mib(args.pid)
    wlat, got, want = watch_delivery(args)

    print(f"berth apiserver bench: {args.pods} pods, {args.workers} client connections, {args.watchers} watchers")
    print(f"create pod            {fmt(created)}  ({rate:.0f}/s)")
    print(f"get pod               {fmt(gets)}")
    print(f"list {first} pods        {fmt(list1k)}")
    print(f"list {args.pods} pods       {fmt(list10k)}")
    print(f"watch delivery        {fmt(wlat)}  ({got}/{want} events delivered)")
    print(f"server RSS            {rss0:.1f} MiB empty, {rss:.1f} MiB with {args.pods} pods")
    mut99 = pct(created, 99) * 1000
    l99 = pct(list10k, 99) * 1000
    print(f"targets: p99 mutating <= 25 ms: {mut99:.1f} {'ok' if mut99 <= 25 else 'MISSED'}; "
          f"list {args.pods} <= 500 ms: {l99:.0f} {'ok' if l99 <= 500 else 'MISSED'}; RSS <= 150 MiB: {rss:.0f} {'ok' if rss <= 150 else 'MISSED'}")


if __name__ == "__main__":
    main()
