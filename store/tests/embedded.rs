//! The embedded store: the conformance suite, plus what only it has — a data dir lock, reopen,
//! slow-watcher cut-off, bounded file size under endless rewrites, and the kill -9 crash test.

mod common;
#[macro_use]
mod conformance;

conformance_suite!(common::embedded);

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use berth_store::{EmbeddedStore, ListOptions, Store, StoreError, WatchEvent, WatchOptions};
use bytes::Bytes;
use common::{b, changes_through, embedded_config, temp_dir, wait_until, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_keeps_its_data_and_continues_the_revisions() {
    let dir = temp_dir();
    let s = EmbeddedStore::open(embedded_config(dir.path())).await.unwrap();
    let a = s.create("/registry/a", b("1"), None).await.unwrap();
    let a = s.update("/registry/a", b("2"), a.mod_revision, None).await.unwrap();
    let bk = s.create("/registry/b", b("1"), None).await.unwrap();
    s.delete("/registry/b", None).await.unwrap();
    let before = s.list("/registry/", ListOptions::default()).await.unwrap();
    s.close().await;
    assert!(matches!(s.get("/registry/a", None).await, Err(StoreError::Unavailable(_))));

    let s = EmbeddedStore::open(embedded_config(dir.path())).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 4);
    assert_eq!(s.list("/registry/", ListOptions::default()).await.unwrap(), before);
    assert_eq!(s.get("/registry/b", Some(bk.mod_revision)).await.unwrap(), Some(bk));
    let c = s.create("/registry/c", b("1"), None).await.unwrap();
    assert_eq!(c.mod_revision, 5);
    let mut w = s.watch("/registry/", 0, WatchOptions::default()).await.unwrap();
    let events = changes_through(&mut w, 5).await;
    assert_eq!(events.len(), 5);
    assert_eq!(events[1], WatchEvent::Updated { kv: a, prev: events_kv(&events[0]) });
    s.close().await;
}

fn events_kv(e: &WatchEvent) -> berth_store::KeyValue {
    match e {
        WatchEvent::Created { kv } | WatchEvent::Updated { kv, .. } => kv.clone(),
        other => panic!("no value in {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_dir_is_refused() {
    let dir = temp_dir();
    let first = EmbeddedStore::open(embedded_config(dir.path())).await.unwrap();
    match EmbeddedStore::open(embedded_config(dir.path())).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("in use"), "{m}"),
        Ok(_) => panic!("two stores opened the same dir"),
        Err(e) => panic!("unexpected {e}"),
    }
    first.close().await;
    let second = EmbeddedStore::open(embedded_config(dir.path())).await.unwrap();
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_and_never_blocks_writers() {
    let f = common::embedded_with(|mut c| {
        c.watch_ring = 64;
        c
    })
    .await;
    let s = f.embedded.clone().unwrap();
    let mut slow = s.watch("/registry/", 0, WatchOptions::default()).await.unwrap();
    // 4000 writes while the watcher reads nothing: they must all complete.
    let writers = (0..16).map(|t| {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..250 {
                s.create(&format!("/registry/slow/t{t}-{i}"), b("v"), None).await.unwrap();
            }
        })
    });
    tokio::time::timeout(WAIT, async {
        for w in writers {
            w.await.unwrap();
        }
    })
    .await
    .expect("writers finished while a watcher was stuck");
    let mut last = 0;
    let cut = loop {
        match tokio::time::timeout(WAIT, slow.next()).await.unwrap() {
            Some(Ok(e)) => {
                assert_eq!(e.revision(), last + 1, "no gap before the cut");
                last = e.revision();
            }
            Some(Err(StoreError::WatcherTooSlow { revision, capacity })) => {
                assert_eq!(capacity, 64);
                break revision;
            }
            other => panic!("expected WatcherTooSlow, got {other:?}"),
        }
    };
    assert_eq!(cut, last, "the error names the last revision delivered");
    assert!(cut < 4000);
    // Watching again from there delivers the rest.
    let mut again = s.watch("/registry/", cut, WatchOptions::default()).await.unwrap();
    let rest = changes_through(&mut again, 4000).await;
    assert_eq!(rest.first().map(WatchEvent::revision), Some(cut + 1));
    assert_eq!(rest.len() as i64, 4000 - cut);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stays_bounded_when_the_same_keys_are_rewritten() {
    const KEYS: usize = 200;
    const ROUNDS: usize = 20;
    let f = common::embedded_with(|mut c| {
        c.checkpoint_pages = 256;
        c
    })
    .await;
    let s = f.embedded.clone().unwrap();
    let value = |round: usize, i: usize| Bytes::from(format!("{round:04}-{i:04}-{}", "v".repeat(1014)));
    let mut kvs = Vec::new();
    for i in 0..KEYS {
        kvs.push(s.create(&format!("/registry/bounded/k{i:04}"), value(0, i), None).await.unwrap());
    }
    let live: u64 = kvs.iter().map(|kv| (kv.key.len() + kv.value.len()) as u64).sum();
    let (mut max_db, mut max_wal) = (0, 0);
    let started = std::time::Instant::now();
    let mut previous_round_end = 0;
    for round in 1..=ROUNDS {
        // Five rewrites of every key per round, from 8 writers.
        for _ in 0..5 {
            let chunks: Vec<Vec<berth_store::KeyValue>> = kvs.chunks(KEYS / 8).map(<[_]>::to_vec).collect();
            let tasks = chunks.into_iter().map(|chunk| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for kv in chunk {
                        let i: usize = kv.key[kv.key.len() - 4..].parse().unwrap();
                        out.push(s.update(&kv.key, value(round, i), kv.mod_revision, None).await.unwrap());
                    }
                    out
                })
            });
            let mut next = Vec::new();
            for t in tasks {
                next.extend(t.await.unwrap());
            }
            kvs = next;
        }
        // Like the apiserver's compactor: keep one round of history.
        if previous_round_end > 0 {
            s.compact(previous_round_end).await.unwrap();
        }
        previous_round_end = s.current_revision().await.unwrap();
        let usage = s.disk_usage().unwrap();
        max_db = max_db.max(usage.db_bytes);
        max_wal = max_wal.max(usage.wal_bytes);
    }
    eprintln!("rewrites took {:?}", started.elapsed());
    eprintln!("live {live} B, largest file {max_db} B, largest log {max_wal} B after {} rewrites", KEYS * 5 * ROUNDS);
    // One round of history is kept, a second one is written before the next compaction.
    let round_history = (KEYS * 5 * 1050) as u64;
    assert!(max_db <= 2 * live + 3 * round_history, "the file stays proportional to the live data plus the kept history: {max_db}");
    assert!(max_wal <= 8 << 20, "the write-ahead log stays bounded: {max_wal}");
    s.compact(s.current_revision().await.unwrap()).await.unwrap();
    let bound = 2 * live + (64 << 10);
    wait_until("vacuum and log truncation after the last compaction", || {
        let u = s.disk_usage().unwrap();
        u.db_bytes <= bound && u.wal_bytes == 0
    })
    .await;
    eprintln!("vacuumed after {:?}", started.elapsed());
    let listed = s.list("/registry/bounded/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.kvs, kvs, "the data is intact after compaction and vacuum");
    f.finish().await;
}

/// One acknowledged write of the crash writer.
#[derive(Debug, Clone)]
struct Ack {
    revision: i64,
    delete: bool,
    key: String,
    value: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.splitn(5, ' ');
    if parts.next()? != "ack" {
        return None;
    }
    Some(Ack { revision: parts.next()?.parse().ok()?, delete: parts.next()? == "del", key: parts.next()?.to_string(), value: parts.next()?.to_string() })
}

/// Kills the writer by pid if the test fails before it does.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_no_acknowledged_write() {
    let dir = temp_dir();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acked: Vec<Ack> = Vec::new();
    let mut committed = 0;
    for round in 0..6u32 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-store-crash-writer"));
        cmd.arg(dir.path()).arg(round.to_string());
        if round >= 3 {
            cmd.arg("--compact");
        }
        let mut child = ChildGuard(cmd.stdout(Stdio::piped()).spawn().unwrap());
        let stdout = child.0.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            })
        };
        let target = 100 + (next() % 3000) as usize;
        wait_until("acknowledged writes", || lines.lock().unwrap().len() >= target).await;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();
        let round_acks: Vec<Ack> = lines.lock().unwrap().iter().filter_map(|l| parse_ack(l)).collect();
        assert!(round_acks.len() >= target);
        assert!(round_acks.iter().all(|a| a.revision > committed), "round {round} reused a revision at or below {committed}");
        acked.extend(round_acks);
        committed = verify_after_crash(dir.path(), &acked).await;
        eprintln!("round {round}: killed after {target}+ acks, {} acked in all, revision {committed}", acked.len());
    }
}

/// Reopens the store after a kill: every acknowledged write is there, and the revisions after
/// the compaction point are gapless. Returns the store's revision.
async fn verify_after_crash(dir: &std::path::Path, acked: &[Ack]) -> i64 {
    let s = EmbeddedStore::open(embedded_config(dir)).await.unwrap();
    let current = s.current_revision().await.unwrap();
    let compacted = s.compact_revision();
    let newest = acked.iter().map(|a| a.revision).max().unwrap_or(0);
    assert!(current >= newest, "acknowledged revision {newest} lost: the store is at {current}");
    let mut by_revision = BTreeMap::new();
    if current > compacted {
        let mut w = s.watch("/registry/crash/", compacted, WatchOptions::default()).await.unwrap();
        for e in changes_through(&mut w, current).await {
            by_revision.insert(e.revision(), e);
        }
    }
    let want: Vec<i64> = (compacted + 1..=current).collect();
    let got: Vec<i64> = by_revision.keys().copied().collect();
    assert_eq!(got, want, "every revision after {compacted} is there, once");
    for a in acked.iter().filter(|a| a.revision > compacted) {
        let e = &by_revision[&a.revision];
        match e {
            WatchEvent::Deleted { key, .. } => {
                assert!(a.delete && key == &a.key, "revision {}: {a:?} vs {e:?}", a.revision)
            }
            WatchEvent::Created { kv } | WatchEvent::Updated { kv, .. } => {
                assert!(!a.delete && kv.key == a.key && kv.value == a.value.as_bytes(), "revision {}: {a:?} vs {e:?}", a.revision)
            }
            WatchEvent::Progress { .. } => unreachable!(),
        }
    }
    // The latest state of each key agrees with its last event.
    let mut last: BTreeMap<&str, &WatchEvent> = BTreeMap::new();
    for e in by_revision.values() {
        last.insert(e.key().unwrap(), e);
    }
    for (key, e) in last {
        let now = s.get(key, None).await.unwrap();
        match e {
            WatchEvent::Deleted { .. } => assert_eq!(now, None),
            WatchEvent::Created { kv } | WatchEvent::Updated { kv, .. } => assert_eq!(now.as_ref(), Some(kv)),
            WatchEvent::Progress { .. } => unreachable!(),
        }
    }
    s.close().await;
    current
}
