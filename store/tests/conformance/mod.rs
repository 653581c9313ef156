//! The store conformance suite: the behaviour every backend must show, written once against
//! the `Store` trait and run against each backend by `conformance_suite!` (tests/embedded.rs,
//! tests/etcd.rs). Each function works under its own sub-prefix.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_store::{KeyValue, ListOptions, Revision, Store, StoreError, WatchEvent, WatchOptions};
use bytes::Bytes;
use futures_util::future::join_all;

use crate::common::{b, changes_through, next_change, wait_until, watch_error, WAIT};

/// Expands to one `#[tokio::test]` per conformance function, each on a fresh store from
/// `$fixture` (an async fn returning `common::Fixture`).
macro_rules! conformance_suite {
    ($fixture:path) => {
        conformance_suite!(@tests $fixture;
            revisions_grow_by_one_with_every_write,
            create_refuses_a_key_that_exists,
            compare_and_swap_conflicts_carry_the_current_value,
            deletes_return_and_watch_the_previous_value,
            get_and_list_read_older_revisions,
            list_pages_form_one_snapshot_under_concurrent_writes,
            count_counts_live_keys_of_the_prefix_only,
            watch_from_every_revision_replays_the_same_history,
            watch_and_reads_below_the_compaction_point_fail_with_compacted,
            hundred_concurrent_writers_on_one_key_lose_no_update,
            one_mebibyte_values_round_trip,
            hundred_thousand_keys_list_count_and_replay,
            bad_input_is_refused_and_writes_nothing,
            idle_watchers_get_progress_notifications,
            ttl_keys_expire_with_a_delete_event,
        );
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture().await;
                crate::conformance::$name(&*fixture.store).await;
                fixture.finish().await;
            }
        )*
    };
}

fn prefix(s: &dyn Store, name: &str) -> String {
    format!("{}conformance/{name}/", s.prefix())
}

pub async fn revisions_grow_by_one_with_every_write(s: &dyn Store) {
    let p = prefix(s, "revisions");
    let a = format!("{p}a");
    let r0 = s.current_revision().await.unwrap();
    let c = s.create(&a, b("1"), None).await.unwrap();
    assert_eq!((c.create_revision, c.mod_revision), (r0 + 1, r0 + 1));
    let u = s.update(&a, b("2"), c.mod_revision, None).await.unwrap();
    assert_eq!((u.create_revision, u.mod_revision), (r0 + 1, r0 + 2));
    let d = s.delete(&a, None).await.unwrap();
    assert_eq!(d.revision, r0 + 3);
    assert_eq!(d.prev, u);
    let again = s.create(&a, b("3"), None).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (r0 + 4, r0 + 4), "a key created again gets a new create revision");
    assert_eq!(s.current_revision().await.unwrap(), r0 + 4);
    assert_eq!(s.get(&a, None).await.unwrap(), Some(again));
}

pub async fn create_refuses_a_key_that_exists(s: &dyn Store) {
    let p = prefix(s, "create");
    let a = format!("{p}a");
    s.create(&a, b("1"), None).await.unwrap();
    let r = s.current_revision().await.unwrap();
    match s.create(&a, b("2"), None).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, a),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(s.current_revision().await.unwrap(), r, "nothing written");
    assert_eq!(s.get(&a, None).await.unwrap().unwrap().value, b("1"));
}

pub async fn compare_and_swap_conflicts_carry_the_current_value(s: &dyn Store) {
    let p = prefix(s, "cas");
    let a = format!("{p}a");
    let v1 = s.create(&a, b("v1"), None).await.unwrap();
    let v2 = s.update(&a, b("v2"), v1.mod_revision, None).await.unwrap();
    let r = s.current_revision().await.unwrap();
    match s.update(&a, b("lost"), v1.mod_revision, None).await {
        Err(StoreError::Conflict { key, expected, current }) => {
            assert_eq!(key, a);
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(*current, v2);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    match s.delete(&a, Some(v1.mod_revision)).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(*current, v2),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.current_revision().await.unwrap(), r, "conflicts write nothing");
    let gone = s.delete(&a, Some(v2.mod_revision)).await.unwrap();
    assert_eq!(gone.prev, v2);
    let missing = format!("{p}missing");
    for result in [
        s.update(&a, b("x"), v2.mod_revision, None).await.map(|_| ()),
        s.update(&missing, b("x"), 1, None).await.map(|_| ()),
        s.delete(&a, None).await.map(|_| ()),
        s.delete(&missing, Some(1)).await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(StoreError::NotFound { .. })), "expected NotFound, got {result:?}");
    }
}

pub async fn deletes_return_and_watch_the_previous_value(s: &dyn Store) {
    let p = prefix(s, "deletes");
    let a = format!("{p}a");
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, from, WatchOptions::default()).await.unwrap();
    let v1 = s.create(&a, b("v1"), None).await.unwrap();
    let v2 = s.update(&a, b("v2"), v1.mod_revision, None).await.unwrap();
    let d1 = s.delete(&a, None).await.unwrap();
    assert_eq!(d1.prev, v2);
    let v3 = s.create(&a, b("v3"), None).await.unwrap();
    let d2 = s.delete(&a, Some(v3.mod_revision)).await.unwrap();
    assert_eq!(d2.prev, v3);
    let events = changes_through(&mut w, d2.revision).await;
    assert_eq!(
        events,
        vec![
            WatchEvent::Created { kv: v1.clone() },
            WatchEvent::Updated { kv: v2.clone(), prev: v1 },
            WatchEvent::Deleted { key: a.clone(), revision: d1.revision, prev: v2 },
            WatchEvent::Created { kv: v3.clone() },
            WatchEvent::Deleted { key: a, revision: d2.revision, prev: v3 },
        ]
    );
}

pub async fn get_and_list_read_older_revisions(s: &dyn Store) {
    let p = prefix(s, "history");
    let (a, bk, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let a1 = s.create(&a, b("a1"), None).await.unwrap();
    let b1 = s.create(&bk, b("b1"), None).await.unwrap();
    let a2 = s.update(&a, b("a2"), a1.mod_revision, None).await.unwrap();
    let gone = s.delete(&bk, None).await.unwrap();
    let c1 = s.create(&c, b("c1"), None).await.unwrap();
    let at = |r: Revision| ListOptions { revision: Some(r), ..Default::default() };
    let pr = p.as_str();
    let list = |r| async move { s.list(pr, at(r)).await.unwrap() };
    assert_eq!(list(b1.mod_revision).await.kvs, vec![a1.clone(), b1.clone()]);
    assert_eq!(list(a2.mod_revision).await.kvs, vec![a2.clone(), b1.clone()]);
    assert_eq!(list(gone.revision).await.kvs, vec![a2.clone()]);
    let latest = s.list(&p, ListOptions::default()).await.unwrap();
    assert_eq!(latest.kvs, vec![a2.clone(), c1.clone()]);
    assert_eq!(latest.revision, s.current_revision().await.unwrap());
    assert_eq!(list(b1.mod_revision).await.revision, b1.mod_revision);
    assert_eq!(s.get(&a, Some(a1.mod_revision)).await.unwrap(), Some(a1.clone()));
    assert_eq!(s.get(&a, Some(gone.revision)).await.unwrap(), Some(a2));
    assert_eq!(s.get(&bk, Some(a1.mod_revision)).await.unwrap(), None);
    assert_eq!(s.get(&bk, Some(gone.revision - 1)).await.unwrap(), Some(b1));
    assert_eq!(s.get(&bk, Some(gone.revision)).await.unwrap(), None);
    assert_eq!(s.get(&c, None).await.unwrap(), Some(c1));
}

pub async fn list_pages_form_one_snapshot_under_concurrent_writes(s: &dyn Store) {
    let p = prefix(s, "pages");
    for i in 0..300 {
        s.create(&format!("{p}item-{i:03}"), b(&format!("v{i}")), None).await.unwrap();
    }
    // A writer that keeps changing the prefix while the pages are read.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        let p = p.clone();
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let key = format!("{p}item-{:03}", (i * 37) % 320);
                let result = match s.get(&key, None).await.unwrap() {
                    Some(kv) if i.is_multiple_of(3) => s.delete(&key, Some(kv.mod_revision)).await.map(|_| ()),
                    Some(kv) => s.update(&key, b(&format!("w{i}")), kv.mod_revision, None).await.map(|_| ()),
                    None => s.create(&key, b(&format!("n{i}")), None).await.map(|_| ()),
                };
                if let Err(e) = result {
                    assert!(matches!(e, StoreError::Conflict { .. } | StoreError::NotFound { .. } | StoreError::AlreadyExists { .. }), "{e}");
                }
                writes.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let reader = async {
        let mut pages = Vec::new();
        let first = s.list(&p, ListOptions { limit: Some(40), count_remaining: true, ..Default::default() }).await.unwrap();
        let revision = first.revision;
        let remaining = first.remaining.unwrap();
        let mut token = first.continue_token.clone();
        pages.extend(first.kvs);
        while let Some(t) = token {
            let seen = writes.load(Ordering::SeqCst);
            wait_until("writes between pages", || writes.load(Ordering::SeqCst) >= seen + 3).await;
            let page = s.list(&p, ListOptions { limit: Some(40), continue_token: Some(t), ..Default::default() }).await.unwrap();
            assert_eq!(page.revision, revision, "every page is read at the first page's revision");
            assert!(page.kvs.len() <= 40);
            token = page.continue_token;
            pages.extend(page.kvs);
        }
        stop.store(true, Ordering::SeqCst);
        (pages, revision, remaining)
    };
    let ((pages, revision, remaining), ()) = tokio::join!(reader, writer);
    assert!(s.current_revision().await.unwrap() > revision + 10, "the writer wrote while the pages were read");
    let snapshot = s.list(&p, ListOptions { revision: Some(revision), ..Default::default() }).await.unwrap();
    assert_eq!(pages, snapshot.kvs, "the pages together are the snapshot at their revision");
    assert_eq!(remaining as usize, snapshot.kvs.len() - 40);
    assert!(pages.iter().all(|kv| kv.mod_revision <= revision));
    assert!(pages.windows(2).all(|w| w[0].key < w[1].key), "ordered by key, no duplicate");
}

pub async fn count_counts_live_keys_of_the_prefix_only(s: &dyn Store) {
    let p = prefix(s, "count");
    for i in 0..5 {
        s.create(&format!("{p}x/{i}"), b("v"), None).await.unwrap();
    }
    s.create(&format!("{p}xy/0"), b("v"), None).await.unwrap();
    s.delete(&format!("{p}x/1"), None).await.unwrap();
    s.delete(&format!("{p}x/3"), None).await.unwrap();
    assert_eq!(s.count(&format!("{p}x/")).await.unwrap(), 3);
    assert_eq!(s.count(&format!("{p}xy/")).await.unwrap(), 1);
    assert_eq!(s.count(&p).await.unwrap(), 4);
    assert_eq!(s.count(&format!("{p}nothing/")).await.unwrap(), 0);
    let listed = s.list(&format!("{p}x/"), ListOptions::default()).await.unwrap();
    assert_eq!(listed.kvs.len(), 3, "a prefix stops at its boundary");
}

/// What a backend should report for a history of writes, computed independently.
struct Model {
    live: BTreeMap<String, KeyValue>,
    events: Vec<WatchEvent>,
}

impl Model {
    fn put(&mut self, kv: KeyValue) {
        let event = match self.live.insert(kv.key.clone(), kv.clone()) {
            Some(prev) => WatchEvent::Updated { kv, prev },
            None => WatchEvent::Created { kv },
        };
        self.events.push(event);
    }

    fn delete(&mut self, key: &str, revision: Revision) {
        let prev = self.live.remove(key).expect("deleted key was live");
        self.events.push(WatchEvent::Deleted { key: key.to_string(), revision, prev });
    }
}

pub async fn watch_from_every_revision_replays_the_same_history(s: &dyn Store) {
    let p = prefix(s, "every");
    let other = prefix(s, "every-other");
    let start = s.current_revision().await.unwrap();
    let mut model = Model { live: BTreeMap::new(), events: Vec::new() };
    for i in 0..40u32 {
        if i % 7 == 3 {
            // Outside the watched prefix: must not show up.
            let k = format!("{other}k{}", i % 2);
            match s.get(&k, None).await.unwrap() {
                Some(kv) => s.delete(&k, Some(kv.mod_revision)).await.map(|_| ()).unwrap(),
                None => s.create(&k, b("o"), None).await.map(|_| ()).unwrap(),
            }
            continue;
        }
        let k = format!("{p}k{}", i % 5);
        match model.live.get(&k).cloned() {
            None => model.put(s.create(&k, b(&format!("c{i}")), None).await.unwrap()),
            Some(kv) if i.is_multiple_of(4) => {
                let d = s.delete(&k, Some(kv.mod_revision)).await.unwrap();
                model.delete(&k, d.revision);
            }
            Some(kv) => model.put(s.update(&k, b(&format!("u{i}")), kv.mod_revision, None).await.unwrap()),
        }
    }
    let sentinel = s.create(&format!("{p}sentinel"), b("end"), None).await.unwrap();
    model.put(sentinel.clone());
    let end = sentinel.mod_revision;
    for from in start..end {
        let mut w = s.watch(&p, from, WatchOptions::default()).await.unwrap();
        let got = changes_through(&mut w, end).await;
        let want: Vec<WatchEvent> = model.events.iter().filter(|e| e.revision() > from).cloned().collect();
        assert_eq!(got, want, "watch after revision {from}");
    }
}

pub async fn watch_and_reads_below_the_compaction_point_fail_with_compacted(s: &dyn Store) {
    let p = prefix(s, "compaction");
    let (x1, x2, x3) = (format!("{p}x1"), format!("{p}x2"), format!("{p}x3"));
    let x1a = s.create(&x1, b("x1a"), None).await.unwrap();
    let x2a = s.create(&x2, b("x2a"), None).await.unwrap();
    let x3a = s.create(&x3, b("x3a"), None).await.unwrap();
    let page = s.list(&p, ListOptions { limit: Some(1), ..Default::default() }).await.unwrap();
    let old_token = page.continue_token.expect("more pages");
    let x1b = s.update(&x1, b("x1b"), x1a.mod_revision, None).await.unwrap();
    let x1c = s.update(&x1, b("x1c"), x1b.mod_revision, None).await.unwrap();
    let point = x1c.mod_revision;
    let gone = s.delete(&x2, None).await.unwrap();
    let x3b = s.update(&x3, b("x3b"), x3a.mod_revision, None).await.unwrap();
    s.compact(point).await.unwrap();

    let compacted = |e: StoreError| match e {
        StoreError::Compacted { compact_revision, .. } => assert_eq!(compact_revision, point),
        other => panic!("expected Compacted, got {other:?}"),
    };
    compacted(s.get(&x1, Some(x1b.mod_revision)).await.unwrap_err());
    assert_eq!(s.get(&x1, Some(point)).await.unwrap(), Some(x1c.clone()));
    assert_eq!(s.get(&x2, Some(point)).await.unwrap(), Some(x2a.clone()));
    compacted(s.list(&p, ListOptions { revision: Some(x3a.mod_revision), ..Default::default() }).await.unwrap_err());
    compacted(s.list(&p, ListOptions { continue_token: Some(old_token), ..Default::default() }).await.unwrap_err());
    compacted(watch_error(s.watch(&p, point - 1, WatchOptions::default()).await).await);
    // From the compaction point on, the history is whole, previous values included.
    let mut w = s.watch(&p, point, WatchOptions::default()).await.unwrap();
    assert_eq!(
        changes_through(&mut w, x3b.mod_revision).await,
        vec![WatchEvent::Deleted { key: x2.clone(), revision: gone.revision, prev: x2a }, WatchEvent::Updated { kv: x3b.clone(), prev: x3a },]
    );
    let listed = s.list(&p, ListOptions { revision: Some(point), ..Default::default() }).await.unwrap();
    assert_eq!(listed.kvs.len(), 3);
    s.compact(point - 1).await.expect("compacting to an older revision does nothing");
    let now = s.current_revision().await.unwrap();
    assert!(matches!(s.compact(now + 10).await, Err(StoreError::FutureRevision { .. })));
    assert!(matches!(s.get(&x1, Some(now + 10)).await, Err(StoreError::FutureRevision { .. })));
}

pub async fn hundred_concurrent_writers_on_one_key_lose_no_update(s: &dyn Store) {
    const WRITERS: u64 = 100;
    const EACH: u64 = 2;
    let p = prefix(s, "counter");
    let key = format!("{p}n");
    let start = s.create(&key, b("0"), None).await.unwrap();
    let mut w = s.watch(&p, start.mod_revision, WatchOptions::default()).await.unwrap();
    let writers = (0..WRITERS).map(|_| {
        let key = key.clone();
        async move {
            let mut revisions = Vec::new();
            let mut current = s.get(&key, None).await.unwrap().unwrap();
            for _ in 0..EACH {
                loop {
                    let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                    match s.update(&key, b(&(n + 1).to_string()), current.mod_revision, None).await {
                        Ok(kv) => {
                            revisions.push(kv.mod_revision);
                            current = kv;
                            break;
                        }
                        Err(StoreError::Conflict { current: c, .. }) => current = *c,
                        Err(e) => panic!("update failed: {e}"),
                    }
                }
            }
            revisions
        }
    });
    let written: Vec<Revision> = join_all(writers).await.into_iter().flatten().collect();
    assert_eq!(written.len() as u64, WRITERS * EACH);
    let last = s.get(&key, None).await.unwrap().unwrap();
    assert_eq!(last.value, b(&(WRITERS * EACH).to_string()), "no update lost");
    let events = changes_through(&mut w, last.mod_revision).await;
    assert_eq!(events.len() as u64, WRITERS * EACH, "each success seen once");
    let mut previous = start;
    for (i, e) in events.iter().enumerate() {
        match e {
            WatchEvent::Updated { kv, prev } => {
                assert_eq!(prev, &previous);
                assert_eq!(kv.value, b(&(i + 1).to_string()));
                previous = kv.clone();
            }
            other => panic!("expected an update, got {other:?}"),
        }
    }
    let seen: HashSet<Revision> = events.iter().map(WatchEvent::revision).collect();
    let acked: HashSet<Revision> = written.into_iter().collect();
    assert_eq!(seen, acked);
}

pub async fn one_mebibyte_values_round_trip(s: &dyn Store) {
    let p = prefix(s, "large");
    let key = format!("{p}big");
    let mib = |seed: u8| Bytes::from((0..1usize << 20).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>());
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, from, WatchOptions::default()).await.unwrap();
    let one = s.create(&key, mib(1), None).await.unwrap();
    assert_eq!(s.get(&key, None).await.unwrap().unwrap().value, mib(1));
    let two = s.update(&key, mib(2), one.mod_revision, None).await.unwrap();
    let listed = s.list(&p, ListOptions::default()).await.unwrap();
    assert_eq!(listed.kvs, vec![two.clone()]);
    let d = s.delete(&key, None).await.unwrap();
    assert_eq!(d.prev.value, mib(2));
    let events = changes_through(&mut w, d.revision).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[1], WatchEvent::Updated { kv: two, prev: one });
    let r = s.current_revision().await.unwrap();
    let too_big = Bytes::from(vec![7u8; s.max_value_bytes() + 1]);
    match s.create(&key, too_big, None).await {
        Err(StoreError::ValueTooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (s.max_value_bytes() + 1, s.max_value_bytes()));
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(s.current_revision().await.unwrap(), r, "nothing written");
}

pub async fn hundred_thousand_keys_list_count_and_replay(s: &dyn Store) {
    const KEYS: usize = 100_000;
    const TASKS: usize = 64;
    let p = prefix(s, "many");
    let from = s.current_revision().await.unwrap();
    let tasks = (0..TASKS).map(|t| {
        let p = p.clone();
        async move {
            for i in (t..KEYS).step_by(TASKS) {
                s.create(&format!("{p}key-{i:06}"), b(&format!("value-{i}")), None).await.unwrap();
            }
        }
    });
    join_all(tasks).await;
    assert_eq!(s.count(&p).await.unwrap(), KEYS as u64);
    let mut keys = Vec::with_capacity(KEYS);
    let mut token = None;
    let mut first = true;
    loop {
        let page = s.list(&p, ListOptions { limit: Some(10_000), continue_token: token, count_remaining: first, ..Default::default() }).await.unwrap();
        if first {
            assert_eq!(page.remaining, Some((KEYS - 10_000) as u64));
            first = false;
        }
        keys.extend(page.kvs.into_iter().map(|kv| kv.key));
        token = page.continue_token;
        if token.is_none() {
            break;
        }
    }
    let want: Vec<String> = (0..KEYS).map(|i| format!("{p}key-{i:06}")).collect();
    assert_eq!(keys, want);
    let all = s.list(&p, ListOptions::default()).await.unwrap();
    assert_eq!(all.kvs.len(), KEYS);
    // A watch replays the last 20,000 creates from the history (etcd sends old events at about
    // 10,000 a second, so not all of them).
    const REPLAYED: i64 = 20_000;
    let end = s.current_revision().await.unwrap();
    assert!(end - from >= KEYS as i64);
    let mut w = s.watch(&p, end - REPLAYED, WatchOptions::default()).await.unwrap();
    let events = changes_through(&mut w, end).await;
    assert_eq!(events.len() as i64, REPLAYED, "one event per create");
    assert!(events.windows(2).all(|e| e[0].revision() < e[1].revision()));
    assert!(events.iter().all(|e| matches!(e, WatchEvent::Created { .. })));
}

pub async fn bad_input_is_refused_and_writes_nothing(s: &dyn Store) {
    let p = prefix(s, "bad");
    let r0 = s.current_revision().await.unwrap();
    let root = s.prefix().to_string();
    let bad_keys = [
        String::new(),
        "/".to_string(),
        "/elsewhere/x".to_string(),
        root.clone(),
        format!("{p}a/../b"),
        format!("{p}a//b"),
        format!("{p}a\0b"),
        format!("{p}trailing/"),
    ];
    for key in &bad_keys {
        let invalid = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::InvalidKey { .. })), "{key:?}: {r:?}");
        invalid(s.create(key, b("v"), None).await.map(|_| ()));
        invalid(s.update(key, b("v"), 1, None).await.map(|_| ()));
        invalid(s.delete(key, None).await.map(|_| ()));
        invalid(s.get(key, None).await.map(|_| ()));
    }
    for prefix in ["/elsewhere/", "", "/registr"] {
        assert!(matches!(s.list(prefix, ListOptions::default()).await, Err(StoreError::InvalidKey { .. })));
        assert!(matches!(s.count(prefix).await, Err(StoreError::InvalidKey { .. })));
        assert!(matches!(s.watch(prefix, r0, WatchOptions::default()).await.map(|_| ()), Err(StoreError::InvalidKey { .. })));
    }
    let big = format!("{p}big");
    assert!(matches!(s.create(&big, Bytes::from(vec![0u8; s.max_value_bytes() + 1]), None).await, Err(StoreError::ValueTooLarge { .. })));
    let token_for = |p: &str| {
        let p = p.to_string();
        async move {
            for i in 0..2 {
                s.create(&format!("{p}k{i}"), b("v"), None).await.unwrap();
            }
            s.list(&p, ListOptions { limit: Some(1), ..Default::default() }).await.unwrap().continue_token.unwrap()
        }
    };
    let token = token_for(&format!("{p}one/")).await;
    let r1 = s.current_revision().await.unwrap();
    let invalid_continue = |r: Result<berth_store::ListResponse, StoreError>| assert!(matches!(r, Err(StoreError::InvalidContinue { .. })), "{r:?}");
    invalid_continue(s.list(&format!("{p}two/"), ListOptions { continue_token: Some(token.clone()), ..Default::default() }).await);
    invalid_continue(s.list(&p, ListOptions { continue_token: Some("not a token".into()), ..Default::default() }).await);
    invalid_continue(s.list(&format!("{p}one/"), ListOptions { continue_token: Some(token), revision: Some(r1), ..Default::default() }).await);
    assert!(matches!(s.get(&big, Some(-1)).await, Err(StoreError::InvalidArgument(_))));
    assert!(matches!(s.watch(&p, -1, WatchOptions::default()).await.map(|_| ()), Err(StoreError::InvalidArgument(_))));
    assert!(matches!(s.create(&big, b("v"), Some(Duration::ZERO)).await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(s.current_revision().await.unwrap(), r1, "nothing written by bad input");
    assert_eq!(r1, r0 + 2);
    assert_eq!(s.get(&big, None).await.unwrap(), None);
}

pub async fn idle_watchers_get_progress_notifications(s: &dyn Store) {
    let p = prefix(s, "progress");
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, from, WatchOptions { progress_interval: Some(Duration::from_millis(200)) }).await.unwrap();
    // A write elsewhere moves the store's revision; the idle watcher must learn it.
    let elsewhere = s.create(&format!("{}-other/x", p.trim_end_matches('/')), b("v"), None).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress { revision }))) if revision >= elsewhere.mod_revision => break,
            Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
            other => panic!("expected a progress notification, got {other:?}"),
        }
    }
    // Events still arrive, after the bookmark.
    let kv = s.create(&format!("{p}a"), b("v"), None).await.unwrap();
    assert_eq!(next_change(&mut w).await, WatchEvent::Created { kv });
}

pub async fn ttl_keys_expire_with_a_delete_event(s: &dyn Store) {
    let p = prefix(s, "ttl");
    let (short, kept) = (format!("{p}short"), format!("{p}kept"));
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, from, WatchOptions::default()).await.unwrap();
    let ttl = Some(Duration::from_secs(2));
    let created = s.create(&short, b("v"), ttl).await.unwrap();
    let k = s.create(&kept, b("v"), ttl).await.unwrap();
    // An update without a TTL clears it.
    let k = s.update(&kept, b("v2"), k.mod_revision, None).await.unwrap();
    loop {
        match next_change(&mut w).await {
            WatchEvent::Deleted { key, prev, .. } => {
                assert_eq!(key, short, "only the key that kept its TTL expires");
                assert_eq!(prev, created);
                break;
            }
            WatchEvent::Created { .. } | WatchEvent::Updated { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(s.get(&short, None).await.unwrap(), None);
    assert_eq!(s.get(&kept, None).await.unwrap(), Some(k));
}
