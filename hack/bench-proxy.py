#!/usr/bin/env python3
"""Load generator for the service proxy (issue 20), through the HTTPS API of a `berth server`
whose node agent runs the proxy (hack/bench-proxy.sh starts it in a network namespace of its
own, so the rules go to that namespace's nftables).

  objects      N Services (selector-less ClusterIP, port 80 "http") in 10 namespaces, each with
               an EndpointSlice of E endpoints (fake pod IPs in 10.200.0.0/16, targetPort 8080),
               created directly; then the wait until the proxy has programmed them all (every
               cluster IP in the table's service-ips map)
  changes      C changes one after the other, alternating: a Service change (a second port
               added or removed) and an endpoint change (one endpoint's IP replaced in the
               EndpointSlice). For each: the time from just before the write until the proxy's
               log says the transaction holding that object's new resourceVersion was applied
               (the proxy logs `programmed changes=<ns>/<name>@<service rv>,<slice rvs>` after
               `nft` returned): p50, p99, max.
  rules        chains, rules and map elements in `nft -a list table ip <table>`
  memory       the server's RSS (VmRSS) once everything is programmed

Standard library only.

usage: bench-proxy.py DATA_DIR SERVER_URL PID LOG --services N --endpoints E --changes C
                      [--table NAME] [--workers W] [--baseline]
"""
import argparse
import concurrent.futures
import http.client
import json
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone

NAMESPACES = 10


class ApiError(RuntimeError):
    pass


class Client:
    """One keep-alive HTTPS connection as the cluster admin (DATA_DIR/admin.crt, admin.key)."""

    def __init__(self, data, url):
        self.ctx = ssl.create_default_context(cafile=f"{data}/ca.crt")
        self.ctx.load_cert_chain(f"{data}/admin.crt", f"{data}/admin.key")
        self.ctx.check_hostname = False
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPSConnection(u.hostname, u.port, context=self.ctx, timeout=600)

    def call(self, method, path, body=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": ctype, "Accept": "application/json"})
        r = self.conn.getresponse()
        out = r.read()
        if r.status >= 300:
            raise ApiError(f"{method} {path}: {r.status} {out[:300]!r}")
        return json.loads(out) if out else None


def log(msg):
    print(f"bench-proxy: {msg}", file=sys.stderr, flush=True)


def ns_of(i):
    return f"bench-{i % NAMESPACES}"


def name_of(i):
    return f"svc-{i:05d}"


def endpoint_ip(i, j, gen=0):
    n = i * 16 + j + gen * 50000
    return f"10.200.{(n // 250) % 256}.{n % 250 + 1}"


def slice_body(i, endpoints, gen_of=lambda j: 0):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name_of(i), "namespace": ns_of(i),
                     "labels": {"kubernetes.io/service-name": name_of(i), "endpointslice.kubernetes.io/managed-by": "berth-bench"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "alt", "port": 8081, "protocol": "TCP"}],
        "endpoints": [{"addresses": [endpoint_ip(i, j, gen_of(j))], "conditions": {"ready": True}, "nodeName": "bench"} for j in range(endpoints)],
    }


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS in /proc/{pid}/status")


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def nft(*args):
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=True).stdout


def programmed_ips(table):
    """The cluster IPs in the table's service-ips map."""
    out = subprocess.run(["nft", "list", "map", "ip", table, "service-ips"], capture_output=True, text=True).stdout
    return len(re.findall(r"\. tcp \. 80 : goto svc-", out))


def create_objects(args, wait=True):
    """The namespaces, Services and EndpointSlices; with `wait`, until the proxy has programmed
    every Service."""
    c = Client(args.data, args.url)
    for n in range(NAMESPACES):
        try:
            c.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{n}"}})
        except ApiError as e:
            if " 409 " not in str(e):
                raise
    local = threading.local()

    def one(i):
        if not hasattr(local, "c"):
            local.c = Client(args.data, args.url)
        local.c.call("POST", f"/api/v1/namespaces/{ns_of(i)}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name_of(i)},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        local.c.call("POST", f"/apis/discovery.k8s.io/v1/namespaces/{ns_of(i)}/endpointslices", slice_body(i, args.endpoints))

    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as ex:
        for f in [ex.submit(one, i) for i in range(args.services)]:
            f.result()
    log(f"created {args.services} services and slices in {time.time() - start:.1f} s")
    if not wait:
        return
    deadline = time.time() + 600
    while programmed_ips(args.table) < args.services:
        if time.time() > deadline:
            raise SystemExit("the proxy did not program every service within 600 s")
        time.sleep(0.5)
    log(f"all programmed {time.time() - start:.1f} s after the first create")


class LogTail:
    """Reads the server's log from where it was, for the proxy's `programmed` lines."""

    LINE = re.compile(r"^(\S+Z) .*berth::proxy::sync: programmed changes=(.*?) ms=")

    def __init__(self, path):
        self.f = open(path, "r", errors="replace")
        self.f.seek(0, 2)

    def wait_for(self, ns, name, rv, timeout=30):
        """The time (epoch seconds) of the first `programmed` line naming ns/name with rv."""
        deadline = time.time() + timeout
        want = f"{ns}/{name}@"
        while time.time() < deadline:
            line = self.f.readline()
            if not line:
                time.sleep(0.002)
                continue
            m = self.LINE.match(line)
            if not m:
                continue
            for item in m.group(2).split():
                if item.startswith(want) and rv in item[len(want):].split(","):
                    ts = m.group(1)
                    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
        raise SystemExit(f"no programmed line for {ns}/{name}@{rv} within {timeout} s")


def changes(args):
    c = Client(args.data, args.url)
    tail = LogTail(args.log)
    latencies = {"service": [], "endpoints": []}
    gens = {}
    for k in range(args.changes):
        i = (k * 7919) % args.services
        ns, name = ns_of(i), name_of(i)
        if k % 2 == 0:
            svc = c.call("GET", f"/api/v1/namespaces/{ns}/services/{name}")
            ports = svc["spec"]["ports"]
            if len(ports) == 1:
                ports.append({"name": "alt", "port": 81, "targetPort": 8081, "protocol": "TCP"})
            else:
                ports = ports[:1]
            patch = {"spec": {"ports": ports}}
            t0 = time.time()
            out = c.call("PATCH", f"/api/v1/namespaces/{ns}/services/{name}", patch, "application/merge-patch+json")
            kind = "service"
        else:
            g = gens.get(i, 0) + 1
            gens[i] = g
            body = slice_body(i, args.endpoints, lambda j: g if j == 0 else 0)
            t0 = time.time()
            out = c.call("PUT", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}", body)
            kind = "endpoints"
        rv = out["metadata"]["resourceVersion"]
        done = tail.wait_for(ns, name, rv)
        latencies[kind].append((done - t0) * 1000)
        time.sleep(0.02)
    return latencies


def rule_counts(table):
    out = nft("-a", "list", "table", "ip", table)
    chains = rules = 0
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("chain "):
            chains += 1
        elif "# handle" in s and not s.startswith(("table ", "set ", "map ")):
            rules += 1
    maps = nft("list", "map", "ip", table, "service-ips")
    elements = maps.count(": goto")
    return chains, rules, elements


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("url")
    ap.add_argument("pid", type=int)
    ap.add_argument("log")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--table", default="berth-proxy")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--baseline", action="store_true", help="only create the objects and print the RSS (a server without the proxy)")
    args = ap.parse_args()
    if args.baseline:
        create_objects(args, wait=False)
        # what the watches deliver is in the server's caches a moment after the last write
        time.sleep(3)
        print(f"{rss_mib(args.pid):.1f}")
        return
    create_objects(args)
    rss = rss_mib(args.pid)
    chains, rules, elements = rule_counts(args.table)
    lat = changes(args)
    allv = lat["service"] + lat["endpoints"]
    print(json.dumps({
        "services": args.services, "endpoints": args.endpoints, "changes": len(allv),
        "p50_ms": percentile(allv, 50), "p99_ms": percentile(allv, 99), "max_ms": max(allv),
        "service_p50_ms": percentile(lat["service"], 50), "service_p99_ms": percentile(lat["service"], 99),
        "endpoints_p50_ms": percentile(lat["endpoints"], 50), "endpoints_p99_ms": percentile(lat["endpoints"], 99),
        "chains": chains, "rules": rules, "service_ips_elements": elements, "rss_mib": rss,
    }))


if __name__ == "__main__":
    main()
