//! The watch fan-out of the embedded store: one broadcast ring of recent events per store, fed
//! by the writer after each commit, read by every watcher. A watcher that starts at an older
//! revision first replays the history from the file in pages, then joins the ring; the switch
//! is gapless and duplicate-free because subscribing and reading the last published revision
//! happen under the same lock the writer publishes under. A watcher that falls more than the
//! ring behind is closed with `WatcherTooSlow`; the writer never waits for anyone.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::read::{self, ReadPool};
use crate::error::{Result, StoreError};
use crate::types::{deliver, Revision, WatchEvent, WatchOptions};

/// How many revisions one replay page looks at.
const REPLAY_PAGE: usize = 1024;

pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    capacity: usize,
}

struct HubInner {
    tx: Option<broadcast::Sender<Arc<WatchEvent>>>,
    published: Revision,
}

impl Hub {
    pub fn new(capacity: usize, revision: Revision) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Hub { inner: Mutex::new(HubInner { tx: Some(tx), published: revision }), capacity: capacity.max(1) }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sends a committed batch's events; `revision` is the batch's last revision.
    pub fn publish(&self, events: Vec<WatchEvent>, revision: Revision) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(tx) = &inner.tx {
                for event in events {
                    // No receiver is not an error: nobody is watching.
                    let _ = tx.send(Arc::new(event));
                }
            }
            inner.published = revision;
        }
    }

    /// The last revision whose events have been published.
    pub fn published(&self) -> Revision {
        self.inner.lock().map_or(0, |i| i.published)
    }

    /// A place in the ring and the last revision published before it: every later event will
    /// arrive through the receiver. None once the store is closed.
    fn subscribe(&self) -> Option<(broadcast::Receiver<Arc<WatchEvent>>, Revision)> {
        let inner = self.inner.lock().ok()?;
        let tx = inner.tx.as_ref()?;
        Some((tx.subscribe(), inner.published))
    }

    /// Ends every watch (the store is closing).
    pub fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.tx = None;
        }
    }
}

/// What a watcher needs from the store.
pub(crate) struct WatchSource {
    pub hub: Arc<Hub>,
    pub reads: Arc<ReadPool>,
}

/// The body of one watch: replay from the file while far behind, join the ring, then forward
/// the prefix's events (and bookmarks when idle) until the reader goes away or an error ends it.
pub(crate) async fn run_watch(source: WatchSource, prefix: String, after: Revision, options: WatchOptions, out: mpsc::Sender<Result<WatchEvent>>) {
    let ring = source.hub.capacity() as Revision;
    let mut cursor = after;
    // Far behind: catch up from the file without holding a place in the ring.
    loop {
        let head = source.hub.published();
        if head - cursor <= ring / 2 {
            break;
        }
        match replay(&source, &prefix, cursor, head, &out).await {
            Ok(Some(c)) => cursor = c,
            Ok(None) => return,
            Err(e) => {
                deliver(&out, Err(e)).await;
                return;
            }
        }
    }
    let Some((mut rx, head)) = source.hub.subscribe() else {
        deliver(&out, Err(StoreError::Unavailable("the store was closed".into()))).await;
        return;
    };
    if head > cursor {
        match replay(&source, &prefix, cursor, head, &out).await {
            Ok(Some(c)) => cursor = c,
            Ok(None) => return,
            Err(e) => {
                deliver(&out, Err(e)).await;
                return;
            }
        }
    }
    // Everything up to `seen` has been looked at.
    let mut seen = head;
    let mut ticker = options.progress_interval.map(|every| {
        let mut t = tokio::time::interval_at(Instant::now() + every, every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut sent = false;
    loop {
        tokio::select! {
            _ = out.closed() => return,
            msg = rx.recv() => match msg {
                Ok(event) => {
                    let revision = event.revision();
                    seen = seen.max(revision);
                    if revision <= cursor {
                        continue;
                    }
                    cursor = revision;
                    if event.key().is_some_and(|k| k.starts_with(&prefix)) {
                        if !deliver(&out, Ok((*event).clone())).await {
                            return;
                        }
                        sent = true;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    tracing::warn!(prefix, revision = cursor, "cluster store: closing a watcher that fell behind");
                    deliver(&out, Err(StoreError::WatcherTooSlow { revision: cursor, capacity: ring as usize })).await;
                    return;
                }
                Err(RecvError::Closed) => {
                    deliver(&out, Err(StoreError::Unavailable("the store was closed".into()))).await;
                    return;
                }
            },
            _ = tick(&mut ticker) => {
                if !sent && !deliver(&out, Ok(WatchEvent::Progress { revision: seen })).await {
                    return;
                }
                sent = false;
            }
        }
    }
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends the prefix's events in (`from`, `to`] from the file. Returns how far it got, or None
/// if the reader went away.
async fn replay(source: &WatchSource, prefix: &str, from: Revision, to: Revision, out: &mpsc::Sender<Result<WatchEvent>>) -> Result<Option<Revision>> {
    let mut cursor = from;
    while cursor < to {
        let p = prefix.to_string();
        let page = source.reads.run(move |conn| read::replay(conn, &p, cursor, to, REPLAY_PAGE)).await?;
        for event in page.events {
            if !deliver(out, Ok(event)).await {
                return Ok(None);
            }
        }
        cursor = page.scanned_to;
    }
    Ok(Some(cursor))
}
