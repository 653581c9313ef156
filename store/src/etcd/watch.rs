//! Watches on etcd: one gRPC watch stream per store watch, with previous values, started at the
//! revision after which the caller wants events. The stream is re-established from the last
//! delivered revision when the connection to a member breaks (a member killed, a leader
//! change), so a watch survives the loss of one member of a cluster; it ends with `Compacted`
//! only if etcd has compacted past that revision meanwhile.
//!
//! Bookmarks, when asked for: etcd's own periodic progress notifications (sent only to watchers
//! that have been sent every event, so always safe) are requested; on etcd versions whose answer to an
//! explicit progress request is ordered with the events (3.4.25+, 3.5.8+), the watch also asks
//! for one whenever it has been idle for the chosen interval.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, WatchClient, WatchOptions as EtcdWatchOptions, WatchRequestSender, WatchResponseStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::error::{classify, plain, Failure};
use crate::error::{Result, StoreError};
use crate::key::prefix_end;
use crate::types::{deliver, KeyValue, Revision, WatchEvent, WatchOptions};

/// How long a broken watch keeps trying to come back before it reports Unavailable.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub(crate) struct WatchSetup {
    pub client: WatchClient,
    pub prefix: String,
    pub options: WatchOptions,
    /// Whether explicit progress requests are safe on this etcd.
    pub progress_requests: bool,
    pub timeout: Duration,
}

type Streams = (WatchRequestSender, WatchResponseStream);

/// Opens the gRPC watch for events after `after` and waits until etcd has created it.
pub(crate) async fn open(setup: &WatchSetup, after: Revision) -> Result<Streams> {
    let end = prefix_end(setup.prefix.as_bytes()).unwrap_or_default();
    // start at `after` itself (its events are skipped) so etcd refuses the watch exactly when
    // reads at `after` are gone: the previous values of the events after it are then still kept.
    let mut options = EtcdWatchOptions::new().with_range(end).with_prev_key().with_start_revision(after.max(1));
    if setup.options.progress_interval.is_some() {
        options = options.with_progress_notify();
    }
    let mut client = setup.client.clone();
    let stream = tokio::time::timeout(setup.timeout, client.watch(setup.prefix.as_bytes(), Some(options)))
        .await
        .map_err(|_| super::error::timed_out(setup.timeout))?
        .map_err(|e| plain(classify(&e)))?;
    let (sender, mut responses) = stream.split();
    loop {
        let msg = tokio::time::timeout(setup.timeout, responses.message())
            .await
            .map_err(|_| super::error::timed_out(setup.timeout))?
            .map_err(|e| plain(classify(&e)))?;
        let Some(resp) = msg else {
            return Err(StoreError::Unavailable("etcd closed the watch".into()));
        };
        if resp.canceled() {
            return Err(cancelled(after, &resp));
        }
        if resp.created() {
            return Ok((sender, responses));
        }
    }
}

fn cancelled(after: Revision, resp: &etcd_client::WatchResponse) -> StoreError {
    if resp.compact_revision() > 0 {
        StoreError::Compacted { requested: after, compact_revision: resp.compact_revision() }
    } else {
        StoreError::Unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason()))
    }
}

/// The watch's body: forward events after `cursor`, bookmark when idle, re-establish the stream
/// when it breaks.
pub(crate) async fn run(setup: WatchSetup, mut cursor: Revision, streams: Streams, out: mpsc::Sender<Result<WatchEvent>>) {
    let (mut sender, mut responses) = streams;
    let mut ticker = setup.options.progress_interval.map(|every| {
        let mut t = tokio::time::interval_at(Instant::now() + every, every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut sent = false;
    loop {
        let broken: String = tokio::select! {
            _ = out.closed() => return,
            msg = responses.message() => match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        let e = cancelled(cursor, &resp);
                        if matches!(e, StoreError::Compacted { .. }) {
                            deliver(&out, Err(e)).await;
                            return;
                        }
                        e.to_string()
                    } else if resp.events().is_empty() {
                        if !resp.created() {
                            let revision = resp.header().map_or(cursor, |h| h.revision()).max(cursor);
                            if !deliver(&out, Ok(WatchEvent::Progress { revision })).await {
                                return;
                            }
                        }
                        continue;
                    } else {
                        let mut top = cursor;
                        for ev in resp.events() {
                            let revision = ev.kv().map_or(0, |kv| kv.mod_revision());
                            if revision <= cursor {
                                continue;
                            }
                            let event = match convert(ev) {
                                Ok(e) => e,
                                Err(e) => {
                                    deliver(&out, Err(e)).await;
                                    return;
                                }
                            };
                            top = top.max(revision);
                            if !deliver(&out, Ok(event)).await {
                                return;
                            }
                            sent = true;
                        }
                        cursor = top;
                        continue;
                    }
                }
                Ok(None) => "etcd closed the watch stream".to_string(),
                Err(e) => match classify(&e) {
                    Failure::Unavailable(m) | Failure::Other(m) => m,
                    f => plain(f).to_string(),
                },
            },
            _ = tick(&mut ticker) => {
                if !sent && setup.progress_requests {
                    if let Err(e) = sender.request_progress().await {
                        tracing::debug!(error = %e, "cluster store: etcd progress request failed");
                    }
                }
                sent = false;
                continue;
            }
        };
        tracing::info!(prefix = setup.prefix, revision = cursor, reason = broken, "cluster store: etcd watch broke, re-establishing");
        match reopen(&setup, cursor, &out).await {
            Some(s) => (sender, responses) = s,
            None => return,
        }
    }
}

/// Re-establishes the watch after `cursor`, retrying with back-off; None when it gave up (the
/// reason was delivered) or the reader left.
async fn reopen(setup: &WatchSetup, cursor: Revision, out: &mpsc::Sender<Result<WatchEvent>>) -> Option<Streams> {
    let deadline = Instant::now() + RECONNECT_FOR;
    let mut pause = Duration::from_millis(50);
    loop {
        if out.is_closed() {
            return None;
        }
        match open(setup, cursor).await {
            Ok(s) => return Some(s),
            Err(e @ StoreError::Compacted { .. }) => {
                deliver(out, Err(e)).await;
                return None;
            }
            Err(e) if Instant::now() >= deadline => {
                deliver(out, Err(e)).await;
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster store: etcd watch not back yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

pub(crate) fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key().to_vec()).map_err(|_| StoreError::Internal("etcd returned a key that is not UTF-8".into()))?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// An etcd event as a store event; a missing previous value (compacted under a slow watch)
/// ends the watch with Compacted.
fn convert(ev: &etcd_client::Event) -> Result<WatchEvent> {
    let kv = ev.kv().ok_or_else(|| StoreError::Internal("etcd sent an event without a key".into()))?;
    let prev = ev.prev_kv().map(key_value).transpose()?;
    let revision = kv.mod_revision();
    let lost = || StoreError::Compacted { requested: revision - 1, compact_revision: revision };
    Ok(match ev.event_type() {
        EventType::Put if kv.version() == 1 => WatchEvent::Created { kv: key_value(kv)? },
        EventType::Put => WatchEvent::Updated { kv: key_value(kv)?, prev: prev.ok_or_else(lost)? },
        EventType::Delete => WatchEvent::Deleted { key: key_value(kv)?.key, revision, prev: prev.ok_or_else(lost)? },
    })
}
