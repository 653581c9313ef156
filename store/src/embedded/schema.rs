//! The layout of the embedded store's SQLite file and how connections to it are opened: the
//! tables, the pragmas every connection runs with, and the single-row `meta` record. No query
//! logic lives here.
//!
//! Tables:
//! - `rev`: the history, one row per revision (the revision is the row id, so the newest rows
//!   are always appended at the end of the table's B-tree). A row holds the key, whether it is a
//!   deletion (a tombstone), the key's create revision, `prev_revision` (the row this write
//!   replaced, 0 for a creation) and the value. Index `rev_key (key, revision, deleted)` finds a
//!   key's row at any revision and lets a list tell live keys from tombstones without reading
//!   values.
//! - `expiry`: keys written with a TTL and when they expire.
//! - `meta`: the current revision, the compaction point, and how far old rows have been removed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::read::db_err;
use crate::error::{Result, StoreError};
use crate::types::Revision;

/// The database file inside the data dir (SQLite adds `store.db-wal` and `store.db-shm`).
pub(crate) const DB_FILE: &str = "store.db";
/// Held with an exclusive lock while a store has the data dir open.
pub(crate) const LOCK_FILE: &str = "store.lock";

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE rev (
    revision        INTEGER PRIMARY KEY,
    key             BLOB    NOT NULL,
    deleted         INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    value           BLOB
);
CREATE INDEX rev_key ON rev (key, revision, deleted);
CREATE TABLE expiry (
    key        BLOB    PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX expiry_at ON expiry (expires_at);
CREATE TABLE meta (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    revision          INTEGER NOT NULL,
    compact_revision  INTEGER NOT NULL,
    compacted_through INTEGER NOT NULL
);
INSERT INTO meta (id, revision, compact_revision, compacted_through) VALUES (1, 0, 0, 0);
";

/// The store's counters as committed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The last revision written.
    pub revision: Revision,
    /// Reads and watches below this revision fail with Compacted.
    pub compact_revision: Revision,
    /// Old rows superseded at or before this revision have been removed.
    pub compacted_through: Revision,
}

/// Opens the writer's connection, creating and laying out the file on first use.
///
/// WAL journal with `synchronous=FULL`: every commit is fsynced to the WAL before it returns,
/// so an acknowledged write survives a crash. Automatic checkpoints are off on this connection
/// (the checkpointer thread runs them); `journal_size_limit` truncates the WAL when it restarts.
/// `auto_vacuum=INCREMENTAL` lets compaction give freed pages back in small steps.
pub(crate) fn open_writer(path: &Path, journal_size_limit: u64) -> Result<Connection> {
    open_writer_inner(path, journal_size_limit).map_err(|e| match e {
        OpenError::Db(e) => db_err(e),
        OpenError::Refused(m) => StoreError::Internal(m),
    })
}

enum OpenError {
    Db(rusqlite::Error),
    Refused(String),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Db(e)
    }
}

fn open_writer_inner(path: &Path, journal_size_limit: u64) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Only effective before the first table exists: a new file gets incremental vacuum.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Refused(format!("the database refused WAL mode (journal_mode is {mode})")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", journal_size_limit as i64)?;
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    match version {
        0 => {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))?;
        }
        SCHEMA_VERSION => {}
        other => return Err(OpenError::Refused(format!("the file has schema version {other}, this build knows {SCHEMA_VERSION}"))),
    }
    Ok(conn)
}

/// Opens a connection for reads (or for the checkpointer): it never writes rows.
pub(crate) fn open_reader(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Reads the meta record (inside the caller's transaction, so it matches the rows it reads).
pub(crate) fn read_meta(conn: &Connection) -> rusqlite::Result<Meta> {
    conn.prepare_cached("SELECT revision, compact_revision, compacted_through FROM meta WHERE id = 1")?
        .query_row([], |r| Ok(Meta { revision: r.get(0)?, compact_revision: r.get(1)?, compacted_through: r.get(2)? }))
        .optional()?
        .ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// Writes the meta record (inside the writer's transaction).
pub(crate) fn write_meta(conn: &Connection, meta: &Meta) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE meta SET revision = ?1, compact_revision = ?2, compacted_through = ?3 WHERE id = 1")?.execute((
        meta.revision,
        meta.compact_revision,
        meta.compacted_through,
    ))?;
    Ok(())
}
