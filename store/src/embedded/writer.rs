//! The single writer: one thread owns the only write connection and applies every write in
//! arrival order. This is how the embedded store avoids what k3s users meet with kine on SQLite:
//!
//! - writers never race for SQLite's lock ("database is locked"): they queue here;
//! - group commit: every request waiting when a transaction starts joins it, so 16 or 64
//!   concurrent writers share one fsync (`synchronous=FULL` makes each commit durable);
//! - background work rides along in small slices — one compaction step, one TTL sweep, one
//!   incremental-vacuum step per transaction — so it never holds writers up for long;
//! - checkpoints run on the checkpointer thread, never in a writer's commit.
//!
//! After each commit the thread publishes the batch's events to the watch hub, then answers the
//! callers. A failed transaction is rolled back as a whole and every caller in it gets the error;
//! revisions are only taken by committed writes, so they stay gapless.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::schema::{read_meta, write_meta, Meta};
use super::Shared;
use crate::error::{Result, StoreError};
use crate::types::{Deleted, KeyValue, Revision, WatchEvent};

/// How long without writes before background work gets transactions of its own.
const IDLE_AFTER: Duration = Duration::from_millis(20);

/// A write asked of the writer thread.
pub(crate) enum Op {
    Create {
        key: String,
        value: Bytes,
        expires_at_ms: Option<i64>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        expires_at_ms: Option<i64>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// Move the compaction point; answered once the old rows are gone.
    Compact {
        revision: Revision,
    },
    /// Finish the queued writes, then stop.
    Shutdown,
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Create { value, .. } | Op::Update { value, .. } => value.len(),
            _ => 0,
        }
    }
}

/// What a write did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Written(KeyValue),
    Deleted(Deleted),
    Compacted,
    Stopped,
}

pub(crate) type Reply = oneshot::Sender<Result<Outcome>>;

pub(crate) struct Request {
    pub op: Op,
    pub reply: Reply,
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub(crate) struct WriterTuning {
    /// Past this many pages in the log, the writer checkpoints between two transactions.
    pub wal_hard_limit: i64,
    pub max_batch: usize,
    pub max_batch_bytes: usize,
    /// How long a group commit may wait for the writers of the previous one.
    pub linger: Duration,
    pub compaction_step: i64,
    pub vacuum_step_pages: u32,
    pub ttl_sweep_interval: Duration,
    pub ttl_sweep_batch: usize,
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub shared: Arc<Shared>,
    pub rx: Receiver<Request>,
    pub tuning: WriterTuning,
    /// Pages in the write-ahead log after the last commit (set by the WAL hook).
    pub wal_pages: Arc<AtomicI64>,
}

/// The row found for a key.
struct Latest {
    revision: Revision,
    create_revision: Revision,
    deleted: bool,
}

/// State a transaction builds up; adopted only if it commits.
struct Batch {
    meta: Meta,
    events: Vec<WatchEvent>,
}

enum Answer {
    Now(Result<Outcome>),
    /// A compaction: answer once `compacted_through` reaches this revision.
    AfterCompaction(Revision),
}

impl Writer {
    /// The thread's body; returns when the store is shut down or every handle is gone.
    pub fn run(mut self) {
        let mut meta = match read_meta(&self.conn) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "cluster store: cannot read its meta record");
                self.shared.hub.close();
                return;
            }
        };
        let mut waiters: Vec<(Revision, Reply)> = Vec::new();
        let mut next_sweep = Instant::now();
        let mut vacuum = false;
        let mut stop = false;
        let mut last_batch = 0usize;
        let mut last_write = Instant::now();
        while !stop {
            // Background work (compaction, vacuum) gets transactions of its own only once no
            // write has come for a moment; under load compaction rides along with the writes.
            let background = meta.compacted_through < meta.compact_revision || vacuum;
            let now = Instant::now();
            let idle_at = last_write + IDLE_AFTER;
            let mut until = next_sweep;
            if background {
                until = until.min(idle_at);
            }
            let wait = until.saturating_duration_since(now);
            let mut batch: Vec<Request> = Vec::new();
            match self.rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut bytes = batch.first().map_or(0, |r| r.op.size());
            // Group commit: take everything queued; if fewer writers than last time are back
            // yet, linger a moment for the others (they are answering their last write).
            let linger_until = Instant::now() + self.tuning.linger;
            while batch.len() < self.tuning.max_batch && bytes < self.tuning.max_batch_bytes {
                let next = match self.rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(_) if !batch.is_empty() && batch.len() < last_batch => {
                        let left = linger_until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            None
                        } else {
                            self.rx.recv_timeout(left).ok()
                        }
                    }
                    Err(_) => None,
                };
                match next {
                    Some(r) => {
                        bytes += r.op.size();
                        batch.push(r);
                    }
                    None => break,
                }
            }
            last_batch = batch.len();
            let idle = batch.is_empty() && Instant::now() >= last_write + IDLE_AFTER;
            if !batch.is_empty() {
                last_write = Instant::now();
            }
            let sweep = Instant::now() >= next_sweep;
            let mut requests = Vec::with_capacity(batch.len());
            let mut ops = Vec::with_capacity(batch.len());
            for r in batch {
                if matches!(r.op, Op::Shutdown) {
                    stop = true;
                    let _ = r.reply.send(Ok(Outcome::Stopped));
                } else {
                    ops.push(r.op);
                    requests.push(r.reply);
                }
            }
            let vacuum_now = vacuum && idle && meta.compacted_through >= meta.compact_revision;
            if ops.is_empty() && !sweep && !idle {
                continue;
            }
            match self.transaction(meta, ops, sweep, vacuum_now) {
                Ok((batch, answers, more_expired, freelist)) => {
                    let revision_moved = batch.meta.revision != meta.revision;
                    meta = batch.meta;
                    self.shared.compact_revision.store(meta.compact_revision, Ordering::SeqCst);
                    if revision_moved {
                        self.shared.hub.publish(batch.events, meta.revision);
                        self.shared.revision.store(meta.revision, Ordering::SeqCst);
                    }
                    for (reply, answer) in requests.into_iter().zip(answers) {
                        match answer {
                            Answer::Now(r) => {
                                let _ = reply.send(r);
                            }
                            Answer::AfterCompaction(rev) => waiters.push((rev, reply)),
                        }
                    }
                    if sweep {
                        next_sweep = if more_expired { Instant::now() } else { Instant::now() + self.tuning.ttl_sweep_interval };
                    }
                    if let Some((free, total)) = freelist {
                        vacuum = if vacuum_now { free > 0 } else { worth_vacuum(free, total) };
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster store: write transaction failed, rolled back");
                    let err = StoreError::Internal(format!("write transaction failed: {e}"));
                    for reply in requests {
                        let _ = reply.send(Err(err.clone()));
                    }
                    // Do not spin on a failing background step.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if self.wal_pages.load(Ordering::Relaxed) > self.tuning.wal_hard_limit {
                self.restart_log();
            }
            let done: Vec<Reply> = drain_finished(&mut waiters, meta.compacted_through);
            for reply in done {
                let _ = reply.send(Ok(Outcome::Compacted));
            }
        }
        for (_, reply) in waiters {
            let _ = reply.send(Err(StoreError::Unavailable("the store was closed".into())));
        }
        self.shared.hub.close();
    }

    /// Under a steady stream of commits the checkpointer never quite catches up with the end
    /// of the log, so the log never starts over. Past the hard limit the writer checkpoints
    /// itself between two transactions (only what the checkpointer has not copied yet, without
    /// waiting for anyone); its next transaction then starts the log over.
    fn restart_log(&mut self) {
        match self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
            Ok((busy, log, done)) => {
                tracing::debug!(busy, log, done, "cluster store: writer checkpoint");
                if busy == 0 && log == done {
                    self.wal_pages.store(0, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster store: writer checkpoint postponed"),
        }
    }

    /// One transaction: the callers' ops in order, then one slice of background work.
    /// Returns the new state, one answer per op, whether more keys have expired than one sweep
    /// removes, and (after a vacuum-relevant step) the free and total page counts.
    #[allow(clippy::type_complexity)]
    fn transaction(&mut self, meta: Meta, ops: Vec<Op>, sweep: bool, vacuum: bool) -> rusqlite::Result<(Batch, Vec<Answer>, bool, Option<(i64, i64)>)> {
        let mut batch = Batch { meta, events: Vec::new() };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let idle = ops.is_empty();
        // Under load a compaction slice matches the batch (so it keeps up without slowing the
        // batch much); when idle it is larger.
        let step = if idle { 4 * self.tuning.compaction_step } else { self.tuning.compaction_step.min(4 * (ops.len() as i64).max(16)) };
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            answers.push(apply(&tx, &mut batch, op)?);
        }
        let mut more_expired = false;
        if sweep {
            more_expired = expire(&tx, &mut batch, unix_ms(), self.tuning.ttl_sweep_batch)?;
        }
        let mut freelist = None;
        if batch.meta.compacted_through < batch.meta.compact_revision {
            compact_step(&tx, &mut batch, step)?;
            if batch.meta.compacted_through >= batch.meta.compact_revision {
                freelist = Some(page_counts(&tx)?);
            }
        } else if vacuum {
            // Giving pages back moves pages: only when the store is idle.
            tx.execute_batch(&format!("PRAGMA incremental_vacuum({})", self.tuning.vacuum_step_pages))?;
            freelist = Some(page_counts(&tx)?);
        }
        if batch.meta != meta {
            write_meta(&tx, &batch.meta)?;
        }
        tx.commit()?;
        Ok((batch, answers, more_expired, freelist))
    }
}

/// Vacuum once compaction has left more than a quarter of the file free.
fn worth_vacuum(free: i64, total: i64) -> bool {
    free >= 16 && free * 4 > total
}

fn drain_finished(waiters: &mut Vec<(Revision, Reply)>, through: Revision) -> Vec<Reply> {
    let mut done = Vec::new();
    let mut i = 0;
    while i < waiters.len() {
        if waiters[i].0 <= through {
            done.push(waiters.swap_remove(i).1);
        } else {
            i += 1;
        }
    }
    done
}

fn page_counts(tx: &Transaction<'_>) -> rusqlite::Result<(i64, i64)> {
    let free: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let total: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok((free, total))
}

/// Applies one op inside the transaction. Refusals (conflict, not found, ...) are answers; only
/// database failures abort the transaction.
fn apply(tx: &Transaction<'_>, batch: &mut Batch, op: Op) -> rusqlite::Result<Answer> {
    Ok(match op {
        Op::Create { key, value, expires_at_ms } => {
            if let Some(l) = latest(tx, &key)? {
                if !l.deleted {
                    return Ok(Answer::Now(Err(StoreError::AlreadyExists { key })));
                }
            }
            let revision = batch.meta.revision + 1;
            insert(tx, revision, &key, false, revision, 0, Some(&value))?;
            set_expiry(tx, &key, expires_at_ms)?;
            batch.meta.revision = revision;
            let kv = KeyValue { key, value, create_revision: revision, mod_revision: revision };
            batch.events.push(WatchEvent::Created { kv: kv.clone() });
            Answer::Now(Ok(Outcome::Written(kv)))
        }
        Op::Update { key, value, expected, expires_at_ms } => {
            let l = match latest(tx, &key)? {
                Some(l) if !l.deleted => l,
                _ => return Ok(Answer::Now(Err(StoreError::NotFound { key }))),
            };
            let prev = row_value(tx, &key, &l)?;
            if l.revision != expected {
                return Ok(Answer::Now(Err(StoreError::Conflict { key, expected, current: Box::new(prev) })));
            }
            let revision = batch.meta.revision + 1;
            insert(tx, revision, &key, false, l.create_revision, l.revision, Some(&value))?;
            set_expiry(tx, &key, expires_at_ms)?;
            batch.meta.revision = revision;
            let kv = KeyValue { key, value, create_revision: l.create_revision, mod_revision: revision };
            batch.events.push(WatchEvent::Updated { kv: kv.clone(), prev });
            Answer::Now(Ok(Outcome::Written(kv)))
        }
        Op::Delete { key, expected } => match delete(tx, batch, key, expected)? {
            Ok(d) => Answer::Now(Ok(Outcome::Deleted(d))),
            Err(e) => Answer::Now(Err(e)),
        },
        Op::Compact { revision } => {
            if revision > batch.meta.revision {
                Answer::Now(Err(StoreError::FutureRevision { requested: revision, current: batch.meta.revision }))
            } else if revision <= batch.meta.compact_revision {
                if revision <= batch.meta.compacted_through {
                    Answer::Now(Ok(Outcome::Compacted))
                } else {
                    Answer::AfterCompaction(revision)
                }
            } else {
                batch.meta.compact_revision = revision;
                Answer::AfterCompaction(revision)
            }
        }
        Op::Shutdown => Answer::Now(Ok(Outcome::Stopped)),
    })
}

fn delete(tx: &Transaction<'_>, batch: &mut Batch, key: String, expected: Option<Revision>) -> rusqlite::Result<Result<Deleted>> {
    let l = match latest(tx, &key)? {
        Some(l) if !l.deleted => l,
        _ => return Ok(Err(StoreError::NotFound { key })),
    };
    let prev = row_value(tx, &key, &l)?;
    if let Some(expected) = expected {
        if l.revision != expected {
            return Ok(Err(StoreError::Conflict { key, expected, current: Box::new(prev) }));
        }
    }
    let revision = batch.meta.revision + 1;
    insert(tx, revision, &key, true, l.create_revision, l.revision, None)?;
    set_expiry(tx, &key, None)?;
    batch.meta.revision = revision;
    batch.events.push(WatchEvent::Deleted { key, revision, prev: prev.clone() });
    Ok(Ok(Deleted { prev, revision }))
}

/// Deletes up to `limit` expired keys; true if more are due.
fn expire(tx: &Transaction<'_>, batch: &mut Batch, now_ms: i64, limit: usize) -> rusqlite::Result<bool> {
    let keys: Vec<Vec<u8>> = tx
        .prepare_cached("SELECT key FROM expiry WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2")?
        .query_map((now_ms, limit as i64), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let more = keys.len() >= limit;
    for raw in keys {
        match String::from_utf8(raw) {
            Ok(key) => {
                tracing::debug!(key, "cluster store: TTL expired");
                let gone = delete(tx, batch, key.clone(), None)?;
                if gone.is_err() {
                    set_expiry(tx, &key, None)?;
                }
            }
            Err(e) => {
                tx.prepare_cached("DELETE FROM expiry WHERE key = ?1")?.execute([e.as_bytes()])?;
            }
        }
    }
    Ok(more)
}

/// Removes the rows superseded at or before the compaction point, for the next `step`
/// revisions after `compacted_through`: each write in the slice removes the row it replaced,
/// and a deletion in the slice removes itself. Afterwards each key keeps, of its rows at or
/// before the slice's end, only its latest one, and only if that one is not a deletion —
/// exactly what reads at the compaction point and after still need (a watch's previous values
/// included).
fn compact_step(tx: &Transaction<'_>, batch: &mut Batch, step: i64) -> rusqlite::Result<()> {
    let from = batch.meta.compacted_through;
    let to = (from + step).min(batch.meta.compact_revision);
    let replaced: Vec<i64> = tx
        .prepare_cached("SELECT prev_revision FROM rev WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0")?
        .query_map((from, to), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut del = tx.prepare_cached("DELETE FROM rev WHERE revision = ?1")?;
        for revision in replaced {
            del.execute([revision])?;
        }
    }
    tx.prepare_cached("DELETE FROM rev WHERE revision > ?1 AND revision <= ?2 AND deleted = 1")?.execute((from, to))?;
    batch.meta.compacted_through = to;
    Ok(())
}

fn latest(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<Latest>> {
    tx.prepare_cached("SELECT revision, create_revision, deleted FROM rev WHERE key = ?1 ORDER BY revision DESC LIMIT 1")?
        .query_row([key.as_bytes()], |r| Ok(Latest { revision: r.get(0)?, create_revision: r.get(1)?, deleted: r.get::<_, i64>(2)? != 0 }))
        .optional()
}

fn row_value(tx: &Transaction<'_>, key: &str, l: &Latest) -> rusqlite::Result<KeyValue> {
    let value: Option<Vec<u8>> = tx.prepare_cached("SELECT value FROM rev WHERE revision = ?1")?.query_row([l.revision], |r| r.get(0))?;
    Ok(KeyValue { key: key.to_string(), value: Bytes::from(value.unwrap_or_default()), create_revision: l.create_revision, mod_revision: l.revision })
}

fn insert(
    tx: &Transaction<'_>,
    revision: Revision,
    key: &str,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    value: Option<&[u8]>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO rev (revision, key, deleted, create_revision, prev_revision, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute((
        revision,
        key.as_bytes(),
        deleted as i64,
        create_revision,
        prev_revision,
        value,
    ))?;
    Ok(())
}

fn set_expiry(tx: &Transaction<'_>, key: &str, expires_at_ms: Option<i64>) -> rusqlite::Result<()> {
    match expires_at_ms {
        Some(at) => tx
            .prepare_cached("INSERT INTO expiry (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at")?
            .execute((key.as_bytes(), at))?,
        None => tx.prepare_cached("DELETE FROM expiry WHERE key = ?1")?.execute([key.as_bytes()])?,
    };
    Ok(())
}

/// Milliseconds since the Unix epoch (TTLs are wall-clock deadlines, kept across restarts).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Asks the writer for `op` and waits for the answer.
pub(crate) async fn submit(sender: Option<std::sync::mpsc::Sender<Request>>, op: Op) -> Result<Outcome> {
    let closed = || StoreError::Unavailable("the store is closed".into());
    let sender = sender.ok_or_else(closed)?;
    let (reply, answer) = oneshot::channel();
    sender.send(Request { op, reply }).map_err(|_| closed())?;
    drop(sender);
    answer.await.map_err(|_| closed())?
}
