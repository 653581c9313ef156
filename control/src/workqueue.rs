//! The work queue of a controller, as client-go's rate-limited work queue: a key is queued at
//! most once, is handed to one worker at a time (a key added while it is being worked on is
//! queued again when the worker is done), can be added after a delay, and failing keys come back
//! after a per-key exponential back-off (5 ms doubling to 1000 s) until `forget`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

struct State<K> {
    queue: VecDeque<K>,
    /// Keys waiting in `queue` or to be queued again when their worker is done.
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    /// Keys with a delayed add pending, and when it fires.
    delayed: HashMap<K, tokio::time::Instant>,
    closed: bool,
}

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                delayed: HashMap::new(),
                closed: false,
            }),
            ready: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` (once, however often it is added before a worker takes it).
    pub fn add(&self, key: K) {
        let mut s = self.state();
        if s.closed || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay` (an earlier pending delayed add wins).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = tokio::time::Instant::now() + delay;
        {
            let mut s = self.state();
            if s.closed || s.delayed.get(&key).is_some_and(|t| *t <= at) {
                return;
            }
            s.delayed.insert(key.clone(), at);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let due = {
                let mut s = q.state();
                if s.delayed.get(&key) == Some(&at) {
                    s.delayed.remove(&key);
                    true
                } else {
                    false
                }
            };
            if due {
                q.add(key);
            }
        });
    }

    /// Queues `key` again after its back-off (which doubles with each failure).
    pub fn add_rate_limited(self: &Arc<Self>, key: K) {
        let n = {
            let mut s = self.state();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = BASE_DELAY.saturating_mul(1u32.checked_shl(n.saturating_sub(1).min(31)).unwrap_or(u32::MAX)).min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Clears the back-off of `key` (it succeeded).
    pub fn forget(&self, key: &K) {
        self.state().failures.remove(key);
    }

    /// The next key to work on; None once closed.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The worker is done with `key`; queued again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.state();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.ready.notify_one();
        }
    }

    pub fn close(&self) {
        self.state().closed = true;
        self.ready.notify_waiters();
    }

    /// Runs `workers` workers, each taking keys and running `sync` on them until `stop`: a key
    /// whose sync fails comes back after its back-off, one that succeeds is forgotten.
    pub async fn run_workers<F, Fut>(self: Arc<Self>, workers: usize, stop: CancellationToken, sync: F)
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let sync = Arc::new(sync);
        let mut tasks = vec![];
        for _ in 0..workers.max(1) {
            let (q, sync) = (self.clone(), sync.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(key) = q.get().await {
                    match sync(key.clone()).await {
                        Ok(()) => q.forget(&key),
                        Err(e) => {
                            tracing::debug!(error = %e, "sync failed; retrying after a back-off");
                            q.add_rate_limited(key.clone());
                        }
                    }
                    q.done(&key);
                }
            }));
        }
        stop.cancelled().await;
        self.close();
        for t in tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_again_after_done_when_added_meanwhile() {
        let q: Arc<WorkQueue<&str>> = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.get().await, Some("a"));
        q.add("a"); // while processing: not handed out twice
        assert_eq!(q.get().await, Some("b"));
        q.done(&"b");
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.close();
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_and_rate_limited_adds_come_back_later() {
        let q: Arc<WorkQueue<&str>> = WorkQueue::new();
        q.add_after("late", Duration::from_secs(5));
        q.add_rate_limited("failing");
        q.add_rate_limited("failing");
        let first = tokio::time::timeout(Duration::from_secs(1), q.get()).await.expect("the back-off of 10 ms");
        assert_eq!(first, Some("failing"));
        q.done(&"failing");
        let t0 = tokio::time::Instant::now();
        assert_eq!(q.get().await, Some("late"));
        assert!(t0.elapsed() >= Duration::from_secs(4));
    }
}
