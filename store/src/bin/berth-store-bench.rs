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
//! Usage: berth-store-bench [--quick] [--updates N] [--only embedded|etcd]

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
    sequential: usize,
    window: Duration,
    gets: usize,
    lists: usize,
    watchers: usize,
    watch_writes: usize,
    updates: u64,
    keys: usize,
}

#[derive(Default, Clone)]
struct Results {
    name: String,
    create_p50: Duration,
    create_p99: Duration,
    writes: Vec<(usize, f64, Duration)>,
    get_p50: Duration,
    get_p99: Duration,
    list_p50: Duration,
    list_p99: Duration,
    watch_p50: Duration,
    watch_p99: Duration,
    live_bytes: u64,
    file_bytes: u64,
    log_bytes: u64,
    file_note: String,
    churn_rate: f64,
    rss: u64,
    client_rss: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut updates = None;
    let mut only = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--updates" => updates = Some(args.next().ok_or("--updates N")?.parse()?),
            "--only" => only = Some(args.next().ok_or("--only embedded|etcd")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let s = Settings {
        sequential: if quick { 300 } else { 2000 },
        window: Duration::from_secs(if quick { 2 } else { 5 }),
        gets: if quick { 1000 } else { 5000 },
        lists: if quick { 30 } else { 200 },
        watchers: 1000,
        watch_writes: if quick { 20 } else { 100 },
        updates: updates.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        keys: 1000,
    };
    let mut all = Vec::new();
    if only.as_deref() != Some("etcd") {
        all.push(run_embedded(&s).await?);
    }
    if only.as_deref() != Some("embedded") {
        all.push(run_etcd(&s).await?);
    }
    print_table(&s, &all);
    Ok(())
}

fn base_dir() -> PathBuf {
    std::env::temp_dir()
}

async fn run_embedded(s: &Settings) -> Result<Results, Error> {
    let dir = tempdir("berth-store-bench-a")?;
    let mut config = EmbeddedConfig::new(&dir.0);
    config.compaction_interval = None;
    let store = EmbeddedStore::open(config).await?;
    let mut r = Results { name: "embedded".into(), ..Default::default() };
    phases(&store, s, &mut r).await?;
    store.close().await;

    let dir2 = tempdir("berth-store-bench-b")?;
    let mut config = EmbeddedConfig::new(&dir2.0);
    config.compaction_interval = None;
    let store = EmbeddedStore::open(config).await?;
    churn(&store, s, &mut r).await?;
    // Wait until the store has settled: vacuum done, log truncated at rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = store.disk_usage()?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = store.disk_usage()?;
        if (now == last && now.wal_bytes == 0) || Instant::now() > deadline {
            last = now;
            break;
        }
        last = now;
    }
    r.file_bytes = last.db_bytes;
    r.log_bytes = last.wal_bytes;
    r.file_note = "store.db (+ store.db-wal)".into();
    r.rss = rss_bytes(std::process::id()).unwrap_or(0);
    store.close().await;
    Ok(r)
}

async fn run_etcd(s: &Settings) -> Result<Results, Error> {
    let version = etcd_version();
    let mut r = Results { name: format!("etcd {version}"), ..Default::default() };
    {
        let cluster = EtcdCluster::single(&[]).await?;
        let store = connect(&cluster).await?;
        phases(&store, s, &mut r).await?;
        store.close().await;
    }
    let cluster = EtcdCluster::single(&[]).await?;
    let store = connect(&cluster).await?;
    churn(&store, s, &mut r).await?;
    let member = cluster.first();
    r.file_bytes = std::fs::metadata(member.data_dir().join("member/snap/db"))?.len();
    r.log_bytes = dir_bytes(&member.data_dir().join("member/wal"));
    r.file_note = "member/snap/db (+ member/wal)".into();
    r.rss = member.rss_bytes().unwrap_or(0);
    r.client_rss = rss_bytes(std::process::id()).unwrap_or(0);
    store.close().await;
    Ok(r)
}

async fn connect(cluster: &EtcdCluster) -> Result<EtcdStore, Error> {
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.compaction_interval = None;
    Ok(EtcdStore::connect(config).await?)
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
    let d = base_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(TempDir(d))
}

fn value(n: u64) -> Bytes {
    let mut v = format!("{n:020}").into_bytes();
    v.resize(VALUE_BYTES, b'v');
    Bytes::from(v)
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn phases<S: Store + Clone + 'static>(store: &S, s: &Settings, r: &mut Results) -> Result<(), Error> {
    let p = store.prefix().to_string();
    eprintln!("[{}] sequential creates", r.name);
    let mut lat = Vec::with_capacity(s.sequential);
    for i in 0..s.sequential {
        let t = Instant::now();
        store.create(&format!("{p}seq/k{i:06}"), value(i as u64), None).await?;
        lat.push(t.elapsed());
    }
    r.create_p50 = pct(lat.clone(), 0.5);
    r.create_p99 = pct(lat, 0.99);

    for writers in [1usize, 16, 64] {
        eprintln!("[{}] {writers} writers", r.name);
        let (rate, p99) = concurrent_writes(store, &format!("{p}w{writers}/"), writers, s.window).await?;
        r.writes.push((writers, rate, p99));
    }

    eprintln!("[{}] gets", r.name);
    let mut lat = Vec::with_capacity(s.gets);
    for i in 0..s.gets {
        let key = format!("{p}seq/k{:06}", (i * 7919) % s.sequential);
        let t = Instant::now();
        let got = store.get(&key, None).await?;
        lat.push(t.elapsed());
        if got.is_none() {
            return Err(format!("{key} missing").into());
        }
    }
    r.get_p50 = pct(lat.clone(), 0.5);
    r.get_p99 = pct(lat, 0.99);

    eprintln!("[{}] lists", r.name);
    let lp = format!("{p}list/");
    fill(store, &lp, s.keys).await?;
    let mut lat = Vec::with_capacity(s.lists);
    for _ in 0..s.lists {
        let t = Instant::now();
        let page = store.list(&lp, ListOptions::default()).await?;
        lat.push(t.elapsed());
        if page.kvs.len() != s.keys {
            return Err(format!("listed {} keys", page.kvs.len()).into());
        }
    }
    r.list_p50 = pct(lat.clone(), 0.5);
    r.list_p99 = pct(lat, 0.99);

    eprintln!("[{}] {} watchers", r.name, s.watchers);
    let (p50, p99) = watch_delivery(store, &format!("{p}watched/"), s.watchers, s.watch_writes).await?;
    r.watch_p50 = p50;
    r.watch_p99 = p99;
    Ok(())
}

/// Creates `n` keys under `prefix` from 64 writers.
async fn fill<S: Store + Clone + 'static>(store: &S, prefix: &str, n: usize) -> Result<Vec<KeyValue>, Error> {
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

/// `writers` tasks update their own keys (compare-and-swap) for `window`; writes/s and p99.
async fn concurrent_writes<S: Store + Clone + 'static>(store: &S, prefix: &str, writers: usize, window: Duration) -> Result<(f64, Duration), Error> {
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
    let elapsed = start.elapsed().as_secs_f64();
    Ok((lat.len() as f64 / elapsed, pct(lat, 0.99)))
}

/// `watchers` watches on one prefix; `writes` updates, one at a time, each waited for until
/// every watcher has it. Latency from the start of the write to each watcher's receipt.
async fn watch_delivery<S: Store + Clone + 'static>(store: &S, prefix: &str, watchers: usize, writes: usize) -> Result<(Duration, Duration), Error> {
    let key = format!("{prefix}key");
    let mut kv = store.create(&key, value(0), None).await?;
    let from = kv.mod_revision;
    let started: Arc<Mutex<Option<(i64, Instant)>>> = Arc::new(Mutex::new(None));
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
                    Some(Ok(WatchEvent::Updated { kv, .. })) => {
                        let now = Instant::now();
                        let start = *started.lock().map_err(|_| "poisoned")?;
                        if let Some((rev, t0)) = start {
                            if rev == kv.mod_revision || rev == 0 {
                                latencies.lock().map_err(|_| "poisoned")?.push(now - t0);
                            }
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
        let t0 = Instant::now();
        // The revision is not known before the write: watchers match any event while
        // the write is in flight (revision 0), then this one.
        *started.lock().map_err(|_| "poisoned")? = Some((0, t0));
        let wrote = store.update(&key, value(n as u64), kv.mod_revision, None).await?;
        *started.lock().map_err(|_| "poisoned")? = Some((wrote.mod_revision, t0));
        kv = wrote;
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
    Ok((pct(lat.clone(), 0.5), pct(lat, 0.99)))
}

/// `updates` updates of `keys` keys from 64 writers, compacting ten times on the way (keeping
/// a tenth of the history, as the apiserver keeps its last interval), then everything.
async fn churn<S: Store + Clone + 'static>(store: &S, s: &Settings, r: &mut Results) -> Result<(), Error> {
    eprintln!("[{}] {} updates of {} keys", r.name, s.updates, s.keys);
    let p = format!("{}churn/", store.prefix());
    let kvs = fill(store, &p, s.keys).await?;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let writers = 64;
    for t in 0..writers {
        let (store, done) = (store.clone(), done.clone());
        let mut mine: Vec<KeyValue> = kvs.iter().skip(t).step_by(writers).cloned().collect();
        let total = s.updates;
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
    let compactor = {
        let (store, done) = (store.clone(), done.clone());
        let (total, step) = (s.updates, s.updates / 10);
        tokio::spawn(async move {
            let mut previous = None;
            let mut next = step;
            while done.load(Ordering::SeqCst) < total {
                if done.load(Ordering::SeqCst) >= next {
                    next += step;
                    if let Some(rev) = previous {
                        store.compact(rev).await?;
                    }
                    previous = Some(store.current_revision().await?);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, StoreError>(())
        })
    };
    let mut live = Vec::new();
    for t in tasks {
        live.extend(t.await??);
    }
    compactor.await??;
    r.churn_rate = s.updates as f64 / start.elapsed().as_secs_f64();
    store.compact(store.current_revision().await?).await?;
    r.live_bytes = live.iter().map(|kv| (kv.key.len() + kv.value.len()) as u64).sum();
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

fn print_table(s: &Settings, all: &[Results]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Results) -> String| {
        rows.push((name.to_string(), all.iter().map(f).collect()));
    };
    row("sequential create p50 / p99 (ms)", &|r| format!("{} / {}", ms(r.create_p50), ms(r.create_p99)));
    for (i, w) in [1, 16, 64].iter().enumerate() {
        row(&format!("writes/s, {w} writer{}", if *w > 1 { "s" } else { "" }), &|r| r.writes.get(i).map(|x| format!("{:.0}", x.1)).unwrap_or_default());
    }
    row("write p99 at 16 writers (ms)", &|r| r.writes.get(1).map(|x| ms(x.2)).unwrap_or_default());
    row("get p50 / p99 (ms)", &|r| format!("{} / {}", ms(r.get_p50), ms(r.get_p99)));
    row("list 1000 keys p50 / p99 (ms)", &|r| format!("{} / {}", ms(r.list_p50), ms(r.list_p99)));
    row(&format!("watch delivery, {} watchers, p50 / p99 (ms)", s.watchers), &|r| format!("{} / {}", ms(r.watch_p50), ms(r.watch_p99)));
    row(&format!("updates/s during {} updates (64 writers)", s.updates), &|r| format!("{:.0}", r.churn_rate));
    row("live data after the updates", &|r| mib(r.live_bytes));
    row("file after compaction", &|r| format!("{} (+ {} log)", mib(r.file_bytes), mib(r.log_bytes)));
    row("file / live data", &|r| format!("{:.2}x", r.file_bytes as f64 / r.live_bytes.max(1) as f64));
    row("memory (RSS)", &|r| {
        if r.client_rss > 0 {
            format!("{} (client {})", mib(r.rss), mib(r.client_rss))
        } else {
            format!("{} (whole process)", mib(r.rss))
        }
    });
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let cols: Vec<usize> = (0..all.len()).map(|i| rows.iter().map(|r| r.1[i].len()).chain([all[i].name.len()]).max().unwrap_or(0)).collect();
    let mut header = format!("| {:width$} |", "");
    let mut rule = format!("|{}|", "-".repeat(width + 2));
    for (i, r) in all.iter().enumerate() {
        header += &format!(" {:>w$} |", r.name, w = cols[i]);
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
        let e16 = e.writes.get(1).map_or(0.0, |x| x.1);
        let d16 = d.writes.get(1).map_or(0.0, |x| x.1);
        let p99e = e.writes.get(1).map_or(Duration::ZERO, |x| x.2);
        let p99d = d.writes.get(1).map_or(Duration::ZERO, |x| x.2);
        let ratio = e.file_bytes as f64 / e.live_bytes.max(1) as f64;
        println!();
        println!("target: embedded >= 3x etcd writes/s at 16 writers: {:.1}x {}", e16 / d16.max(1.0), verdict(e16 >= 3.0 * d16));
        println!(
            "target: embedded write p99 <= etcd's (sequential {} vs {} ms, 16 writers {} vs {} ms): {}",
            ms(e.create_p99),
            ms(d.create_p99),
            ms(p99e),
            ms(p99d),
            verdict(e.create_p99 <= d.create_p99 && p99e <= p99d)
        );
        println!("target: embedded file <= 2x live data after compaction: {ratio:.2}x {}", verdict(ratio <= 2.0));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
