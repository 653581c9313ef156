//! The embedded backend, the default of `berth server`: the whole store in one SQLite file
//! (`store.db`, plus its write-ahead log `store.db-wal`) under the data dir.
//!
//! Why SQLite (through rusqlite, bundled): it is the most tested embedded engine there is, its
//! WAL mode gives durable commits with one fsync each and lets readers read a snapshot while the
//! writer writes, and the file can be inspected with the `sqlite3` tool. redb was the other
//! candidate: pure Rust, but younger, with frequent incompatible majors, and its file only
//! shrinks through an exclusive `compact()`, while SQLite's incremental vacuum gives pages back
//! in small steps next to live traffic.
//!
//! kine (k3s) also stores Kubernetes in SQLite; this backend is laid out against its known
//! problems:
//! - "database is locked": one writer thread owns the only write connection ([`writer`]);
//!   callers queue, never race for SQLite's lock;
//! - throughput: group commit — all queued writes share one transaction and one fsync;
//! - WAL files growing to gigabytes and multi-second checkpoint stalls: automatic checkpoints
//!   are off; a separate thread runs non-blocking checkpoints as the log grows
//!   ([`checkpoint`]), and `journal_size_limit` truncates the log when it restarts;
//! - a database that grows without bound under churn: old revisions are removed by compaction
//!   in small steps inside ordinary write transactions, freed pages are reused, and when
//!   compaction has left much of the file free, incremental vacuum gives it back;
//! - a query per event per watcher: one in-memory fan-out ([`hub`]) serves every watcher.
//!
//! The writer thread also asks the kernel for short scheduling slices ([`latency`]), so that on
//! a busy machine it runs as soon as its fsync completes rather than at the next tick.
//!
//! Crash safety: `synchronous=FULL` makes every commit durable before any caller hears of it;
//! revisions are taken only by committed transactions, so they stay gapless after a `kill -9`.
//! A lock file keeps a second process (or store) off the same data dir.

mod checkpoint;
mod hub;
mod latency;
mod read;
mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use self::checkpoint::CheckpointSignal;
use self::hub::{Hub, WatchSource};
use self::read::ReadPool;
use self::writer::{submit, Op, Outcome, Request, Writer, WriterTuning};
use crate::continue_token;
use crate::error::{Result, StoreError};
use crate::key::{check_key, check_prefix, check_value, normalize_prefix};
use crate::store::Store;
use crate::types::{Deleted, KeyValue, ListOptions, ListResponse, Revision, WatchOptions, WatchStream, WATCH_BUFFER};

/// Settings of the embedded store. [`EmbeddedConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The data dir; created if missing. The store owns `store.db*` and `store.lock` in it.
    pub dir: PathBuf,
    /// Key prefix (default `/registry/`).
    pub prefix: String,
    /// Largest value accepted (default 1.5 MiB).
    pub max_value_bytes: usize,
    /// Compact periodically, keeping this much history (default 5 minutes, like the
    /// apiserver's `--etcd-compaction-interval`); None: only when [`Store::compact`] is called.
    pub compaction_interval: Option<Duration>,
    /// Events kept in memory for watchers (default 4096); a watcher further behind is closed.
    pub watch_ring: usize,
    /// Read connections (default 4).
    pub readers: usize,
    /// At most this many writes share one transaction (default 1024).
    pub max_batch: usize,
    /// How often expired TTL keys are looked for (default 1 s).
    pub ttl_sweep_interval: Duration,
    /// Checkpoint the write-ahead log once it holds this many 4 KiB pages (default 1024).
    pub checkpoint_pages: u32,
    /// Revisions compacted per write transaction (default 256).
    pub compaction_step: i64,
}

impl EmbeddedConfig {
    /// The defaults, with the data dir.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            prefix: crate::key::DEFAULT_PREFIX.to_string(),
            max_value_bytes: crate::key::DEFAULT_MAX_VALUE_BYTES,
            compaction_interval: Some(Duration::from_secs(300)),
            watch_ring: 4096,
            readers: 4,
            max_batch: 1024,
            ttl_sweep_interval: Duration::from_secs(1),
            checkpoint_pages: 1024,
            compaction_step: 256,
        }
    }
}

/// What the writer, the readers and the watchers share.
pub(crate) struct Shared {
    pub prefix: String,
    pub max_value_bytes: usize,
    pub hub: Arc<Hub>,
    pub reads: Arc<ReadPool>,
    /// The last committed revision.
    pub revision: AtomicI64,
    /// The committed compaction point.
    pub compact_revision: AtomicI64,
}

struct Inner {
    shared: Arc<Shared>,
    dir: PathBuf,
    writer: Mutex<Option<std::sync::mpsc::Sender<Request>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    checkpoint: Arc<CheckpointSignal>,
    compactor: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut c) = self.compactor.lock() {
            if let Some(task) = c.take() {
                task.abort();
            }
        }
        // Dropping the writer's sender stops it; it then stops the checkpointer.
    }
}

/// The embedded store (cheap to clone: clones share one store).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// Bytes the store's files take on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// `store.db`.
    pub db_bytes: u64,
    /// `store.db-wal`.
    pub wal_bytes: u64,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `config.dir`. Fails with `Unavailable` if another store
    /// has the dir open.
    pub async fn open(config: EmbeddedConfig) -> Result<Self> {
        let prefix = normalize_prefix(&config.prefix)?;
        if config.readers == 0 || config.max_batch == 0 || config.compaction_step <= 0 {
            return Err(StoreError::InvalidArgument("readers, max_batch and compaction_step must be above zero".into()));
        }
        let cfg = config.clone();
        let opened = tokio::task::spawn_blocking(move || open_files(&cfg)).await.map_err(|e| StoreError::Internal(format!("open task failed: {e}")))??;
        let OpenFiles { lock, mut writer_conn, readers, checkpointer, meta } = opened;

        let hub = Arc::new(Hub::new(config.watch_ring, meta.revision));
        let reads = Arc::new(ReadPool::new(readers));
        let shared = Arc::new(Shared {
            prefix,
            max_value_bytes: config.max_value_bytes,
            hub,
            reads,
            revision: AtomicI64::new(meta.revision),
            compact_revision: AtomicI64::new(meta.compact_revision),
        });
        let signal = Arc::new(CheckpointSignal::default());
        let hook_signal = signal.clone();
        let threshold = config.checkpoint_pages.max(1) as i32;
        let wal_pages = Arc::new(AtomicI64::new(0));
        let hook_pages = wal_pages.clone();
        writer_conn
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                hook_pages.store(i64::from(pages), Ordering::Relaxed);
                hook_signal.committed(pages >= threshold);
                Ok(())
            }))
            .map_err(read::db_err)?;

        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            conn: writer_conn,
            shared: shared.clone(),
            rx,
            wal_pages,
            tuning: WriterTuning {
                wal_hard_limit: 4 * i64::from(threshold),
                max_batch: config.max_batch,
                max_batch_bytes: 32 << 20,
                linger: Duration::from_micros(200),
                compaction_step: config.compaction_step,
                vacuum_step_pages: 128,
                ttl_sweep_interval: config.ttl_sweep_interval,
                ttl_sweep_batch: 256,
            },
        };
        let ckpt_signal = signal.clone();
        let ckpt = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint::run(checkpointer, &ckpt_signal))
            .map_err(|e| StoreError::Internal(format!("cannot start a thread: {e}")))?;
        let stop_signal = signal.clone();
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let _span = tracing::info_span!("store-writer").entered();
                latency::prefer_short_slices();
                writer.run();
                stop_signal.stop();
                // The data dir stays locked until the writer's connection is gone.
                drop(lock);
            })
            .map_err(|e| StoreError::Internal(format!("cannot start a thread: {e}")))?;

        let inner = Arc::new(Inner {
            shared,
            dir: config.dir.clone(),
            writer: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer_thread, ckpt]),
            checkpoint: signal,
            compactor: Mutex::new(None),
        });
        if let Some(every) = config.compaction_interval {
            let task = crate::compactor::spawn(Arc::downgrade(&inner), every, |inner| EmbeddedStore { inner });
            if let Ok(mut c) = inner.compactor.lock() {
                *c = Some(task);
            }
        }
        tracing::info!(dir = %config.dir.display(), revision = meta.revision, "cluster store: embedded store open");
        Ok(EmbeddedStore { inner })
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.inner.dir.join(schema::DB_FILE)
    }

    /// The size of the database file and of its write-ahead log.
    pub fn disk_usage(&self) -> std::io::Result<DiskUsage> {
        disk_usage(&self.inner.dir)
    }

    /// The compaction point: reads below it fail with Compacted.
    pub fn compact_revision(&self) -> Revision {
        self.inner.shared.compact_revision.load(Ordering::SeqCst)
    }

    fn sender(&self) -> Option<std::sync::mpsc::Sender<Request>> {
        self.inner.writer.lock().ok().and_then(|w| w.clone())
    }
}

/// The size of the store's files in `dir`.
pub fn disk_usage(dir: &Path) -> std::io::Result<DiskUsage> {
    let size = |name: &str| match std::fs::metadata(dir.join(name)) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    };
    Ok(DiskUsage { db_bytes: size(schema::DB_FILE)?, wal_bytes: size(&format!("{}-wal", schema::DB_FILE))? })
}

struct OpenFiles {
    lock: File,
    writer_conn: rusqlite::Connection,
    readers: Vec<rusqlite::Connection>,
    checkpointer: rusqlite::Connection,
    meta: schema::Meta,
}

/// The page cache of each read connection. Small: a read that misses it copies the page from
/// the kernel's page cache, and four connections that each cached 8 MiB of a large table (a list
/// of 10,000 pods reads all of it) held 32 MiB of the apiserver's memory.
const READER_CACHE_KIB: i64 = 2048;

fn open_files(config: &EmbeddedConfig) -> Result<OpenFiles> {
    let io = |what: &str, e: std::io::Error| StoreError::Unavailable(format!("{what} {}: {e}", config.dir.display()));
    std::fs::create_dir_all(&config.dir).map_err(|e| io("cannot create the data dir", e))?;
    let lock =
        File::options().create(true).truncate(false).write(true).open(config.dir.join(schema::LOCK_FILE)).map_err(|e| io("cannot open the lock file in", e))?;
    if let Err(e) = lock.try_lock() {
        return Err(StoreError::Unavailable(format!("the store in {} is in use by another process or store ({e})", config.dir.display())));
    }
    let path = config.dir.join(schema::DB_FILE);
    let journal_limit = u64::from(config.checkpoint_pages.max(1)) * 4096 * 4;
    let writer_conn = schema::open_writer(&path, journal_limit)?;
    let meta = schema::read_meta(&writer_conn).map_err(read::db_err)?;
    let readers = (0..config.readers).map(|_| schema::open_reader(&path, READER_CACHE_KIB)).collect::<rusqlite::Result<Vec<_>>>().map_err(read::db_err)?;
    let checkpointer = schema::open_reader(&path, 2048).map_err(read::db_err)?;
    Ok(OpenFiles { lock, writer_conn, readers, checkpointer, meta })
}

fn ttl_deadline(ttl: Option<Duration>) -> Result<Option<i64>> {
    match ttl {
        None => Ok(None),
        Some(t) if t.is_zero() => Err(StoreError::InvalidArgument("a TTL must be above zero".into())),
        Some(t) => Ok(Some(writer::unix_ms() + t.as_millis().min(i64::MAX as u128) as i64)),
    }
}

fn unexpected(o: Outcome) -> StoreError {
    StoreError::Internal(format!("unexpected answer from the writer: {o:?}"))
}

#[async_trait]
impl Store for EmbeddedStore {
    fn prefix(&self) -> &str {
        &self.inner.shared.prefix
    }

    fn max_value_bytes(&self) -> usize {
        self.inner.shared.max_value_bytes
    }

    async fn current_revision(&self) -> Result<Revision> {
        if self.sender().is_none() {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(self.inner.shared.revision.load(Ordering::SeqCst))
    }

    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(self.prefix(), key)?;
        check_value(key, value.len(), self.max_value_bytes())?;
        let op = Op::Create { key: key.to_string(), value, expires_at_ms: ttl_deadline(ttl)? };
        match submit(self.sender(), op).await? {
            Outcome::Written(kv) => Ok(kv),
            o => Err(unexpected(o)),
        }
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        check_key(self.prefix(), key)?;
        let key = key.to_string();
        self.inner.shared.reads.run(move |conn| read::get(conn, &key, revision)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(self.prefix(), key)?;
        check_value(key, value.len(), self.max_value_bytes())?;
        let op = Op::Update { key: key.to_string(), value, expected: expected_mod_revision, expires_at_ms: ttl_deadline(ttl)? };
        match submit(self.sender(), op).await? {
            Outcome::Written(kv) => Ok(kv),
            o => Err(unexpected(o)),
        }
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted> {
        check_key(self.prefix(), key)?;
        let op = Op::Delete { key: key.to_string(), expected: expected_mod_revision };
        match submit(self.sender(), op).await? {
            Outcome::Deleted(d) => Ok(d),
            o => Err(unexpected(o)),
        }
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResponse> {
        check_prefix(self.prefix(), prefix)?;
        let (revision, start_after) = match &options.continue_token {
            Some(token) => {
                if options.revision.is_some() {
                    return Err(StoreError::InvalidContinue { reason: "a continue token cannot be combined with a revision".into() });
                }
                let c = continue_token::decode(token, prefix)?;
                (Some(c.revision), Some(c.last_key))
            }
            None => (options.revision, None),
        };
        let limit = options.limit.unwrap_or(0);
        let count_remaining = options.count_remaining;
        let p = prefix.to_string();
        let page = self.inner.shared.reads.run(move |conn| read::list(conn, &p, start_after.as_deref(), revision, limit, count_remaining)).await?;
        let continue_token = match (page.more, page.kvs.last()) {
            (true, Some(last)) => Some(continue_token::encode(page.revision, &last.key)),
            _ => None,
        };
        Ok(ListResponse { kvs: page.kvs, revision: page.revision, continue_token, remaining: page.remaining })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        check_prefix(self.prefix(), prefix)?;
        let p = prefix.to_string();
        self.inner.shared.reads.run(move |conn| read::count(conn, &p)).await
    }

    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<WatchStream> {
        check_prefix(self.prefix(), prefix)?;
        if after < 0 {
            return Err(StoreError::InvalidArgument(format!("watch revision {after} is negative")));
        }
        if self.sender().is_none() {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let compact_revision = self.compact_revision();
        if after < compact_revision {
            return Err(StoreError::Compacted { requested: after, compact_revision });
        }
        let shared = &self.inner.shared;
        let source = WatchSource { hub: shared.hub.clone(), reads: shared.reads.clone() };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let span = tracing::debug_span!("store-watch", prefix, after);
        let task = tokio::spawn(hub::run_watch(source, prefix.to_string(), after, options, tx).instrument(span));
        Ok(WatchStream::new(rx, task))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision < 0 {
            return Err(StoreError::InvalidArgument(format!("compaction revision {revision} is negative")));
        }
        match submit(self.sender(), Op::Compact { revision }).await? {
            Outcome::Compacted => Ok(()),
            o => Err(unexpected(o)),
        }
    }

    async fn close(&self) {
        if let Ok(mut c) = self.inner.compactor.lock() {
            if let Some(task) = c.take() {
                task.abort();
            }
        }
        let sender = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(sender) = sender {
            let _ = submit(Some(sender), Op::Shutdown).await;
        }
        let threads: Vec<_> = self.inner.threads.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        self.inner.checkpoint.stop();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        self.inner.shared.reads.close();
        self.inner.shared.hub.close();
    }
}
