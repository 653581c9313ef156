//! `berth-bench dns` (run through hack/bench-dns.sh): the node-local cluster DNS of a real
//! `berth server` (its own node; a private cluster DNS address and service CIDR) with 1,000
//! Services of 10 endpoints each, under load: a closed-loop UDP load generator (one thread, its
//! own runtime, N queries in flight, one socket each) sending A queries for random Services from
//! the host to the bound address and from a pod's network namespace (the path pods take), plus
//! headless answers, NXDOMAIN (a search-path miss) and a cached upstream name. Prints queries/s,
//! p50/p99 latency and timeouts per case, the server's RSS, and the heap the DNS index takes for
//! those objects (glibc's mallinfo2 around building the same index in this process).
use crate::dns::{query, FakeUpstream};
use crate::Daemon;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub answered: u64,
    pub timeouts: u64,
    pub wrong_rcode: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl LoadResult {
    pub fn qps(&self) -> f64 {
        self.answered as f64 / self.secs
    }
}

/// The query messages for `names` (type `qtype`), IDs to be filled in.
pub fn queries(names: &[String], qtype: RecordType) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            let mut m = Message::new(0, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(n).expect("a name"), qtype));
            m.to_vec().expect("a query")
        })
        .collect()
}

/// `concurrency` closed loops, each with its own UDP socket, sending `queries` (round robin from
/// a random start) to `server` for `duration`; every answer's ID is checked and its rcode must be
/// `rcode` (0 NOERROR, 3 NXDOMAIN). Runs on the calling thread's runtime.
pub async fn load(server: SocketAddr, queries: Arc<Vec<Vec<u8>>>, rcode: u8, concurrency: usize, duration: Duration) -> LoadResult {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = vec![];
    for w in 0..concurrency {
        let queries = queries.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let sock = tokio::net::UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await.expect("a socket");
            sock.connect(server).await.expect("connect");
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let (mut timeouts, mut wrong) = (0u64, 0u64);
            let mut buf = vec![0u8; 4096];
            let mut i = fastrand::usize(..queries.len().max(1)) + w;
            let mut id: u16 = fastrand::u16(..);
            while Instant::now() < end {
                let mut q = queries[i % queries.len()].clone();
                i += 1;
                id = id.wrapping_add(1);
                q[0..2].copy_from_slice(&id.to_be_bytes());
                let t0 = Instant::now();
                if sock.send(&q).await.is_err() {
                    continue;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                        Ok(Ok(n)) if n >= 4 && buf[0..2] == id.to_be_bytes() => {
                            lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            if buf[3] & 0x0f != rcode {
                                wrong += 1;
                            }
                            break;
                        }
                        Ok(Ok(_)) => continue, // a late answer to an earlier query
                        _ => {
                            timeouts += 1;
                            break;
                        }
                    }
                }
            }
            (lat, timeouts, wrong)
        }));
    }
    let (mut lat, mut timeouts, mut wrong) = (vec![], 0, 0);
    for t in tasks {
        let (l, t, w) = t.await.expect("a load task");
        lat.extend(l);
        timeouts += t;
        wrong += w;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 };
    LoadResult { answered: lat.len() as u64, timeouts, wrong_rcode: wrong, secs, p50_us: pct(0.50), p99_us: pct(0.99) }
}

/// [`load`] on a thread of its own with a single-threaded runtime, inside the network namespace
/// `netns` when given.
pub fn load_on_thread(netns: Option<PathBuf>, server: SocketAddr, queries: Arc<Vec<Vec<u8>>>, rcode: u8, concurrency: usize, duration: Duration) -> LoadResult {
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&ns).expect("open the pod's netns");
            // SAFETY: setns on an open namespace file, for this thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns: {}", std::io::Error::last_os_error());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, load(server, queries, rcode, concurrency, duration))
    })
    .join()
    .expect("the load thread")
}

/// The objects of the benchmark: `n` Services (the last `headless` of them headless), each with
/// an EndpointSlice of `per` endpoints.
pub fn objects(n: usize, headless: usize, per: usize) -> Vec<serde_json::Value> {
    let mut out = vec![];
    for i in 0..n {
        let is_headless = i >= n - headless;
        let name = if is_headless { format!("hl-{i}") } else { format!("svc-{i}") };
        let mut spec = json!({"ports": [{"name": "http", "port": 80}]});
        if is_headless {
            spec["clusterIP"] = json!("None");
        }
        out.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}));
        let endpoints: Vec<_> = (0..per)
            .map(|j| {
                let k = i * per + j;
                json!({"addresses": [format!("10.252.{}.{}", k / 250, k % 250 + 1)], "conditions": {"ready": true}})
            })
            .collect();
        out.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": endpoints}));
    }
    out
}

fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks + m.hblkhd
}

/// Heap bytes the DNS index takes for `objects`.
pub fn index_bytes(objects: &[serde_json::Value]) -> usize {
    let services: Vec<k8s_openapi::api::core::v1::Service> =
        objects.iter().filter(|o| o["kind"] == "Service").map(|o| serde_json::from_value(o.clone()).expect("a Service")).collect();
    let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> =
        objects.iter().filter(|o| o["kind"] == "EndpointSlice").map(|o| serde_json::from_value(o.clone()).expect("a slice")).collect();
    let before = heap_in_use();
    let mut r = berth::dns::index::Records::new("cluster.local");
    r.replace_services(&services);
    r.replace_slices(&slices);
    let after = heap_in_use();
    assert_eq!(r.counts().0, services.len());
    let used = after.saturating_sub(before);
    drop(r);
    used
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A process of a pod of `d` (in the pod's network namespace): the first pid under its cgroup root
/// whose network namespace differs from ours.
fn pod_netns(d: &Daemon) -> Option<PathBuf> {
    let own = std::fs::read_link("/proc/self/ns/net").ok()?;
    let mut dirs = vec![];
    for root in std::fs::read_dir("/sys/fs/cgroup").ok()?.flatten().map(|e| e.path()).chain([PathBuf::from("/sys/fs/cgroup")]) {
        dirs.push(root.join(d.cgroup_root().trim_start_matches('/')));
    }
    while let Some(dir) = dirs.pop() {
        for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
            let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if std::fs::read_link(&ns).ok().is_some_and(|l| l != own) {
                return Some(ns);
            }
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            }
        }
    }
    None
}

/// One case: its name, its queries, the rcode they get, the network namespace it runs in.
type Case<'a> = (&'a str, Vec<Vec<u8>>, u8, Option<PathBuf>);

/// Options of `berth-bench dns`.
pub struct Opts {
    pub services: usize,
    pub endpoints: usize,
    pub concurrency: usize,
    pub duration: Duration,
}

impl Opts {
    pub fn parse(args: &[String]) -> Opts {
        let get =
            |flag: &str, default: usize| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default);
        Opts {
            services: get("--services", 1000),
            endpoints: get("--endpoints", 10),
            concurrency: get("--concurrency", 32),
            duration: Duration::from_secs(get("--seconds", 10) as u64),
        }
    }
}

/// The benchmark; prints the table to stdout, progress to stderr.
pub async fn run(o: Opts) {
    let tmp = crate::TempDir::new("bench-dns");
    let upstream_ip: IpAddr = "127.0.251.53".parse().expect("an address");
    let upstream = FakeUpstream::start(upstream_ip, BTreeMap::from([("www.example.com.".to_string(), vec!["192.0.2.80".parse().expect("an address")])])).await;
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {upstream_ip}\n")).expect("resolv.conf");
    let dns_ip: IpAddr = "10.251.0.10".parse().expect("an address");
    let dns = SocketAddr::new(dns_ip, 53);
    eprintln!("berth-bench dns: starting berth server (cluster DNS {dns_ip})");
    let resolv_s = resolv.display().to_string();
    let d = Daemon::start_server("", &["--cluster-dns", "10.251.0.10", "--service-cidr", "10.251.0.0/20", "--resolv-conf", &resolv_s]).await;
    let pid = d.pid().expect("the server's pid");
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(120), "node Ready", |n| {
        n["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: {}, command: [sleep, '3600']}}\n",
        crate::kubelet::busybox()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod));
    let rss_before = rss_kb(pid);
    let headless = (o.services / 10).max(1);
    let objects = objects(o.services, headless, o.endpoints);
    eprintln!("berth-bench dns: creating {} Services with {} endpoints each", o.services, o.endpoints);
    let t0 = Instant::now();
    for chunk in objects.chunks(200) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
        d.kubectl_ok_in(&["create", "-f", "-"], Some(&list.to_string()));
    }
    let last = format!("hl-{}.default.svc.cluster.local.", o.services - 1);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(m) = query(dns, &last, RecordType::A, false, true).await {
            if m.answers.len() == o.endpoints {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the DNS did not answer {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("berth-bench dns: created and indexed in {:.1} s", t0.elapsed().as_secs_f64());
    d.kubectl_until(&["get", "pod", "client"], Duration::from_secs(120), "client Running", |p| p["status"]["phase"] == "Running");
    let netns = pod_netns(&d);
    let rss_after = rss_kb(pid);

    let clusterip: Vec<String> = (0..o.services - headless).map(|i| format!("svc-{i}.default.svc.cluster.local.")).collect();
    let headless_names: Vec<String> = (o.services - headless..o.services).map(|i| format!("hl-{i}.default.svc.cluster.local.")).collect();
    let misses: Vec<String> = (0..o.services - headless).map(|i| format!("svc-{i}.default.svc.cluster.local.default.svc.cluster.local.")).collect();
    let mut asked = 0;
    let cases: Vec<Case> = vec![
        ("A, ClusterIP Service (host)", queries(&clusterip, RecordType::A), 0, None),
        ("A, headless Service, 10 endpoints (host)", queries(&headless_names, RecordType::A), 0, None),
        ("NXDOMAIN, search-path miss (host)", queries(&misses, RecordType::A), 3, None),
        ("A, upstream name from the cache (host)", queries(&["www.example.com.".to_string()], RecordType::A), 0, None),
        ("A, ClusterIP Service (from a pod)", queries(&clusterip, RecordType::A), 0, netns.clone()),
    ];
    let mut rows = vec![];
    for (name, qs, rcode, ns) in cases {
        if ns.is_none() && name.contains("pod") {
            eprintln!("berth-bench dns: no pod network namespace found; skipping {name}");
            continue;
        }
        if name.contains("upstream") {
            // in the cache before the clock starts (it keeps an answer at most 30 s)
            query(dns, "www.example.com.", RecordType::A, false, true).await.expect("the upstream name");
        }
        eprintln!("berth-bench dns: {name}");
        let upstream_before = upstream.total();
        let r = load_on_thread(ns, dns, Arc::new(qs), rcode, o.concurrency, o.duration);
        if name.contains("upstream") {
            asked = upstream.total() - upstream_before;
        }
        rows.push((name, r));
    }
    let index = index_bytes(&objects);

    println!(
        "\nberth-bench dns: {} Services ({} headless), {} endpoints each; {} queries in flight, {} s per case",
        o.services,
        headless,
        o.endpoints,
        o.concurrency,
        o.duration.as_secs()
    );
    println!("{:<44} {:>11} {:>9} {:>9} {:>9} {:>7}", "case", "queries/s", "p50 µs", "p99 µs", "timeouts", "wrong");
    for (name, r) in &rows {
        println!("{:<44} {:>11.0} {:>9.0} {:>9.0} {:>9} {:>7}", name, r.qps(), r.p50_us, r.p99_us, r.timeouts, r.wrong_rcode);
    }
    println!("upstream queries during the cached case: {asked} (an answer is kept at most 30 s)");
    println!("server RSS: {} MiB before the Services, {} MiB after (apiserver, controllers, node and DNS together)", rss_before / 1024, rss_after / 1024);
    println!("DNS index heap for these objects: {:.2} MiB ({} bytes)", index as f64 / (1 << 20) as f64, index);
    drop(d);
    drop(tmp);
}
