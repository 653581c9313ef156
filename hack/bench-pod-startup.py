#!/usr/bin/env python3
"""The pod startup SLO on a real node (issue 19), through the HTTPS API of a `berth server` that
runs its own node (hack/bench-pod-startup.sh starts it). Nothing is faked: the scheduler binds
the pods to the server's node and its kubelet runs them (sandbox, CNI, busybox container).

  warm-up              waits for the node to be Ready, then runs one pod of the benchmark's image
                       and deletes it again: the image is pulled before the cases (the upstream
                       SLO excludes image pulls; the cases' pods have imagePullPolicy
                       IfNotPresent, so none of them pulls).
  startup N            for each N of --replicas: a pod watch (app=<the Deployment's label>) is
                       opened, then a Deployment of N replicas POSTed. For each pod the watch
                       records when it was first seen (ADDED), first seen bound (spec.nodeName),
                       first seen with status.phase Running and first seen Ready. Reports the
                       seconds from the POST until all N pods exist / are bound / are Running /
                       are Ready, the per-pod startup latency (first seen -> Running seen by the
                       watch, the SLO's "creation to Running observed through a watch")
                       p50 / p90 / p99 / max, and the server's CPU seconds from the POST until
                       all are Ready and its RSS then. Then the Deployment is deleted
                       (propagationPolicy Background, as kubectl does) and it reports the
                       seconds until the watch has seen all its pods deleted, and the server's
                       CPU seconds for that.

The upstream SLO: p99 of pod startup latency <= 5 s (image pulls excluded); the target of issue
19 is <= 1 s for 100 pods on one real node. The server is one process (apiserver, controller
manager, scheduler and node), so its CPU and RSS are those of all of them.

Reuses the Client, the Watch and the /proc readers of hack/bench-deployments.py (imported from
its file). Standard library only.

usage: bench-pod-startup.py DATA_DIR SERVER_URL PID --node NAME --replicas "N ..." [--timeout S]
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import time
import types
import urllib.parse

_spec = importlib.util.spec_from_file_location("bench_deployments", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-deployments.py"))
bd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bd)
Client, ApiError, Watch, ready_condition = bd.Client, bd.ApiError, bd.Watch, bd.ready_condition

NS = bd.NS
IMAGE = bd.IMAGE
# Requests small enough for 100 pods (and more) on a 2-core node.
CPU_REQUEST, MEMORY_REQUEST = "1m", "8Mi"
# Sleeps until TERMinated, then exits at once (sh runs a trap only between commands: `wait` is
# one that a signal ends, a foreground `sleep` is not).
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
WARMUP = "startup-warmup"
# Watch.wait checks a pool of workers for failed calls; there is none here.
NO_POOL = types.SimpleNamespace(check=lambda: None)


def log(msg):
    """Progress on stderr (stdout is the table)."""
    print(f"bench-pod-startup: {msg}", file=sys.stderr, flush=True)


def quantity(s):
    """A resource.Quantity as a number (cpu in cores, memory in bytes)."""
    s = str(s).strip()
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    if s[-2:] in binary:
        return float(s[:-2]) * binary[s[-2:]]
    if s[-1:] in decimal:
        return float(s[:-1]) * decimal[s[-1:]]
    return float(s)


def percentile(values, p):
    """The nearest-rank p-th percentile of values (not empty)."""
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def pod_spec():
    """The pods' spec: busybox sleeping until stopped, no image pull (the image is there from the
    warm-up: `latest` would default to imagePullPolicy Always), small requests, 1 s to stop, the
    host's DNS (the server has no --cluster-dns: ClusterFirst would fall back to it anyway, with
    a warning and an event for every pod)."""
    return {
        "terminationGracePeriodSeconds": 1,
        "dnsPolicy": "Default",
        "containers": [{
            "name": "c",
            "image": IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": COMMAND,
            "resources": {"requests": {"cpu": CPU_REQUEST, "memory": MEMORY_REQUEST}},
        }],
    }


class Pods(Watch):
    """The pods of one app label: when each was first seen, first seen bound, Running and Ready,
    and when it was seen deleted (times are perf_counter)."""

    def __init__(self, args, app):
        super().__init__(args, f"/api/v1/namespaces/{NS}/pods", f"app={app}")
        self.live = {}  # name -> the pod as last seen
        self.seen, self.bound, self.running, self.ready, self.deleted = {}, {}, {}, {}, {}
        self.ended = {}  # name -> phase, for pods seen Succeeded or Failed unasked (they should not)

    def handle(self, kind, pod, t):
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.live.pop(name, None)
            self.deleted.setdefault(name, t)
            return
        self.live[name] = pod
        self.seen.setdefault(name, t)
        if pod.get("spec", {}).get("nodeName"):
            self.bound.setdefault(name, t)
        phase = pod.get("status", {}).get("phase")
        if phase == "Running":
            self.running.setdefault(name, t)
        elif phase in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp"):
            self.ended[name] = phase
        if ready_condition(pod):
            self.ready.setdefault(name, t)

    def check(self):
        """Fails (as a watch failure, ending the wait) when a pod ended: it should sleep."""
        if self.ended and not self.failure:
            name, phase = next(iter(self.ended.items()))
            pod = self.live.get(name, {})
            self.failure = f"{len(self.ended)} pods ended, e.g. {name} {phase}: {json.dumps(pod.get('status'))}"

    def wait_for(self, pred, what):
        """Watch.wait with the ended-pod check."""
        def p():
            self.check()
            return pred()
        return self.wait(p, self.args.timeout, what, NO_POOL)

    def describe(self):
        live = list(self.live.values())
        bound = sum(1 for p in live if p.get("spec", {}).get("nodeName"))
        running = sum(1 for p in live if p.get("status", {}).get("phase") == "Running")
        ready = sum(1 for p in live if ready_condition(p))
        deleting = sum(1 for p in live if p["metadata"].get("deletionTimestamp"))
        sample = next((p for p in live if not ready_condition(p)), live[0] if live else None)
        brief = sample and {"name": sample["metadata"]["name"], "deletionTimestamp": sample["metadata"].get("deletionTimestamp"),
                            "nodeName": sample.get("spec", {}).get("nodeName"), "status": sample.get("status")}
        return (f"pods {self.selector}: {len(live)} live ({bound} bound, {running} Running, {ready} Ready, {deleting} being deleted), "
                f"{len(self.deleted)} deleted, {self.events} events; a pod: {json.dumps(brief)}")


def get_node(c, name):
    return c.call("GET", f"/api/v1/nodes/{name}")


def node_ready(node):
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def wait_node(args, c):
    """Waits for the node to be Ready (polled twice a second); returns it."""
    t0 = time.monotonic()
    node = None
    while time.monotonic() - t0 < args.timeout:
        try:
            node = get_node(c, args.node)
            if node_ready(node):
                log(f"node {args.node} Ready after {time.monotonic() - t0:.1f} s")
                return node
        except ApiError as e:
            if e.status != 404:
                raise
        time.sleep(0.5)
    raise SystemExit(f"node {args.node} not Ready after {args.timeout} s: {json.dumps(node and node.get('status'))}")


def check_capacity(args, c, n):
    """Fails unless N more pods of the benchmark's requests fit on the node, next to the pods on
    it now (allocatable pods, i.e. maxPods, cpu and memory); warns of taints."""
    node = get_node(c, args.node)
    alloc = node.get("status", {}).get("allocatable", {})
    q = urllib.parse.urlencode({"fieldSelector": f"spec.nodeName={args.node}"})
    on_node = [p for p in c.call("GET", f"/api/v1/pods?{q}")["items"] if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
    cpu = sum(quantity(r.get("resources", {}).get("requests", {}).get("cpu", "0")) for p in on_node for r in p["spec"]["containers"])
    mem = sum(quantity(r.get("resources", {}).get("requests", {}).get("memory", "0")) for p in on_node for r in p["spec"]["containers"])
    pods_cap, cpu_cap, mem_cap = int(quantity(alloc.get("pods", "110"))), quantity(alloc.get("cpu", "0")), quantity(alloc.get("memory", "0"))
    problems = []
    if len(on_node) + n > pods_cap:
        problems.append(f"pods: {len(on_node)} on the node + {n} > allocatable {pods_cap} (maxPods)")
    if cpu + n * quantity(CPU_REQUEST) > cpu_cap:
        problems.append(f"cpu: {cpu} + {n} x {CPU_REQUEST} > allocatable {alloc.get('cpu')}")
    if mem + n * quantity(MEMORY_REQUEST) > mem_cap:
        problems.append(f"memory: {mem / 2**20:.0f}Mi + {n} x {MEMORY_REQUEST} > allocatable {alloc.get('memory')}")
    if problems:
        raise SystemExit(f"{n} replicas do not fit on node {args.node}: " + "; ".join(problems))
    taints = node.get("spec", {}).get("taints") or []
    if taints:
        log(f"node {args.node} has taints: {json.dumps(taints)}")
    return node


def warm_up(args, c):
    """One pod of the image, Running and then deleted: the image is pulled before the cases."""
    pods = Pods(args, WARMUP)
    pods.start()
    spec = pod_spec()
    t0 = time.perf_counter()
    c.call("POST", f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": WARMUP, "labels": {"app": WARMUP}}, "spec": spec})
    pods.wait_for(lambda: WARMUP in pods.ready, "warm-up pod Ready")
    log(f"warm-up pod Running after {pods.running[WARMUP] - t0:.2f} s, Ready after {pods.ready[WARMUP] - t0:.2f} s (image pull included)")
    t1 = time.perf_counter()
    c.call("DELETE", f"/api/v1/namespaces/{NS}/pods/{WARMUP}")
    pods.wait_for(lambda: WARMUP in pods.deleted, "warm-up pod deleted")
    log(f"warm-up pod deleted after {pods.deleted[WARMUP] - t1:.2f} s")


HEADER = ("replicas", "created s", "bound s", "running s", "ready s", "p50 s", "p90 s", "p99 s", "max s", "CPU s", "RSS MiB", "deleted s",
          "del CPU s")
WIDTHS = (9, 10, 8, 10, 8, 7, 7, 7, 7, 7, 8, 10, 9)


def row(values):
    print(" ".join(f"{v:<{w}}" for v, w in zip(values, WIDTHS)).rstrip(), flush=True)


def startup(args, c, n):
    """Case "startup N" (see the module's doc): prints its row."""
    check_capacity(args, c, n)
    app = f"startup-{n}"
    pods = Pods(args, app)
    pods.start()
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": {"app": app}},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": pod_spec()}},
    }
    cpu0 = bd.cpu_seconds(args.pid)
    t0 = time.perf_counter()
    c.call("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", body)
    what = f"startup {n}"
    pods.wait_for(lambda: len(pods.seen) >= n, f"{what}: {n} pods created")
    pods.wait_for(lambda: len(pods.bound) >= n, f"{what}: {n} pods bound")
    pods.wait_for(lambda: len(pods.running) >= n, f"{what}: {n} pods Running")
    pods.wait_for(lambda: len(pods.ready) >= n, f"{what}: {n} pods Ready")
    cpu = bd.cpu_seconds(args.pid) - cpu0
    rss = bd.rss_mib(args.pid)
    with pods.cond:  # the watch thread adds to these
        created, bound, running, ready = (sorted(d.values())[n - 1] - t0 for d in (pods.seen, pods.bound, pods.running, pods.ready))
        latencies = [pods.running[p] - pods.seen[p] for p in pods.running]
        ready_latencies = [pods.ready[p] - pods.seen[p] for p in pods.ready]
        extra = len(pods.seen) - n
        if args.times:
            with open(args.times, "a") as f:
                for name in sorted(pods.seen, key=pods.seen.get):
                    f.write(" ".join([str(n), name] + [f"{d[name] - t0:.3f}" if name in d else "-"
                                                        for d in (pods.seen, pods.bound, pods.running, pods.ready)]) + "\n")
    p50, p90, p99, worst = (percentile(latencies, p) for p in (50, 90, 99, 100))
    log(f"{what}: created {created:.2f} s, bound {bound:.2f} s, Running {running:.2f} s, Ready {ready:.2f} s; "
        f"startup latency p50 {p50:.2f} p90 {p90:.2f} p99 {p99:.2f} max {worst:.2f} s "
        f"(to Ready: p99 {percentile(ready_latencies, 99):.2f} s); CPU {cpu:.1f} s, RSS {rss:.0f} MiB")
    if extra:
        log(f"{what}: {extra} more pods than replicas were made (replacements)")
    if p99 > 5:
        log(f"{what}: p99 {p99:.2f} s misses the pod startup SLO (5 s)")

    cpu1 = bd.cpu_seconds(args.pid)
    t1 = time.perf_counter()
    q = urllib.parse.urlencode({"propagationPolicy": "Background"})
    c.call("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/{app}?{q}")
    pods.wait_for(lambda: not pods.live, f"{what}: pods deleted")
    with pods.cond:
        deleted = max(pods.deleted.values()) - t1
    del_cpu = bd.cpu_seconds(args.pid) - cpu1
    log(f"{what}: all pods deleted {deleted:.2f} s after the Deployment's DELETE; CPU {del_cpu:.1f} s")
    row((n, f"{created:.2f}", f"{bound:.2f}", f"{running:.2f}", f"{ready:.2f}", f"{p50:.2f}", f"{p90:.2f}", f"{p99:.2f}", f"{worst:.2f}",
         f"{cpu:.1f}", f"{rss:.0f}", f"{deleted:.2f}", f"{del_cpu:.1f}"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("url")
    p.add_argument("pid", type=int)
    p.add_argument("--node", required=True, help="the server's node")
    p.add_argument("--replicas", default="100", help='the cases, e.g. "10 100"')
    p.add_argument("--timeout", type=float, default=300, help="seconds each wait may take")
    p.add_argument("--times", help="a file to write each pod's times to (seconds after the POST, one line per pod: "
                   "case, name, created, bound, Running, Ready), for finding which step a slow pod waited on")
    args = p.parse_args()
    cases = [int(x) for x in args.replicas.split()]
    if not cases or len(set(cases)) != len(cases) or min(cases) < 1:
        raise SystemExit(f"--replicas {args.replicas!r}: give one or more different replica counts (each names its Deployment)")

    c = Client(args.data, args.url)
    node = wait_node(args, c)
    check_capacity(args, c, max(cases))  # before the warm-up: each case runs alone
    alloc = node.get("status", {}).get("allocatable", {})
    warm_up(args, c)
    print(f"# node {args.node}: allocatable cpu {alloc.get('cpu')}, memory {alloc.get('memory')}, pods {alloc.get('pods')}; "
          f"server RSS {bd.rss_mib(args.pid):.0f} MiB after the warm-up", flush=True)
    row(HEADER)
    for n in cases:
        startup(args, c, n)


if __name__ == "__main__":
    main()
