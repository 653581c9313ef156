//! Reads of the embedded store: a small pool of read connections used from blocking threads,
//! and the queries — get and list at a revision, count, and the history replay a watch uses to
//! catch up. Each call runs in one read transaction, so it sees one committed state (SQLite's
//! WAL mode gives readers a snapshot without blocking the writer) and checks the compaction
//! point in that same snapshot.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction};
use tokio::sync::Semaphore;

use super::schema::{read_meta, Meta};
use crate::error::{Result, StoreError};
use crate::key::prefix_end;
use crate::types::{KeyValue, Revision, WatchEvent};

/// Read connections, each used by one blocking task at a time.
pub(crate) struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub fn new(conns: Vec<Connection>) -> Self {
        let n = conns.len();
        ReadPool { conns: Mutex::new(conns), permits: Arc::new(Semaphore::new(n)) }
    }

    /// Runs `f` on a free connection on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.conns.lock().ok().and_then(|mut c| c.pop());
            let Some(mut conn) = conn else {
                return Err(StoreError::Internal("read connection pool is empty".into()));
            };
            let result = f(&mut conn);
            if let Ok(mut conns) = pool.conns.lock() {
                conns.push(conn);
            }
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    /// Refuses further reads and closes the idle connections.
    pub fn close(&self) {
        self.permits.close();
        if let Ok(mut conns) = self.conns.lock() {
            conns.clear();
        }
    }
}

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("database: {e}"))
}

/// The revision a read at `requested` sees (0 or None: the latest), checked against the
/// snapshot's meta record.
fn read_revision(meta: &Meta, requested: Option<Revision>) -> Result<Revision> {
    match requested {
        None | Some(0) => Ok(meta.revision),
        Some(r) if r < 0 => Err(StoreError::InvalidArgument(format!("revision {r} is negative"))),
        Some(r) if r > meta.revision => Err(StoreError::FutureRevision { requested: r, current: meta.revision }),
        Some(r) if r < meta.compact_revision => Err(StoreError::Compacted { requested: r, compact_revision: meta.compact_revision }),
        Some(r) => Ok(r),
    }
}

fn key_string(raw: Vec<u8>) -> Result<String> {
    String::from_utf8(raw).map_err(|_| StoreError::Internal("a stored key is not UTF-8".into()))
}

/// A key's value at a revision (the latest when None).
pub(crate) fn get(conn: &mut Connection, key: &str, at: Option<Revision>) -> Result<Option<KeyValue>> {
    let tx = conn.transaction().map_err(db_err)?;
    let meta = read_meta(&tx).map_err(db_err)?;
    let revision = read_revision(&meta, at)?;
    let row = tx
        .prepare_cached(
            "SELECT revision, create_revision, deleted, value FROM rev
             WHERE key = ?1 AND revision <= ?2 ORDER BY revision DESC LIMIT 1",
        )
        .map_err(db_err)?
        .query_row((key.as_bytes(), revision), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<Vec<u8>>>(3)?)))
        .optional()
        .map_err(db_err)?;
    Ok(match row {
        Some((mod_revision, create_revision, 0, value)) => {
            Some(KeyValue { key: key.to_string(), value: Bytes::from(value.unwrap_or_default()), create_revision, mod_revision })
        }
        _ => None,
    })
}

/// One page of a list.
pub(crate) struct Page {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
    pub more: bool,
    pub remaining: Option<u64>,
}

/// Lists the live keys of `prefix` at a revision, after `start_after` if given, at most `limit`
/// (0: all). Walks the key index in key order taking each key's newest row at or below the
/// revision; only live rows are read from the table.
pub(crate) fn list(conn: &mut Connection, prefix: &str, start_after: Option<&str>, at: Option<Revision>, limit: usize, count_remaining: bool) -> Result<Page> {
    let tx = conn.transaction().map_err(db_err)?;
    let meta = read_meta(&tx).map_err(db_err)?;
    let revision = read_revision(&meta, at)?;
    let end = range_end(prefix);
    let (sql, start): (&str, &[u8]) = match start_after {
        Some(k) => (
            "SELECT key, MAX(revision), deleted FROM rev
             WHERE key > ?1 AND key < ?2 AND revision <= ?3 GROUP BY key ORDER BY key",
            k.as_bytes(),
        ),
        None => (
            "SELECT key, MAX(revision), deleted FROM rev
             WHERE key >= ?1 AND key < ?2 AND revision <= ?3 GROUP BY key ORDER BY key",
            prefix.as_bytes(),
        ),
    };
    let mut keys = tx.prepare_cached(sql).map_err(db_err)?;
    let mut rows = keys.query((start, &end[..], revision)).map_err(db_err)?;
    let mut kvs = Vec::new();
    let mut more = false;
    let mut remaining = 0u64;
    let mut fetch = tx.prepare_cached("SELECT create_revision, value FROM rev WHERE revision = ?1").map_err(db_err)?;
    while let Some(row) = rows.next().map_err(db_err)? {
        let deleted: i64 = row.get(2).map_err(db_err)?;
        if deleted != 0 {
            continue;
        }
        if limit > 0 && kvs.len() >= limit {
            more = true;
            remaining += 1;
            if count_remaining {
                continue;
            }
            break;
        }
        let key = key_string(row.get(0).map_err(db_err)?)?;
        let mod_revision: i64 = row.get(1).map_err(db_err)?;
        let (create_revision, value) = fetch.query_row([mod_revision], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))).map_err(db_err)?;
        kvs.push(KeyValue { key, value: Bytes::from(value.unwrap_or_default()), create_revision, mod_revision });
    }
    Ok(Page { kvs, revision, more, remaining: count_remaining.then_some(remaining) })
}

/// How many live keys start with `prefix` now.
pub(crate) fn count(conn: &mut Connection, prefix: &str) -> Result<u64> {
    let tx = conn.transaction().map_err(db_err)?;
    let end = range_end(prefix);
    let mut stmt = tx.prepare_cached("SELECT MAX(revision), deleted FROM rev WHERE key >= ?1 AND key < ?2 GROUP BY key").map_err(db_err)?;
    let mut rows = stmt.query((prefix.as_bytes(), &end[..])).map_err(db_err)?;
    let mut n = 0;
    while let Some(row) = rows.next().map_err(db_err)? {
        if row.get::<_, i64>(1).map_err(db_err)? == 0 {
            n += 1;
        }
    }
    Ok(n)
}

/// Events read back from the history for a watch.
pub(crate) struct Replay {
    pub events: Vec<WatchEvent>,
    /// Every revision up to this one has been looked at.
    pub scanned_to: Revision,
}

/// The events of `prefix` with revisions in (`after`, `to`], looking at no more than
/// `max_rows` revisions. Fails with Compacted if history after `after` is gone.
pub(crate) fn replay(conn: &mut Connection, prefix: &str, after: Revision, to: Revision, max_rows: usize) -> Result<Replay> {
    let tx = conn.transaction().map_err(db_err)?;
    let meta = read_meta(&tx).map_err(db_err)?;
    if after < meta.compact_revision {
        return Err(StoreError::Compacted { requested: after, compact_revision: meta.compact_revision });
    }
    let mut stmt = tx
        .prepare_cached(
            "SELECT revision, key, deleted, create_revision, prev_revision, value FROM rev
             WHERE revision > ?1 AND revision <= ?2 ORDER BY revision LIMIT ?3",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query((after, to, max_rows as i64)).map_err(db_err)?;
    let mut events = Vec::new();
    let mut seen = 0;
    let mut last = after;
    while let Some(row) = rows.next().map_err(db_err)? {
        seen += 1;
        last = row.get(0).map_err(db_err)?;
        let key: Vec<u8> = row.get(1).map_err(db_err)?;
        if !key.starts_with(prefix.as_bytes()) {
            continue;
        }
        let key = key_string(key)?;
        let deleted: i64 = row.get(2).map_err(db_err)?;
        let create_revision: i64 = row.get(3).map_err(db_err)?;
        let prev_revision: i64 = row.get(4).map_err(db_err)?;
        let prev = if prev_revision > 0 {
            Some(
                row_at(&tx, prev_revision)?
                    .ok_or_else(|| StoreError::Internal(format!("revision {last} of {key:?} replaced revision {prev_revision}, which is missing")))?,
            )
        } else {
            None
        };
        let event = match (deleted != 0, prev) {
            (true, Some(prev)) => WatchEvent::Deleted { key, revision: last, prev },
            (false, None) => {
                let value: Option<Vec<u8>> = row.get(5).map_err(db_err)?;
                WatchEvent::Created { kv: KeyValue { key, value: Bytes::from(value.unwrap_or_default()), create_revision, mod_revision: last } }
            }
            (false, Some(prev)) => {
                let value: Option<Vec<u8>> = row.get(5).map_err(db_err)?;
                WatchEvent::Updated { kv: KeyValue { key, value: Bytes::from(value.unwrap_or_default()), create_revision, mod_revision: last }, prev }
            }
            (true, None) => return Err(StoreError::Internal(format!("deletion at revision {last} of {key:?} replaced nothing"))),
        };
        events.push(event);
    }
    let scanned_to = if seen < max_rows { to } else { last };
    Ok(Replay { events, scanned_to })
}

fn row_at(tx: &Transaction<'_>, revision: Revision) -> Result<Option<KeyValue>> {
    let row = tx
        .prepare_cached("SELECT key, create_revision, value FROM rev WHERE revision = ?1")
        .map_err(db_err)?
        .query_row([revision], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<Vec<u8>>>(2)?)))
        .optional()
        .map_err(db_err)?;
    row.map(|(key, create_revision, value)| {
        Ok(KeyValue { key: key_string(key)?, value: Bytes::from(value.unwrap_or_default()), create_revision, mod_revision: revision })
    })
    .transpose()
}

/// The exclusive end of a prefix's key range. A UTF-8 prefix never ends in 0xff, so there is
/// always one; an empty prefix (refused earlier) would get an empty range.
fn range_end(prefix: &str) -> Vec<u8> {
    prefix_end(prefix.as_bytes()).unwrap_or_default()
}
