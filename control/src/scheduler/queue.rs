//! The scheduling queue, as upstream's: pods to try now ordered by priority (higher first), then
//! by when they were queued; pods backing off after a failure (1 s doubling per attempt up to
//! 10 s); and unschedulable pods that wait for a cluster event that could make them fit (node
//! added or changed, pod deleted, ...), flushed after five minutes at the latest. An event
//! during a pod's scheduling attempt sends it to back-off instead of to the unschedulable set, so
//! a failure against stale state is retried. Pods with scheduling gates are held apart until the
//! gates are gone. This module only orders; it knows nothing of nodes or the API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;

use super::cache::{pod_key, PodKey};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A pod taken from the queue for one attempt.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub attempts: u32,
    /// The move-request counter when the attempt began.
    pub cycle: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    neg_priority: i64,
    queued: Instant,
    seq: u64,
}

#[derive(Debug)]
enum Where {
    Active(Order),
    Backoff(Instant, u64),
    Unschedulable(Instant),
    Gated,
    /// Popped, being scheduled.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    attempts: u32,
    at: Where,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<PodKey, Entry>,
    active: BTreeSet<(Order, PodKey)>,
    backoff: BTreeSet<(Instant, u64, PodKey)>,
    /// The keys of the unschedulable pods (so that events and flushes need not scan every pod).
    unschedulable: HashSet<PodKey>,
    seq: u64,
    /// Counts cluster events that moved pods (upstream's moveRequestCycle).
    move_cycle: u64,
    closed: bool,
}

#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    wake: Notify,
}

fn priority(pod: &Pod) -> i64 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) as i64
}

fn gated(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty())
}

pub fn backoff_for(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d = (d * 2).min(MAX_BACKOFF);
    }
    d
}

impl State {
    fn detach(&mut self, key: &PodKey) {
        if let Some(e) = self.entries.get(key) {
            match &e.at {
                Where::Active(o) => {
                    self.active.remove(&(*o, key.clone()));
                }
                Where::Backoff(t, s) => {
                    self.backoff.remove(&(*t, *s, key.clone()));
                }
                _ => {}
            }
        }
        self.unschedulable.remove(key);
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn make_active(&mut self, key: PodKey) {
        self.detach(&key);
        let seq = self.next_seq();
        let Some(e) = self.entries.get_mut(&key) else { return };
        if gated(&e.pod) {
            e.at = Where::Gated;
            return;
        }
        let o = Order { neg_priority: -priority(&e.pod), queued: Instant::now(), seq };
        e.at = Where::Active(o);
        self.active.insert((o, key));
    }

    fn make_backoff(&mut self, key: PodKey, until: Instant) {
        self.detach(&key);
        let seq = self.next_seq();
        let Some(e) = self.entries.get_mut(&key) else { return };
        e.at = Where::Backoff(until, seq);
        self.backoff.insert((until, seq, key));
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some((t, _, key)) = self.backoff.first().cloned() {
            if t > now {
                break;
            }
            self.make_active(key);
        }
    }
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// A pending pod seen (added or updated): queued, or its queued copy refreshed.
    pub fn add_or_update(&self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let mut s = self.lock();
        match s.entries.get_mut(&key) {
            Some(e) => {
                let was_gated = matches!(e.at, Where::Gated);
                e.pod = pod.clone();
                // Lifting the gates, or any change to an unschedulable pod, is worth a new try.
                if (was_gated && !gated(&pod)) || matches!(e.at, Where::Unschedulable(_)) {
                    s.make_active(key);
                } else if !was_gated && gated(&pod) && !matches!(e.at, Where::InFlight) {
                    s.detach(&key);
                    if let Some(e) = s.entries.get_mut(&key) {
                        e.at = Where::Gated;
                    }
                }
            }
            None => {
                s.entries.insert(key.clone(), Entry { pod, attempts: 0, at: Where::Gated });
                s.make_active(key);
            }
        }
        drop(s);
        self.wake.notify_one();
    }

    /// The pod is gone or was bound by someone: forget it.
    pub fn remove(&self, key: &PodKey) {
        let mut s = self.lock();
        s.detach(key);
        s.entries.remove(key);
    }

    /// A cluster event that could make unschedulable pods fit: each goes to back-off (while its
    /// back-off lasts) or straight to the active queue.
    pub fn move_all_to_active_or_backoff(&self, why: &str) {
        let mut s = self.lock();
        s.move_cycle += 1;
        let now = Instant::now();
        let waiting: Vec<(PodKey, u32)> =
            s.entries.iter().filter(|(_, e)| matches!(e.at, Where::Unschedulable(_))).map(|(k, e)| (k.clone(), e.attempts)).collect();
        if waiting.is_empty() {
            return;
        }
        tracing::debug!(event = why, pods = waiting.len(), "moving unschedulable pods");
        for (key, attempts) in waiting {
            let last = match s.entries.get(&key).map(|e| &e.at) {
                Some(Where::Unschedulable(t)) => *t,
                _ => now,
            };
            let until = last + backoff_for(attempts);
            if until > now {
                s.make_backoff(key, until);
            } else {
                s.make_active(key);
            }
        }
        drop(s);
        self.wake.notify_one();
    }

    /// The attempt failed: `unschedulable` pods wait for an event (or back off when one came
    /// during the attempt); errors back off.
    pub fn requeue_failed(&self, q: &QueuedPod, unschedulable: bool) {
        let key = pod_key(&q.pod);
        let mut s = self.lock();
        let moved = s.move_cycle > q.cycle;
        let Some(e) = s.entries.get_mut(&key) else { return };
        if !matches!(e.at, Where::InFlight) {
            return;
        }
        e.attempts = q.attempts;
        let now = Instant::now();
        if unschedulable && !moved {
            e.at = Where::Unschedulable(now);
            s.unschedulable.insert(key);
        } else {
            let until = now + backoff_for(q.attempts);
            s.make_backoff(key, until);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// The attempt ended with the pod placed: it leaves the queue.
    pub fn done(&self, key: &PodKey) {
        self.remove(key);
    }

    /// Waits for the next pod to try; None once closed.
    pub async fn pop(&self) -> Option<QueuedPod> {
        loop {
            let wait = {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                s.flush_backoff(now);
                // Unschedulable for too long: try again anyway.
                let stale: Vec<PodKey> = s
                    .entries
                    .iter()
                    .filter(|(_, e)| matches!(e.at, Where::Unschedulable(t) if now.duration_since(t) >= MAX_IN_UNSCHEDULABLE))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    s.make_active(k);
                }
                if let Some((o, key)) = s.active.pop_first() {
                    let _ = o;
                    let cycle = s.move_cycle;
                    if let Some(e) = s.entries.get_mut(&key) {
                        e.at = Where::InFlight;
                        e.attempts += 1;
                        return Some(QueuedPod { pod: e.pod.clone(), attempts: e.attempts, cycle });
                    }
                    continue;
                }
                let next_backoff = s.backoff.first().map(|(t, _, _)| t.saturating_duration_since(now));
                next_backoff.unwrap_or(Duration::from_secs(30)).min(Duration::from_secs(30))
            };
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Pods in each part of the queue: (active, backoff, unschedulable, gated).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let s = self.lock();
        let u = s.unschedulable.len();
        let g = s.entries.values().filter(|e| matches!(e.at, Where::Gated)).count();
        (s.active.len(), s.backoff.len(), u, g)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32, gates: bool) -> Arc<Pod> {
        let gates = if gates { serde_json::json!([{"name": "wait"}]) } else { serde_json::json!(null) };
        Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"containers": [], "priority": priority, "schedulingGates": gates}}))
            .expect("pod"),
        )
    }

    #[tokio::test]
    async fn higher_priority_first_then_first_come() {
        let q = Queue::new();
        q.add_or_update(pod("low", 0, false));
        q.add_or_update(pod("high", 100, false));
        q.add_or_update(pod("low2", 0, false));
        let order: Vec<String> = [q.pop().await, q.pop().await, q.pop().await].into_iter().flatten().map(|p| pod_key(&p.pod).1).collect();
        assert_eq!(order, vec!["high", "low", "low2"]);
    }

    #[tokio::test]
    async fn gated_pods_wait_for_their_gates_to_go() {
        let q = Queue::new();
        q.add_or_update(pod("g", 0, true));
        assert_eq!(q.counts(), (0, 0, 0, 1));
        q.add_or_update(pod("g", 0, false));
        assert_eq!(q.pop().await.map(|p| pod_key(&p.pod).1).as_deref(), Some("g"));
    }

    #[tokio::test]
    async fn unschedulable_pods_wait_for_an_event_then_back_off() {
        let q = Queue::new();
        q.add_or_update(pod("p", 0, false));
        let first = q.pop().await.expect("pod");
        q.requeue_failed(&first, true);
        assert_eq!(q.counts(), (0, 0, 1, 0), "no timer retries it");
        q.move_all_to_active_or_backoff("NodeAdd");
        assert_eq!(q.counts(), (0, 1, 0, 0), "still backing off its first second");
        let started = Instant::now();
        let again = q.pop().await.expect("pod");
        assert!(started.elapsed() <= INITIAL_BACKOFF + Duration::from_millis(200));
        assert_eq!(again.attempts, 2);
        // An event during the attempt: back-off, not the unschedulable set.
        q.move_all_to_active_or_backoff("NodeUpdate");
        q.requeue_failed(&again, true);
        assert_eq!(q.counts(), (0, 1, 0, 0));
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let got: Vec<u64> = (1..=6).map(|a| backoff_for(a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
    }
}
