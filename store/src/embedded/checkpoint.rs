//! The checkpointer: a thread with its own connection that copies the write-ahead log back into
//! the database file. Writers never run a checkpoint themselves (automatic checkpoints are off),
//! so no commit stalls behind one:
//!
//! - once the log holds more than a threshold of pages, a PASSIVE checkpoint copies what it can
//!   without waiting for or blocking the writer or readers; when everything has been copied,
//!   the next write starts the log over from the beginning, and `journal_size_limit` truncates
//!   the file;
//! - once the store has been idle for a moment after writes, a TRUNCATE checkpoint empties the
//!   log file, tried without waiting: if anyone is reading or writing it gives up at once and
//!   tries again at the next idle moment.
//!
//! So the log stays bounded however long the store runs, and shrinks to nothing at rest.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// How long without commits counts as idle.
const IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// The log is over the threshold.
    pending: bool,
    /// Commits happened since the last truncation.
    dirty: bool,
    /// Counts commits.
    generation: u64,
    stop: bool,
}

/// What the writer tells the checkpointer.
#[derive(Default)]
pub(crate) struct CheckpointSignal {
    state: Mutex<State>,
    cv: Condvar,
}

enum Wake {
    Passive,
    Truncate,
    Stop,
}

impl CheckpointSignal {
    /// A commit happened; `over` when the log holds more pages than the threshold.
    pub fn committed(&self, over: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.dirty = true;
            s.generation = s.generation.wrapping_add(1);
            if over && !s.pending {
                s.pending = true;
                self.cv.notify_one();
            }
        }
    }

    /// Makes the checkpointer exit.
    pub fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
            self.cv.notify_one();
        }
    }

    fn wait(&self) -> Wake {
        let Ok(mut s) = self.state.lock() else {
            return Wake::Stop;
        };
        loop {
            if s.stop {
                return Wake::Stop;
            }
            if s.pending {
                s.pending = false;
                return Wake::Passive;
            }
            let generation = s.generation;
            let (next, timeout) = match self.cv.wait_timeout(s, IDLE) {
                Ok(r) => r,
                Err(_) => return Wake::Stop,
            };
            s = next;
            let idle = timeout.timed_out() && s.generation == generation;
            if idle && s.dirty && !s.pending && !s.stop {
                s.dirty = false;
                return Wake::Truncate;
            }
        }
    }

    /// Marks the log as written again (a truncation gave up).
    fn redo(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.dirty = true;
        }
    }
}

/// The checkpointer thread's body.
pub(crate) fn run(conn: Connection, signal: &CheckpointSignal) {
    loop {
        match signal.wait() {
            Wake::Stop => return,
            Wake::Passive => match checkpoint(&conn, "PASSIVE") {
                Ok((busy, log, done)) => {
                    tracing::trace!(busy, log, done, "cluster store: checkpoint");
                }
                Err(e) => tracing::warn!(error = %e, "cluster store: checkpoint failed"),
            },
            Wake::Truncate => {
                // Never wait for anyone: a busy database means "not idle after all".
                let _ = conn.busy_timeout(Duration::ZERO);
                match checkpoint(&conn, "TRUNCATE") {
                    Ok((0, _, _)) => tracing::trace!("cluster store: write-ahead log truncated"),
                    Ok(_) => signal.redo(),
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster store: truncation postponed");
                        signal.redo();
                    }
                }
                let _ = conn.busy_timeout(Duration::from_secs(10));
            }
        }
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}
