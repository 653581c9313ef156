//! The cluster store benchmark (run by hack/bench-store.sh): the embedded store and a Debian
//! etcd single member on loopback (etcd's default settings, its own temp dir, killed at the
//! end), driven through the same `Store` trait, side by side:
//!
//! - sequential create latency, p50 / p99
//! - writes per second with 1, 16 and 64 concurrent writers (compare-and-swap updates), and the
//!   p99 write latency at 16
//! - get latency; list of 1000 keys latency
//! - watch delivery latency with 1000 watchers on one prefix
//! - file size after 1,000,000 updates of 1000 keys with compaction, against the live data
//! - memory: the resident size of this process for the embedded store, of etcd for etcd
//!
//! Both stores make every acknowledged write durable: the embedded store fsyncs each group
//! commit (SQLite WAL, synchronous=FULL), etcd fsyncs its log for each batch.
//!
//! The two run interleaved — each measurement alternates between them in rounds, and the
//! million updates run in alternating chunks — so a change in the machine's load during the
//! run weighs on both alike.
//!
//! Usage: berth-store-bench [--quick] [--updates N]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_store::etcd_process::{dir_bytes, rss_bytes, EtcdCluster};
use berth_store::{EmbeddedConfig, EmbeddedStore, EtcdConfig, EtcdStore, KeyValue, ListOptions, Store, StoreError, WatchEvent, WatchOptions};
use bytes::Bytes;

type Error = Box<dyn std::error::Error + Send + Sync>;

const VALUE_BYTES: usize = 1024;

struct Settings {
    rounds: usize,
    sequential: usize,
    window: Duration,
    gets: usize,
    lists: usize,
    watchers: usize,
    watch_writes: usize,
    updates: u64,
    keys: usize,
}

/// One store under test.
struct Backend {
    name: String,
    store: Arc<dyn Store>,
    r: Results,
}

#[derive(Default, Clone)]
struct Results {
    create: Vec<Duration>,
    /// (writers, writes, seconds, latencies)
    writes: Vec<(usize, u64, f64, Vec<Duration>)>,
    get: Vec<Duration>,
    list: Vec<Duration>,
    watch: Vec<Duration>,
    churn_secs: f64,
    live_bytes: u64,
    file_bytes: u64,
    log_bytes: u64,
    rss: u64,
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut updates = None;
    let mut probe = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--updates" => updates = Some(args.next().ok_or("--updates N")?.parse()?),
            "--memory-probe" => probe = Some(PathBuf::from(args.next().ok_or("--memory-probe DIR")?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if let Some(dir) = probe {
        return runtime.block_on(memory_probe(dir));
    }
    let s = Settings {
        rounds: if quick { 2 } else { 4 },
        sequential: if quick { 400 } else { 2000 },
        window: Duration::from_secs(if quick { 2 } else { 6 }),
        gets: if quick { 1000 } else { 5000 },
        lists: if quick { 40 } else { 200 },
        watchers: 1000,
        watch_writes: if quick { 20 } else { 100 },
        updates: updates.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        keys: 1000,
    };
    runtime.block_on(run(s))
}

async fn run(s: Settings) -> Result<(), Error> {
    let version = etcd_version();
    // Latency, throughput, watch: both stores open, each measurement alternating between them.
    let dir_a = tempdir("berth-store-bench-a")?;
    let embedded_a = open_embedded(&dir_a.0).await?;
    let etcd_a = EtcdCluster::single(&[]).await?;
    let mut backends = vec![
        Backend { name: "embedded".into(), store: Arc::new(embedded_a.clone()), r: Results::default() },
        Backend { name: format!("etcd {version}"), store: Arc::new(connect(&etcd_a).await?), r: Results::default() },
    ];
    phases(&s, &mut backends).await?;
    for b in &backends {
        b.store.close().await;
    }
    drop(etcd_a);
    drop(dir_a);

    // A million updates of 1000 keys, in alternating chunks, on fresh stores.
    let dir_b = tempdir("berth-store-bench-b")?;
    let embedded_b = open_embedded(&dir_b.0).await?;
    let etcd_b = EtcdCluster::single(&[]).await?;
    backends[0].store = Arc::new(embedded_b.clone());
    backends[1].store = Arc::new(connect(&etcd_b).await?);
    churn(&s, &mut backends).await?;

    let usage = settle(&embedded_b).await?;
    backends[0].r.file_bytes = usage.db_bytes;
    backends[0].r.log_bytes = usage.wal_bytes;
    let member = etcd_b.first();
    backends[1].r.file_bytes = std::fs::metadata(member.data_dir().join("member/snap/db"))?.len();
    backends[1].r.log_bytes = dir_bytes(&member.data_dir().join("member/wal"));

    // Memory after the same workload on each: the embedded store in a process of its own.
    eprintln!("[memory] the same workload on each store");
    embedded_b.close().await;
    backends[0].r.rss = probe_child(&dir_b.0)?;
    memory_workload(backends[1].store.clone()).await?;
    backends[1].r.rss = member.rss_bytes().unwrap_or(0);
    backends[1].store.close().await;
    print_table(&s, &backends);
    Ok(())
}

async fn open_embedded(dir: &std::path::Path) -> Result<EmbeddedStore, Error> {
    let mut config = EmbeddedConfig::new(dir);
    config.compaction_interval = None;
    Ok(EmbeddedStore::open(config).await?)
}

async fn connect(cluster: &EtcdCluster) -> Result<EtcdStore, Error> {
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.compaction_interval = None;
    Ok(EtcdStore::connect(config).await?)
}

/// Waits until the embedded store has finished its background work (vacuum, log truncation).
async fn settle(store: &EmbeddedStore) -> Result<berth_store::DiskUsage, Error> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = store.disk_usage()?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = store.disk_usage()?;
        if (now == last && now.wal_bytes == 0) || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

fn etcd_version() -> String {
    let bin = berth_store::etcd_process::etcd_binary().unwrap_or_else(|_| "etcd".into());
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_string()))
        .unwrap_or_default()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(name: &str) -> std::io::Result<TempDir> {
    let d = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(TempDir(d))
}

fn value(n: u64) -> Bytes {
    let mut v = format!("{n:020}").into_bytes();
    v.resize(VALUE_BYTES, b'v');
    Bytes::from(v)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn phases(s: &Settings, backends: &mut [Backend]) -> Result<(), Error> {
    for round in 0..s.rounds {
        for b in backends.iter_mut() {
            eprintln!("[{}] round {round}: sequential creates", b.name);
            let p = b.store.prefix().to_string();
            for i in 0..s.sequential / s.rounds {
                let t = Instant::now();
                b.store.create(&format!("{p}seq/r{round}-k{i:06}"), value(i as u64), None).await?;
                b.r.create.push(t.elapsed());
            }
        }
    }
    for writers in [1usize, 16, 64] {
        for round in 0..s.rounds {
            for b in backends.iter_mut() {
                eprintln!("[{}] round {round}: {writers} writers", b.name);
                let p = format!("{}w{writers}-r{round}/", b.store.prefix());
                let (n, secs, lat) = concurrent_writes(&b.store, &p, writers, s.window / s.rounds as u32).await?;
                match b.r.writes.iter_mut().find(|w| w.0 == writers) {
                    Some(w) => {
                        w.1 += n;
                        w.2 += secs;
                        w.3.extend(lat);
                    }
                    None => b.r.writes.push((writers, n, secs, lat)),
                }
            }
        }
    }
    for b in backends.iter_mut() {
        let p = format!("{}list/", b.store.prefix());
        fill(&b.store, &p, s.keys).await?;
    }
    for round in 0..s.rounds {
        for b in backends.iter_mut() {
            eprintln!("[{}] round {round}: gets and lists", b.name);
            let p = b.store.prefix().to_string();
            let per_round = s.sequential / s.rounds;
            for i in 0..s.gets / s.rounds {
                let key = format!("{p}seq/r{round}-k{:06}", (i * 7919) % per_round);
                let t = Instant::now();
                let got = b.store.get(&key, None).await?;
                b.r.get.push(t.elapsed());
                if got.is_none() {
                    return Err(format!("{key} missing").into());
                }
            }
            let lp = format!("{p}list/");
            for _ in 0..s.lists / s.rounds {
                let t = Instant::now();
                let page = b.store.list(&lp, ListOptions::default()).await?;
                b.r.list.push(t.elapsed());
                if page.kvs.len() != s.keys {
                    return Err(format!("listed {} keys", page.kvs.len()).into());
                }
            }
        }
    }
    for round in 0..s.rounds {
        for b in backends.iter_mut() {
            eprintln!("[{}] round {round}: {} watchers", b.name, s.watchers);
            let p = format!("{}watched-{round}/", b.store.prefix());
            let lat = watch_delivery(&b.store, &p, s.watchers, s.watch_writes / s.rounds).await?;
            b.r.watch.extend(lat);
        }
    }
    Ok(())
}

/// Creates `n` keys under `prefix` from 64 writers.
async fn fill(store: &Arc<dyn Store>, prefix: &str, n: usize) -> Result<Vec<KeyValue>, Error> {
    let mut tasks = Vec::new();
    for t in 0..64 {
        let (store, prefix) = (store.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (t..n).step_by(64) {
                out.push(store.create(&format!("{prefix}k{i:06}"), value(i as u64), None).await?);
            }
            Ok::<_, StoreError>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(all)
}

/// `writers` tasks update their own keys (compare-and-swap) for `window`: writes, seconds and
/// latencies.
async fn concurrent_writes(store: &Arc<dyn Store>, prefix: &str, writers: usize, window: Duration) -> Result<(u64, f64, Vec<Duration>), Error> {
    let kvs = fill(store, prefix, writers * 4).await?;
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = Vec::new();
    for t in 0..writers {
        let store = store.clone();
        let mut mine: Vec<KeyValue> = kvs.iter().skip(t).step_by(writers).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let i = (n as usize) % mine.len();
                let t0 = Instant::now();
                let kv = store.update(&mine[i].key, value(n), mine[i].mod_revision, None).await?;
                lat.push(t0.elapsed());
                mine[i] = kv;
                n += 1;
            }
            Ok::<_, StoreError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((lat.len() as u64, start.elapsed().as_secs_f64(), lat))
}

/// `watchers` watches on one prefix; `writes` updates, one at a time, each waited for until
/// every watcher has it. Latency from the start of the write to each watcher's receipt.
async fn watch_delivery(store: &Arc<dyn Store>, prefix: &str, watchers: usize, writes: usize) -> Result<Vec<Duration>, Error> {
    let key = format!("{prefix}key");
    let mut kv = store.create(&key, value(0), None).await?;
    let from = kv.mod_revision;
    let started: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let received = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(watchers * writes)));
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut w = store.watch(prefix, from, WatchOptions::default()).await?;
        let (started, received, latencies, notify) = (started.clone(), received.clone(), latencies.clone(), notify.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < writes {
                match w.next().await {
                    Some(Ok(WatchEvent::Updated { .. })) => {
                        let now = Instant::now();
                        if let Some(t0) = *started.lock().map_err(|_| "poisoned")? {
                            latencies.lock().map_err(|_| "poisoned")?.push(now - t0);
                        }
                        got += 1;
                        if received.fetch_add(1, Ordering::SeqCst) + 1 == watchers {
                            notify.notify_one();
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("watch: {e}")),
                    None => return Err("watch ended".to_string()),
                }
            }
            Ok(())
        }));
    }
    for n in 1..=writes {
        received.store(0, Ordering::SeqCst);
        *started.lock().map_err(|_| "poisoned")? = Some(Instant::now());
        kv = store.update(&key, value(n as u64), kv.mod_revision, None).await?;
        tokio::time::timeout(Duration::from_secs(60), async {
            while received.load(Ordering::SeqCst) < watchers {
                notify.notified().await;
            }
        })
        .await
        .map_err(|_| "watchers did not all receive a write within 60 s")?;
    }
    for t in tasks {
        t.await?.map_err(|e| -> Error { e.into() })?;
    }
    let lat = latencies.lock().map_err(|_| "poisoned")?.clone();
    Ok(lat)
}

/// `updates` updates of `keys` keys from 64 writers on each store, in ten alternating chunks;
/// before each chunk the history older than the previous chunk is compacted away (as the
/// apiserver keeps its last compaction interval), and at the end all of it.
async fn churn(s: &Settings, backends: &mut [Backend]) -> Result<(), Error> {
    let mut state = Vec::new();
    for b in backends.iter() {
        let p = format!("{}churn/", b.store.prefix());
        state.push((fill(&b.store, &p, s.keys).await?, None::<i64>));
    }
    let chunks = 10;
    for chunk in 0..chunks {
        for (b, (kvs, previous)) in backends.iter_mut().zip(state.iter_mut()) {
            eprintln!("[{}] updates, chunk {chunk} of {chunks}", b.name);
            if let Some(rev) = *previous {
                b.store.compact(rev).await?;
            }
            *previous = Some(b.store.current_revision().await?);
            let start = Instant::now();
            *kvs = update_all(&b.store, std::mem::take(kvs), s.updates / chunks).await?;
            b.r.churn_secs += start.elapsed().as_secs_f64();
        }
    }
    for (b, (kvs, _)) in backends.iter_mut().zip(state.iter()) {
        b.store.compact(b.store.current_revision().await?).await?;
        b.r.live_bytes = kvs.iter().map(|kv| (kv.key.len() + kv.value.len()) as u64).sum();
    }
    Ok(())
}

/// `total` compare-and-swap updates spread over the keys, from 64 writers.
async fn update_all(store: &Arc<dyn Store>, kvs: Vec<KeyValue>, total: u64) -> Result<Vec<KeyValue>, Error> {
    let done = Arc::new(AtomicU64::new(0));
    let writers = 64;
    let mut tasks = Vec::new();
    for t in 0..writers {
        let (store, done) = (store.clone(), done.clone());
        let mut mine: Vec<KeyValue> = kvs.iter().skip(t).step_by(writers).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while done.fetch_add(1, Ordering::SeqCst) < total {
                let i = (n as usize) % mine.len();
                mine[i] = store.update(&mine[i].key, value(n), mine[i].mod_revision, None).await?;
                n += 1;
            }
            Ok::<_, StoreError>(mine)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await??);
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// What both stores do before their memory is read: list everything, 1000 watchers seeing 20
/// writes, 20,000 updates from 64 writers.
async fn memory_workload(store: Arc<dyn Store>) -> Result<(), Error> {
    let p = format!("{}churn/", store.prefix());
    let kvs = store.list(&p, ListOptions::default()).await?.kvs;
    watch_delivery(&store, &format!("{}memory/", store.prefix()), 1000, 20).await?;
    update_all(&store, kvs, 20_000).await?;
    Ok(())
}

/// The memory of a process that opens the embedded store in `dir` and runs the workload.
fn probe_child(dir: &std::path::Path) -> Result<u64, Error> {
    let out = std::process::Command::new(std::env::current_exe()?).arg("--memory-probe").arg(dir).stderr(std::process::Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err("the memory probe failed".into());
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(text.trim().parse()?)
}

async fn memory_probe(dir: PathBuf) -> Result<(), Error> {
    let store = open_embedded(&dir).await?;
    memory_workload(Arc::new(store.clone())).await?;
    println!("{}", rss_bytes(std::process::id()).unwrap_or(0));
    store.close().await;
    Ok(())
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2}")
    } else {
        format!("{m:.1}")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn rate(r: &Results, writers: usize) -> f64 {
    r.writes.iter().find(|w| w.0 == writers).map_or(0.0, |w| w.1 as f64 / w.2.max(1e-9))
}

fn write_p99(r: &Results, writers: usize) -> Duration {
    r.writes.iter().find(|w| w.0 == writers).map_or(Duration::ZERO, |w| pct(&w.3, 0.99))
}

fn print_table(s: &Settings, all: &[Backend]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Results) -> String| {
        rows.push((name.to_string(), all.iter().map(|b| f(&b.r)).collect()));
    };
    row("sequential create p50 / p99 (ms)", &|r| format!("{} / {}", ms(pct(&r.create, 0.5)), ms(pct(&r.create, 0.99))));
    for w in [1usize, 16, 64] {
        row(&format!("writes/s, {w} writer{}", if w > 1 { "s" } else { "" }), &|r| format!("{:.0}", rate(r, w)));
    }
    row("write p99 at 1 / 16 / 64 writers (ms)", &|r| format!("{} / {} / {}", ms(write_p99(r, 1)), ms(write_p99(r, 16)), ms(write_p99(r, 64))));
    row("get p50 / p99 (ms)", &|r| format!("{} / {}", ms(pct(&r.get, 0.5)), ms(pct(&r.get, 0.99))));
    row(&format!("list {} keys p50 / p99 (ms)", s.keys), &|r| format!("{} / {}", ms(pct(&r.list, 0.5)), ms(pct(&r.list, 0.99))));
    row(&format!("watch delivery, {} watchers, p50 / p99 (ms)", s.watchers), &|r| format!("{} / {}", ms(pct(&r.watch, 0.5)), ms(pct(&r.watch, 0.99))));
    row(&format!("updates/s over {} updates, 64 writers", s.updates), &|r| format!("{:.0}", s.updates as f64 / r.churn_secs.max(1e-9)));
    row("live data after the updates", &|r| mib(r.live_bytes));
    row("file after compaction (+ its log)", &|r| format!("{} (+ {})", mib(r.file_bytes), mib(r.log_bytes)));
    row("file / live data", &|r| format!("{:.2}x", r.file_bytes as f64 / r.live_bytes.max(1) as f64));
    row("memory after the same workload (RSS)", &|r| mib(r.rss));
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let cols: Vec<usize> = (0..all.len()).map(|i| rows.iter().map(|r| r.1[i].len()).chain([all[i].name.len()]).max().unwrap_or(0)).collect();
    let mut header = format!("| {:width$} |", "");
    let mut rule = format!("|{}|", "-".repeat(width + 2));
    for (i, b) in all.iter().enumerate() {
        header += &format!(" {:>w$} |", b.name, w = cols[i]);
        rule += &format!("{}:|", "-".repeat(cols[i] + 1));
    }
    println!("{header}\n{rule}");
    for (name, vals) in &rows {
        let mut line = format!("| {name:width$} |");
        for (i, v) in vals.iter().enumerate() {
            line += &format!(" {v:>w$} |", w = cols[i]);
        }
        println!("{line}");
    }
    if let [e, d] = all {
        let (e, d) = (&e.r, &d.r);
        let ratio = e.file_bytes as f64 / e.live_bytes.max(1) as f64;
        println!();
        println!(
            "target: embedded >= 3x etcd's writes/s at 16 writers: {:.1}x, {}",
            rate(e, 16) / rate(d, 16).max(1.0),
            verdict(rate(e, 16) >= 3.0 * rate(d, 16))
        );
        let p99_ok = [1, 16, 64].iter().all(|w| write_p99(e, *w) <= write_p99(d, *w));
        println!("target: embedded write p99 <= etcd's at 1, 16 and 64 writers: {}", verdict(p99_ok));
        println!("target: embedded file <= 2x live data after compaction: {ratio:.2}x, {}", verdict(ratio <= 2.0));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
