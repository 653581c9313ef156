#!/usr/bin/env python3
"""Load generator for the workload controllers in `berth server` (issue 19), through the HTTPS
API. It registers fake nodes (Node objects made Ready once, then kept alive by renewing their
Leases in kube-node-lease), plays the kubelet of those nodes for the benchmark's pods (a bound pod
is patched Running and Ready; a pod being deleted gracefully is deleted with gracePeriodSeconds=0)
and runs the cases:

  deploy N             POST a Deployment of N replicas; seconds until all N pods exist, until all
                       are bound (spec.nodeName), and until the Deployment reports the rollout
                       done, all from the POST, seen through watches opened before it.
  rolling update N     on the last Deployment (N its replicas), PATCH the pod template (an env
                       var); the same three times from the PATCH, for the N pods of the new
                       template.

Prints one table row a case: case, replicas, created s, bound s, pods/s (replicas / bound s),
done s, the server's CPU seconds during the case (utime+stime of /proc/PID/stat) and its RSS
after the case (VmRSS). "Done" is `kubectl rollout status`'s test: observedGeneration >=
generation, updatedReplicas >= spec.replicas, replicas <= updatedReplicas, availableReplicas >=
updatedReplicas.

With --baseline (a server without the workload controllers) the same pods are created directly,
case by case, and it prints only the server's RSS after each case, one per line (the rolling
update's line is the RSS at the end: that case adds no pods).

Standard library only; hack/bench-deployments.sh starts the servers.

usage: bench-deployments.py DATA_DIR SERVER_URL PID --nodes N --replicas "N ..." [--workers N]
                            [--timeout S] [--baseline]
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

NS = "default"
IMAGE = "127.0.0.1:5000/berth/busybox:latest"
ROLLOUT_ENV = "BENCH_ROLLOUT"


class ApiError(RuntimeError):
    """A response with a status of 300 or more."""

    def __init__(self, method, path, status, body):
        super().__init__(f"{method} {path}: {status} {body[:400]!r}")
        self.status = status


class Client:
    """One keep-alive HTTPS connection with the admin's client certificate (DATA_DIR/admin.crt,
    admin.key; the server's CA in DATA_DIR/ca.crt). The server's certificate is checked against
    the CA but not against a host name (the URL is 127.0.0.1)."""

    def __init__(self, data, url, timeout=600):
        self.ctx = ssl.create_default_context(cafile=f"{data}/ca.crt")
        self.ctx.load_cert_chain(f"{data}/admin.crt", f"{data}/admin.key")
        self.ctx.check_hostname = False
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = self._connect()
        self.used = False

    def _connect(self):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)

    def call(self, method, path, body=None, ctype="application/json"):
        """Sends one request and returns the decoded JSON answer; raises ApiError on a status of
        300 or more. A keep-alive connection the server closed while idle is reopened once."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": ctype, "Accept": "application/json"}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not self.used:
                raise
            self.conn.close()
            self.conn = self._connect()
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
        out = r.read()
        self.used = True
        if r.status >= 300:
            raise ApiError(method, path, r.status, out)
        return json.loads(out) if out else None

    def stream(self, path):
        """Opens a streaming GET (a watch) and returns the response to read lines from."""
        self.conn.request("GET", path, headers={"Accept": "application/json"})
        r = self.conn.getresponse()
        if r.status >= 300:
            raise ApiError("GET", path, r.status, r.read())
        return r


def log(msg):
    """Progress on stderr (stdout is the table)."""
    print(f"bench-deployments: {msg}", file=sys.stderr, flush=True)


def now():
    """The time as metav1.Time (seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def micro_now():
    """The time as metav1.MicroTime (a Lease's renewTime)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# ---- the server process ----------------------------------------------------------------------


def rss_mib(pid):
    """The process's resident set (VmRSS) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid):
    """The process's CPU time so far, user + system, in seconds (/proc/PID/stat fields 14 and 15;
    counted after the command name, which may hold spaces and parentheses)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- a pool of workers, each with its own connection -----------------------------------------


class Pool:
    """Runs API calls on `workers` threads, each with its own keep-alive connection. Failures
    are kept in `errors` (the waits below raise them) instead of getting lost in a thread."""

    def __init__(self, args):
        self.args = args
        self.local = threading.local()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers)
        self.errors = []
        self.lock = threading.Lock()

    def client(self):
        """This thread's connection."""
        if not hasattr(self.local, "client"):
            self.local.client = Client(self.args.data, self.args.url)
        return self.local.client

    def submit(self, fn, *a):
        """Runs fn(client, *a) on a worker; an exception is recorded in `errors`."""

        def run():
            try:
                fn(self.client(), *a)
            except Exception as e:  # noqa: BLE001 - reported by check()
                with self.lock:
                    self.errors.append(f"{fn.__name__}{a}: {e}")

        return self.executor.submit(run)

    def map(self, fn, items):
        """Runs fn(client, item) for every item and waits for all of them; fails on any error."""
        for f in [self.submit(fn, i) for i in items]:
            f.result()
        self.check()

    def check(self):
        """Fails loudly when a call on a worker failed."""
        with self.lock:
            if self.errors:
                raise SystemExit(f"{len(self.errors)} requests failed, first: {self.errors[0]}")


# ---- fake nodes ------------------------------------------------------------------------------


def node_name(i):
    return f"fake-{i:05d}"


def register_nodes(args, pool):
    """Creates the fake nodes: a Node (32 cpu, 256Gi, 110 pods), its Ready condition and its
    Lease in kube-node-lease."""
    alloc = {"cpu": "32", "memory": "256Gi", "pods": "110"}

    def one(c, i):
        name = node_name(i)
        c.call("POST", "/api/v1/nodes", {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        })
        t = now()
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node", "lastHeartbeatTime": t, "lastTransitionTime": t}
        c.call("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"capacity": alloc, "allocatable": alloc, "conditions": [ready]}},
               "application/strategic-merge-patch+json")
        c.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
        })

    pool.map(one, range(args.nodes))


def renew_leases(args, stop):
    """The fake nodes' heartbeat, as a kubelet's: each node's Lease renewed every 10 s, the
    renewals spread over the interval (the node lifecycle controller marks a node Unknown and
    evicts its pods when neither its Lease nor its Ready condition moved for 40 s)."""
    c = Client(args.data, args.url)
    gap = 10.0 / max(args.nodes, 1)
    i = 0
    while not stop.is_set():
        name = node_name(i % args.nodes)
        try:
            c.call("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", {"spec": {"renewTime": micro_now()}},
                   "application/merge-patch+json")
        except Exception as e:  # noqa: BLE001 - one missed renewal does not matter; say so
            log(f"renewing the lease of {name}: {e}")
            c = Client(args.data, args.url)
        i += 1
        stop.wait(gap)


# ---- watches ---------------------------------------------------------------------------------


class Watch:
    """A list and then a watch of one collection (by label selector) from the list's
    resourceVersion, so that nothing between the two is missed, read on its own thread and
    connection; opened again from the last resourceVersion when the server ends it. Each object
    goes to handle(type, obj, t) under `cond`, t the perf_counter when it was read, and `cond` is
    notified. A failure (an ERROR event such as 410 Gone, a broken connection) is kept in
    `failure` and ends the waits."""

    def __init__(self, args, path, selector):
        self.args, self.path, self.selector = args, path, selector
        self.cond = threading.Condition()
        self.failure = None
        self.events = 0

    def start(self):
        """Lists, handles the list and opens the watch; returns once the server has answered the
        watch (its events are then read on a thread)."""
        q = urllib.parse.urlencode({"labelSelector": self.selector})
        listed = Client(self.args.data, self.args.url).call("GET", f"{self.path}?{q}")
        t = time.perf_counter()
        with self.cond:
            for o in listed.get("items", []):
                self.handle("ADDED", o, t)
        self.rv = listed["metadata"]["resourceVersion"]
        first = self._open()
        threading.Thread(target=self._run, args=(first,), daemon=True).start()

    def _open(self):
        """A watch from self.rv, on a new connection without a read timeout."""
        q = urllib.parse.urlencode({"labelSelector": self.selector, "watch": "1", "resourceVersion": self.rv,
                                    "allowWatchBookmarks": "true", "timeoutSeconds": "3600"})
        return Client(self.args.data, self.args.url, timeout=None).stream(f"{self.path}?{q}")

    def _run(self, r):
        """Reads the watch's events (one JSON object a line) until the process ends; a watch the
        server ended is opened again from the last resourceVersion."""
        try:
            while True:
                line = r.readline()
                if not line:
                    r = self._open()  # the server ended the watch
                    continue
                ev = json.loads(line)
                o = ev.get("object", {})
                if ev.get("type") == "ERROR":
                    raise RuntimeError(f"watch {self.path} ({self.selector}): {o}")
                self.rv = o.get("metadata", {}).get("resourceVersion", self.rv)
                if ev.get("type") == "BOOKMARK":
                    continue
                t = time.perf_counter()
                with self.cond:
                    self.events += 1
                    self.handle(ev["type"], o, t)
                    self.cond.notify_all()
        except Exception as e:  # noqa: BLE001 - ends the waits with the reason
            with self.cond:
                self.failure = f"watch {self.path} ({self.selector}): {e!r}"
                self.cond.notify_all()

    def handle(self, kind, obj, t):
        raise NotImplementedError

    def wait(self, pred, timeout, what, pool):
        """Waits until pred() (called under the lock) holds; fails loudly with what was last seen
        (self.describe()) after `timeout` seconds, when the watch broke or when a call of the
        fake kubelet failed."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                pool.check()
                if self.failure:
                    raise SystemExit(f"{what}: {self.failure}\nlast seen: {self.describe()}")
                if pred():
                    return time.perf_counter()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"{what}: not after {timeout} s\nlast seen: {self.describe()}")
                # woken by every event; the 1 s cap only notices pool errors and the deadline
                self.cond.wait(min(left, 1.0))

    def describe(self):
        raise NotImplementedError


def ready_condition(pod):
    """Whether the pod's Ready condition is True."""
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def is_new_template(pod):
    """Whether the pod has the rolling update's template (the env var the PATCH added)."""
    for c in pod.get("spec", {}).get("containers", []):
        if any(e.get("name") == ROLLOUT_ENV for e in c.get("env") or []):
            return True
    return False


class Pods(Watch):
    """The pods of one app label, and the kubelet of the fake nodes for them: a bound pod that is
    not Ready is patched Running and Ready (once per uid), a bound pod with a deletionTimestamp is
    deleted with gracePeriodSeconds=0 (once per uid), both on the pool. Keeps when each pod was
    first seen and first seen bound."""

    def __init__(self, args, pool, app):
        super().__init__(args, f"/api/v1/namespaces/{NS}/pods", f"app={app}")
        self.pool = pool
        self.live = {}  # name -> the pod as last seen
        self.seen = {}  # name -> perf_counter first seen
        self.bound = {}  # name -> perf_counter first seen with spec.nodeName
        self.new = set()  # names of pods with the rolling update's template
        self.readied, self.confirmed = set(), set()  # uids already patched Ready / deleted

    def handle(self, kind, pod, t):
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.live.pop(name, None)
            return
        self.live[name] = pod
        self.seen.setdefault(name, t)
        if is_new_template(pod):
            self.new.add(name)
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            return
        self.bound.setdefault(name, t)
        uid = pod["metadata"]["uid"]
        if pod["metadata"].get("deletionTimestamp"):
            if uid not in self.confirmed:
                self.confirmed.add(uid)
                self.pool.submit(confirm_deletion, name, uid)
        elif not ready_condition(pod) and uid not in self.readied:
            self.readied.add(uid)
            self.pool.submit(mark_ready, name, uid)

    def describe(self):
        live = list(self.live.values())
        bound = sum(1 for p in live if p.get("spec", {}).get("nodeName"))
        ready = sum(1 for p in live if ready_condition(p))
        deleting = sum(1 for p in live if p["metadata"].get("deletionTimestamp"))
        sample = next((p for p in live if not ready_condition(p)), live[0] if live else None)
        brief = sample and {"metadata": {k: sample["metadata"].get(k) for k in ("name", "uid", "deletionTimestamp", "labels")},
                            "nodeName": sample.get("spec", {}).get("nodeName"), "status": sample.get("status")}
        return (f"pods {self.selector}: {len(live)} live ({bound} bound, {ready} Ready, {deleting} being deleted), "
                f"{len(self.new)} of the new template, {self.events} events; a pod: {json.dumps(brief)}")


def mark_ready(c, name, uid):
    """The fake kubelet starts a pod: phase Running, Initialized/ContainersReady/Ready True (a
    404: the pod is gone already, nothing to do). `uid` only names the pod in errors: the
    controllers' pods have generated names, never reused."""
    t = now()
    conds = [{"type": k, "status": "True", "lastProbeTime": None, "lastTransitionTime": t} for k in ("Initialized", "ContainersReady", "Ready")]
    body = {"status": {"phase": "Running", "startTime": t, "conditions": conds}}
    try:
        c.call("PATCH", f"/api/v1/namespaces/{NS}/pods/{name}/status", body, "application/strategic-merge-patch+json")
    except ApiError as e:
        if e.status not in (404, 409):
            raise


def confirm_deletion(c, name, uid):
    """The fake kubelet has stopped a pod being deleted: deleted with gracePeriodSeconds=0, on
    the condition it is still the same pod (a 404 or 409: gone already)."""
    body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
    try:
        c.call("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}", body)
    except ApiError as e:
        if e.status not in (404, 409):
            raise


class Deployment(Watch):
    """One Deployment (by its app label), as last seen."""

    def __init__(self, args, app):
        super().__init__(args, f"/apis/apps/v1/namespaces/{NS}/deployments", f"app={app}")
        self.obj = None

    def handle(self, kind, obj, t):
        self.obj = None if kind == "DELETED" else obj

    def rolled_out(self, generation):
        """`kubectl rollout status`'s test, on a generation of at least `generation`; fails at a
        ProgressDeadlineExceeded condition as kubectl does."""
        d = self.obj
        if d is None or d["metadata"].get("generation", 0) < generation:
            return False
        s = d.get("status", {})
        for c in s.get("conditions") or []:
            if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
                self.failure = f"deployment {d['metadata']['name']} exceeded its progress deadline"
                return False
        want = d["spec"].get("replicas", 1)
        updated = s.get("updatedReplicas", 0)
        return (s.get("observedGeneration", 0) >= d["metadata"]["generation"] and updated >= want
                and s.get("replicas", 0) <= updated and s.get("availableReplicas", 0) >= updated)

    def describe(self):
        if self.obj is None:
            return "no deployment"
        m = self.obj["metadata"]
        return json.dumps({"name": m["name"], "generation": m.get("generation"), "spec.replicas": self.obj["spec"].get("replicas"),
                           "status": self.obj.get("status")})


# ---- the cases -------------------------------------------------------------------------------


def pod_template(app):
    """The pods' template: one container that nothing ever pulls (the nodes are fake)."""
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}]},
    }


class Server:
    """The server's CPU time and RSS, sampled between cases."""

    def __init__(self, pid):
        self.pid = pid
        self.cpu = cpu_seconds(pid)

    def sample(self):
        """CPU seconds since the last sample, and the RSS now."""
        cpu = cpu_seconds(self.pid)
        spent, self.cpu = cpu - self.cpu, cpu
        return spent, rss_mib(self.pid)


def row(case, n, created, bound, done, cpu, rss):
    print(f"{case:<20} {n:<9} {created:<10.2f} {bound:<10.2f} {n / bound:<9.0f} {done:<9.2f} {cpu:<8.1f} {rss:<9.0f}", flush=True)


def deploy(args, pool, server, n):
    """Case "deploy N": POST a Deployment of N replicas and time its pods' creation, binding and
    the rollout's end (the fake kubelet making them Ready). Returns the watches (kept running:
    the last case rolls this Deployment)."""
    app = f"bench-{n}"
    pods, dep = Pods(args, pool, app), Deployment(args, app)
    pods.start()
    dep.start()
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": {"app": app}},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": app}}, "template": pod_template(app)},
    }
    c = Client(args.data, args.url)
    t0 = time.perf_counter()
    made = c.call("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", body)
    pods.wait(lambda: len(pods.seen) >= n, args.timeout, f"deploy {n}: {n} pods created", pool)
    pods.wait(lambda: len(pods.bound) >= n, args.timeout, f"deploy {n}: {n} pods bound", pool)
    with pods.cond:  # the watch thread adds to these
        created = sorted(pods.seen.values())[n - 1] - t0
        bound = sorted(pods.bound.values())[n - 1] - t0
    done = dep.wait(lambda: dep.rolled_out(made["metadata"].get("generation", 1)), args.timeout, f"deploy {n}: rolled out", pool) - t0
    cpu, rss = server.sample()
    log(f"deploy {n}: created {created:.2f} s, bound {bound:.2f} s, rolled out {done:.2f} s")
    row(f"deploy {n}", n, created, bound, done, cpu, rss)
    return pods, dep


def rolling_update(args, pool, server, n, pods, dep):
    """Case "rolling update N": PATCH the pod template of the N-replica Deployment (an env var)
    and time the new template's N pods created and bound and the rollout's end; then waits for
    the old pods to be gone (the fake kubelet confirming their deletion) before sampling the
    server: its CPU time covers that too."""
    app = f"bench-{n}"
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": ROLLOUT_ENV, "value": "1"}]}]}}}}
    c = Client(args.data, args.url)
    t0 = time.perf_counter()
    made = c.call("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{app}", patch, "application/strategic-merge-patch+json")
    what = f"rolling update {n}"
    pods.wait(lambda: len(pods.new) >= n, args.timeout, f"{what}: {n} new pods created", pool)
    pods.wait(lambda: sum(1 for p in pods.new if p in pods.bound) >= n, args.timeout, f"{what}: {n} new pods bound", pool)
    with pods.cond:  # the watch thread adds to these
        created = sorted(pods.seen[p] for p in pods.new)[n - 1] - t0
        bound = sorted(pods.bound[p] for p in pods.new if p in pods.bound)[n - 1] - t0
    done = dep.wait(lambda: dep.rolled_out(made["metadata"]["generation"]), args.timeout, f"{what}: rolled out", pool) - t0
    log(f"{what}: created {created:.2f} s, bound {bound:.2f} s, rolled out {done:.2f} s")
    pods.wait(lambda: all(p in pods.new for p in pods.live), args.timeout, f"{what}: old pods gone", pool)
    cpu, rss = server.sample()
    row(what, n, created, bound, done, cpu, rss)


def baseline_case(args, pool, n):
    """The baseline's "deploy N": the same N pods created directly (no Deployment), waited for
    until all are bound and Ready."""
    app = f"bench-{n}"
    pods = Pods(args, pool, app)
    pods.start()
    template = pod_template(app)

    def create(c, i):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{app}-{i:05d}", **template["metadata"]}, "spec": template["spec"]}
        c.call("POST", f"/api/v1/namespaces/{NS}/pods", pod)

    pool.map(create, range(n))
    pods.wait(lambda: sum(1 for p in pods.live.values() if ready_condition(p)) >= n, args.timeout, f"baseline {n}: pods bound and Ready", pool)
    return pods


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("url")
    p.add_argument("pid", type=int)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--replicas", required=True, help='the deploy cases, e.g. "100 1000"; the last one is rolled')
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--timeout", type=float, default=900, help="seconds each wait may take")
    p.add_argument("--baseline", action="store_true")
    args = p.parse_args()
    cases = [int(x) for x in args.replicas.split()]
    if not cases or len(set(cases)) != len(cases):
        raise SystemExit(f"--replicas {args.replicas!r}: give one or more different replica counts (each names its Deployment)")

    pool = Pool(args)
    register_nodes(args, pool)
    stop = threading.Event()
    threading.Thread(target=renew_leases, args=(args, stop), daemon=True).start()
    server = Server(args.pid)
    watches = []
    if args.baseline:
        for n in cases:
            watches.append(baseline_case(args, pool, n))
            print(f"{rss_mib(args.pid):.0f}", flush=True)
        print(f"{rss_mib(args.pid):.0f}", flush=True)
    else:
        for n in cases:
            watches.append(deploy(args, pool, server, n))
        rolling_update(args, pool, server, cases[-1], *watches[-1])
    stop.set()


if __name__ == "__main__":
    main()
