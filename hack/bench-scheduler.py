#!/usr/bin/env python3
"""Load generator for the scheduler in `berth server`, through the HTTPS API, in two phases
against two server runs on one data dir (hack/bench-scheduler.sh starts them):

--phase create (a server started with --disable-scheduler): registers fake nodes (Ready once,
then, as kubelets do, a heartbeat thread renews each node's Lease in kube-node-lease every 10 s:
the node lifecycle controller keeps them Ready, the Node objects do not change; a kubelet writes
its Node status only every 5 minutes when nothing changes), takes the scheduler's Lease
(kube-system/kube-scheduler) for a holder of its own, creates the pods in bulk and prints the
server's RSS (the baseline without a scheduler).

--phase baseline (the same data once more, a server without its scheduler): after 10 s, the
server's RSS: the same nodes, bound pods and Events, without the scheduler (its share is the
difference).

--phase schedule (the same data, a server with its scheduler, which waits for the Lease): opens a
pod watch, releases the Lease and follows the watch until every pod is bound. Prints one table
row: nodes, pods, pods/s (first to last binding, as scheduler_perf's throughput counts pods
already created), seconds from the Lease's release to the last binding, server RSS in MiB.

Standard library only.
usage: bench-scheduler.py DATA_DIR SERVER_URL PID --nodes N --phase create|schedule [--pods N] [--workers N]
"""
import argparse
import http.client
import json
import queue
import ssl
import threading
import time
import urllib.parse

NS = "default"


class Client:
    """One keep-alive HTTPS connection with the admin's client certificate."""

    def __init__(self, data, url, timeout=600):
        ctx = ssl.create_default_context(cafile=f"{data}/ca.crt")
        ctx.load_cert_chain(f"{data}/admin.crt", f"{data}/admin.key")
        ctx.check_hostname = False
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=timeout)

    def call(self, method, path, body=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": ctype, "Accept": "application/json"})
        r = self.conn.getresponse()
        out = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return out


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node(i):
    alloc = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"fake-{i:05d}", "labels": {"kubernetes.io/hostname": f"fake-{i:05d}", "topology.kubernetes.io/zone": f"zone-{i % 3}"}},
        "status": {"capacity": alloc, "allocatable": alloc},
    }


def micro_now():
    """A MicroTime, as Leases carry."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def ready_patch():
    t = now()
    return {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": t, "lastTransitionTime": t}]}}


def pod(i):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"bench-{i:05d}", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }


def parallel(args, jobs, fn):
    q = queue.Queue()
    for j in jobs:
        q.put(j)
    errs = []
    lock = threading.Lock()

    def work():
        c = Client(args.data, args.url)
        while True:
            try:
                j = q.get_nowait()
            except queue.Empty:
                return
            try:
                fn(c, j)
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


def register_nodes(args):
    def one(c, i):
        c.call("POST", "/api/v1/nodes", node(i))
        c.call("PATCH", f"/api/v1/nodes/fake-{i:05d}/status", ready_patch(), "application/strategic-merge-patch+json")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": f"fake-{i:05d}", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": f"fake-{i:05d}", "leaseDurationSeconds": 40, "renewTime": micro_now()},
        }
        c.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    parallel(args, range(args.nodes), one)


def heartbeats(args, stop):
    """Each node's Lease renewed every 10 s (the kubelet's renew interval), spread over it."""
    c = Client(args.data, args.url)
    i = 0
    gap = 10.0 / max(args.nodes, 1)
    while not stop.is_set():
        try:
            path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/fake-{i % args.nodes:05d}"
            c.call("PATCH", path, {"spec": {"renewTime": micro_now()}}, "application/merge-patch+json")
        except Exception:  # noqa: BLE001 - a missed heartbeat does not matter here
            c = Client(args.data, args.url)
        i += 1
        stop.wait(gap)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"


def hold_lease(c):
    """The scheduler's Lease held by someone else for an hour: the next scheduler waits."""
    t = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
        "spec": {"holderIdentity": "bench-blocker", "leaseDurationSeconds": 3600, "acquireTime": t, "renewTime": t, "leaseTransitions": 0},
    }
    try:
        c.call("DELETE", LEASE)
    except RuntimeError:
        pass
    c.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", body)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("url")
    p.add_argument("pid", type=int)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--phase", choices=["create", "schedule", "baseline"], required=True)
    args = p.parse_args()

    stop = threading.Event()
    if args.phase == "baseline":
        # the same objects (bound pods, their events, the nodes), no scheduler: settled RSS
        threading.Thread(target=heartbeats, args=(args, stop), daemon=True).start()
        time.sleep(10)
        print(f"{rss_mib(args.pid):.0f}")
        stop.set()
        return
    if args.phase == "create":
        register_nodes(args)
        threading.Thread(target=heartbeats, args=(args, stop), daemon=True).start()
        hold_lease(Client(args.data, args.url))
        parallel(args, range(args.pods), lambda c, i: c.call("POST", f"/api/v1/namespaces/{NS}/pods", pod(i)))
        time.sleep(5)
        print(f"{rss_mib(args.pid):.0f}")
        stop.set()
        return

    threading.Thread(target=heartbeats, args=(args, stop), daemon=True).start()
    bound = {}
    done = threading.Event()

    def follow(c, r):
        while not done.is_set():
            line = r.readline()
            if not line:
                return
            ev = json.loads(line)
            o = ev.get("object", {})
            name = o.get("metadata", {}).get("name", "")
            if o.get("spec", {}).get("nodeName") and name not in bound:
                bound[name] = time.perf_counter()
                if len(bound) >= args.pods:
                    done.set()

    c = Client(args.data, args.url)
    c.conn.request("GET", f"/api/v1/namespaces/{NS}/pods?watch=1&timeoutSeconds=3600", headers={"Accept": "application/json"})
    r = c.conn.getresponse()
    threading.Thread(target=follow, args=(c, r), daemon=True).start()
    time.sleep(2)  # the watch's initial events (every pod, unbound) are read
    if bound:
        raise SystemExit(f"{len(bound)} pods were bound before the Lease was released")
    released = time.perf_counter()
    Client(args.data, args.url).call("DELETE", LEASE)
    if not done.wait(timeout=3600):
        raise SystemExit(f"only {len(bound)} of {args.pods} pods bound")
    first, last = min(bound.values()), max(bound.values())
    rss = rss_mib(args.pid)
    stop.set()
    print(f"{args.nodes:<8} {args.pods:<8} {(args.pods - 1) / max(last - first, 1e-9):<10.0f} {last - released:<12.2f} {rss:<10.0f}", end="")


if __name__ == "__main__":
    main()
