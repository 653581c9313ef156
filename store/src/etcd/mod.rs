//! The etcd v3 backend, for control planes on several machines: every `berth server` talks to
//! one etcd cluster (`--datastore-endpoint`), over TLS with a client certificate when asked.
//! Keys are stored as they are given, under the store prefix (`/registry/` by default, where the
//! Kubernetes apiserver puts them), so several clusters can share one etcd with different
//! prefixes.
//!
//! Mapping: create is a transaction on `create_revision == 0`; update and guarded delete are
//! transactions on `mod_revision == expected` that read the key back when the compare fails (so
//! a Conflict carries the current value without another round trip); list is a range read at
//! the first page's revision; watch is a gRPC watch with previous values ([`watch`]); TTLs use
//! shared leases ([`lease`]); compaction is etcd's compaction.
//!
//! Reads are retried when etcd is briefly unavailable (a member died, a leader election); writes
//! are not, because a write whose answer was lost may have been applied: the caller gets
//! `Unavailable` and decides.

mod error;
mod lease;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, KvClient, PutOptions, TlsOptions, Txn,
    TxnOp, TxnOpResponse, TxnResponse, WatchClient,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use self::error::{classify, plain, timed_out, Failure};
use self::lease::Leases;
use crate::continue_token;
use crate::error::{Result, StoreError};
use crate::key::{check_key, check_prefix, check_value, normalize_prefix, prefix_end};
use crate::store::Store;
use crate::types::{Deleted, KeyValue, ListOptions, ListResponse, Revision, WatchOptions, WatchStream, WATCH_BUFFER};

/// The largest gRPC message accepted from etcd (a page of big values; the apiserver sets the
/// same ceiling).
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Client TLS towards etcd (PEM files).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's serving certificate (default: none, so TLS fails unless given).
    pub ca_file: Option<PathBuf>,
    /// The client certificate, when etcd asks for one (`--client-cert-auth`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub key_file: Option<PathBuf>,
}

/// Settings of the etcd backend. [`EtcdConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Key prefix (default `/registry/`).
    pub prefix: String,
    /// TLS, for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// Largest value accepted (default 1.5 MiB; etcd's own default request limit is the same,
    /// so values near it need `--max-request-bytes` raised on etcd).
    pub max_value_bytes: usize,
    /// Compact periodically keeping this much history (default 5 minutes); None: only when
    /// [`Store::compact`] is called.
    pub compaction_interval: Option<Duration>,
    /// How long one request may take (default 15 s).
    pub request_timeout: Duration,
    /// How long connecting to a member may take (default 5 s).
    pub dial_timeout: Duration,
}

impl EtcdConfig {
    /// The defaults, with the endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: crate::key::DEFAULT_PREFIX.to_string(),
            tls: None,
            max_value_bytes: crate::key::DEFAULT_MAX_VALUE_BYTES,
            compaction_interval: Some(Duration::from_secs(300)),
            request_timeout: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(5),
        }
    }
}

struct Inner {
    prefix: String,
    config: EtcdConfig,
    kv: KvClient,
    watch: WatchClient,
    leases: Leases,
    /// Whether this etcd orders answers to progress requests with events.
    progress_requests: bool,
    closed: AtomicBool,
    compactor: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut c) = self.compactor.lock() {
            if let Some(task) = c.take() {
                task.abort();
            }
        }
    }
}

/// The etcd store (cheap to clone: clones share one connection).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let prefix = normalize_prefix(&config.prefix)?;
        if config.endpoints.is_empty() {
            return Err(StoreError::InvalidArgument("no etcd endpoint given".into()));
        }
        for e in &config.endpoints {
            let https = e.starts_with("https://");
            if !https && !e.starts_with("http://") {
                return Err(StoreError::InvalidArgument(format!("etcd endpoint {e:?} is not an http:// or https:// URL")));
            }
            if https != config.tls.is_some() {
                return Err(StoreError::InvalidArgument(format!(
                    "etcd endpoint {e:?}: https:// endpoints need TLS options and http:// ones must not have them"
                )));
            }
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls).await?);
        }
        let client = tokio::time::timeout(config.dial_timeout, Client::connect(&config.endpoints, Some(options)))
            .await
            .map_err(|_| timed_out(config.dial_timeout))?
            .map_err(|e| plain(classify(&e)))?;
        let progress_requests = match tokio::time::timeout(config.request_timeout, client.maintenance_client().status()).await {
            Ok(Ok(status)) => progress_requests_ordered(status.version()),
            Ok(Err(e)) => return Err(plain(classify(&e))),
            Err(_) => return Err(timed_out(config.request_timeout)),
        };
        let inner = Arc::new(Inner {
            prefix,
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE_BYTES),
            leases: Leases::new(client.lease_client(), config.request_timeout),
            progress_requests,
            closed: AtomicBool::new(false),
            compactor: Mutex::new(None),
            config,
        });
        if let Some(every) = inner.config.compaction_interval {
            let task = crate::compactor::spawn(Arc::downgrade(&inner), every, |inner| EtcdStore { inner });
            if let Ok(mut c) = inner.compactor.lock() {
                *c = Some(task);
            }
        }
        let store = EtcdStore { inner };
        let revision = store.current_revision().await?;
        tracing::info!(endpoints = ?store.inner.config.endpoints, revision, "cluster store: connected to etcd");
        Ok(store)
    }

    fn kv(&self) -> Result<KvClient> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(self.inner.kv.clone())
    }

    fn timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    /// Runs a request with the request timeout.
    async fn call<T>(&self, fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout(), fut).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Failure::Unavailable(timed_out(self.timeout()).to_string())),
        }
    }

    /// A range read, retried while etcd is unavailable (up to the request timeout in all).
    async fn range(&self, key: Vec<u8>, options: GetOptions) -> Result<etcd_client::GetResponse, Failure> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut pause = Duration::from_millis(50);
        loop {
            let mut kv = self.kv().map_err(|e| Failure::Unavailable(e.to_string()))?;
            match self.call(kv.get(key.clone(), Some(options.clone()))).await {
                Err(Failure::Unavailable(m)) => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(Failure::Unavailable(m));
                    }
                    tracing::debug!(reason = m, "cluster store: etcd read retried");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// The error for a read at `requested` that etcd refused as compacted or future.
    async fn revision_error(&self, f: Failure, requested: Revision) -> StoreError {
        match f {
            Failure::Compacted => StoreError::Compacted { requested, compact_revision: self.compact_point().await.unwrap_or(requested + 1) },
            Failure::Future => StoreError::FutureRevision { requested, current: self.current_revision().await.unwrap_or(requested - 1) },
            f => plain(f),
        }
    }

    /// etcd's compaction point: a watch from revision 1 is refused with it.
    async fn compact_point(&self) -> Option<Revision> {
        let setup = self.watch_setup(self.inner.prefix.clone(), WatchOptions::default());
        match watch::open(&setup, 1).await {
            Err(StoreError::Compacted { compact_revision, .. }) => Some(compact_revision),
            Ok((_, mut responses)) => {
                // etcd reports compaction of a new watch shortly after creating it.
                let wait = tokio::time::timeout(Duration::from_secs(2), responses.message()).await;
                match wait {
                    Ok(Ok(Some(r))) if r.compact_revision() > 0 => Some(r.compact_revision()),
                    _ => None,
                }
            }
            Err(_) => None,
        }
    }

    fn watch_setup(&self, prefix: String, options: WatchOptions) -> watch::WatchSetup {
        watch::WatchSetup { client: self.inner.watch.clone(), prefix, options, progress_requests: self.inner.progress_requests, timeout: self.timeout() }
    }

    async fn lease(&self, ttl: Option<Duration>) -> Result<Option<i64>> {
        match ttl {
            Some(t) => Ok(Some(self.inner.leases.for_ttl(t).await?)),
            None => Ok(None),
        }
    }

    /// Runs a write transaction; a put whose shared lease etcd has dropped is retried once
    /// with a new lease (the put was refused, so nothing was written).
    async fn write_txn(&self, ttl: Option<Duration>, build: impl Fn(Option<i64>) -> Txn) -> Result<TxnResponse> {
        let mut lease = self.lease(ttl).await?;
        for _ in 0..2 {
            let mut kv = self.kv()?;
            match self.call(kv.txn(build(lease))).await {
                Ok(r) => return Ok(r),
                Err(Failure::LeaseNotFound) => {
                    if let Some(id) = lease {
                        self.inner.leases.forget(id).await;
                    }
                    lease = self.lease(ttl).await?;
                }
                Err(f) => return Err(plain(f)),
            }
        }
        Err(StoreError::Unavailable("etcd kept refusing the key's lease".into()))
    }
}

/// Whether an etcd version answers explicit progress requests in order with events (fixed in
/// 3.4.25 and 3.5.8, etcd issue 15220).
fn progress_requests_ordered(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    match (major, minor) {
        (3, 4) => patch >= 25,
        (3, 5) => patch >= 8,
        (3, m) => m > 5,
        (m, _) => m > 3,
    }
}

async fn tls_options(tls: &EtcdTls) -> Result<TlsOptions> {
    async fn read(path: &std::path::Path) -> Result<Vec<u8>> {
        tokio::fs::read(path).await.map_err(|e| StoreError::InvalidArgument(format!("cannot read {}: {e}", path.display())))
    }
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        options = options.ca_certificate(Certificate::from_pem(read(ca).await?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(read(cert).await?, read(key).await?));
        }
        (None, None) => {}
        _ => return Err(StoreError::InvalidArgument("an etcd client certificate needs both the certificate and its key".into())),
    }
    Ok(options)
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision()).ok_or_else(|| StoreError::Internal("etcd answered without a header".into()))
}

fn read_revision(revision: Option<Revision>) -> Result<Option<Revision>> {
    match revision {
        Some(r) if r < 0 => Err(StoreError::InvalidArgument(format!("revision {r} is negative"))),
        Some(0) | None => Ok(None),
        Some(r) => Ok(Some(r)),
    }
}

/// The value the compare of a failed transaction found (its `or_else` read).
fn current_of(resp: &TxnResponse) -> Result<Option<KeyValue>> {
    match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(watch::key_value).transpose(),
        _ => Err(StoreError::Internal("etcd answered a failed transaction without the key".into())),
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn max_value_bytes(&self) -> usize {
        self.inner.config.max_value_bytes
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self.range(self.inner.prefix.as_bytes().to_vec(), GetOptions::new().with_count_only()).await.map_err(plain)?;
        header_revision(resp.header())
    }

    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(self.prefix(), key)?;
        check_value(key, value.len(), self.max_value_bytes())?;
        let resp = self
            .write_txn(ttl, |lease| {
                Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
                    key,
                    value.to_vec(),
                    lease.map(|id| PutOptions::new().with_lease(id)),
                )])
            })
            .await
            .map_err(|e| too_large(e, key, value.len(), self.max_value_bytes()))?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists { key: key.to_string() });
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue { key: key.to_string(), value, create_revision: revision, mod_revision: revision })
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        check_key(self.prefix(), key)?;
        let at = read_revision(revision)?;
        let mut options = GetOptions::new();
        if let Some(r) = at {
            options = options.with_revision(r);
        }
        match self.range(key.as_bytes().to_vec(), options).await {
            Ok(resp) => resp.kvs().first().map(watch::key_value).transpose(),
            Err(f) => Err(self.revision_error(f, at.unwrap_or(0)).await),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(self.prefix(), key)?;
        check_value(key, value.len(), self.max_value_bytes())?;
        let resp = self
            .write_txn(ttl, |lease| {
                let mut put = PutOptions::new().with_prev_key();
                if let Some(id) = lease {
                    put = put.with_lease(id);
                }
                Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision)])
                    .and_then([TxnOp::put(key, value.to_vec(), Some(put))])
                    .or_else([TxnOp::get(key, None)])
            })
            .await
            .map_err(|e| too_large(e, key, value.len(), self.max_value_bytes()))?;
        if !resp.succeeded() {
            return Err(match current_of(&resp)? {
                None => StoreError::NotFound { key: key.to_string() },
                Some(current) => StoreError::Conflict { key: key.to_string(), expected: expected_mod_revision, current: Box::new(current) },
            });
        }
        let revision = header_revision(resp.header())?;
        let create_revision = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Put(p)) => p.prev_key().map(|kv| kv.create_revision()),
            _ => None,
        }
        .ok_or_else(|| StoreError::Internal("etcd's put did not return the previous key".into()))?;
        Ok(KeyValue { key: key.to_string(), value, create_revision, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted> {
        check_key(self.prefix(), key)?;
        let not_found = || StoreError::NotFound { key: key.to_string() };
        let (prev, revision) = match expected_mod_revision {
            None => {
                let mut kv = self.kv()?;
                let resp = self.call(kv.delete(key, Some(DeleteOptions::new().with_prev_key()))).await.map_err(plain)?;
                let prev = resp.prev_kvs().first().map(watch::key_value).transpose()?;
                (prev, header_revision(resp.header())?)
            }
            Some(expected) => {
                let resp = self
                    .write_txn(None, |_| {
                        Txn::new()
                            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
                            .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
                            .or_else([TxnOp::get(key, None)])
                    })
                    .await?;
                if !resp.succeeded() {
                    return Err(match current_of(&resp)? {
                        None => not_found(),
                        Some(current) => StoreError::Conflict { key: key.to_string(), expected, current: Box::new(current) },
                    });
                }
                let prev = match resp.op_responses().into_iter().next() {
                    Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first().map(watch::key_value).transpose()?,
                    _ => None,
                };
                (prev, header_revision(resp.header())?)
            }
        };
        let prev = prev.ok_or_else(not_found)?;
        Ok(Deleted { prev, revision })
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResponse> {
        check_prefix(self.prefix(), prefix)?;
        let (at, start) = match &options.continue_token {
            Some(token) => {
                if options.revision.is_some() {
                    return Err(StoreError::InvalidContinue { reason: "a continue token cannot be combined with a revision".into() });
                }
                let c = continue_token::decode(token, prefix)?;
                let mut start = c.last_key.into_bytes();
                start.push(0);
                (Some(c.revision), start)
            }
            None => (read_revision(options.revision)?, prefix.as_bytes().to_vec()),
        };
        let end = prefix_end(prefix.as_bytes()).unwrap_or_default();
        let limit = options.limit.unwrap_or(0);
        let mut get = GetOptions::new().with_range(end);
        if limit > 0 {
            get = get.with_limit(limit as i64);
        }
        if let Some(r) = at {
            get = get.with_revision(r);
        }
        let resp = match self.range(start, get).await {
            Ok(r) => r,
            Err(f) => return Err(self.revision_error(f, at.unwrap_or(0)).await),
        };
        let revision = match at {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        let kvs = resp.kvs().iter().map(watch::key_value).collect::<Result<Vec<_>>>()?;
        let continue_token = match (resp.more(), kvs.last()) {
            (true, Some(last)) => Some(continue_token::encode(revision, &last.key)),
            _ => None,
        };
        let remaining = options.count_remaining.then(|| (resp.count() as u64).saturating_sub(kvs.len() as u64));
        Ok(ListResponse { kvs, revision, continue_token, remaining })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        check_prefix(self.prefix(), prefix)?;
        let end = prefix_end(prefix.as_bytes()).unwrap_or_default();
        let resp = self.range(prefix.as_bytes().to_vec(), GetOptions::new().with_range(end).with_count_only()).await.map_err(plain)?;
        Ok(resp.count() as u64)
    }

    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<WatchStream> {
        check_prefix(self.prefix(), prefix)?;
        if after < 0 {
            return Err(StoreError::InvalidArgument(format!("watch revision {after} is negative")));
        }
        self.kv()?;
        let setup = self.watch_setup(prefix.to_string(), options);
        let streams = watch::open(&setup, after).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let span = tracing::debug_span!("store-watch", prefix, after);
        let task = tokio::spawn(watch::run(setup, after, streams, tx).instrument(span));
        Ok(WatchStream::new(rx, task))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision < 0 {
            return Err(StoreError::InvalidArgument(format!("compaction revision {revision} is negative")));
        }
        if revision == 0 {
            return Ok(());
        }
        let mut kv = self.kv()?;
        match self.call(kv.compact(revision, Some(CompactionOptions::new().with_physical()))).await {
            Ok(_) | Err(Failure::Compacted) => Ok(()),
            Err(f @ Failure::Future) => Err(self.revision_error(f, revision).await),
            Err(f) => Err(plain(f)),
        }
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Ok(mut c) = self.inner.compactor.lock() {
            if let Some(task) = c.take() {
                task.abort();
            }
        }
    }
}

/// etcd's "request is too large" as the store's typed error for the value.
fn too_large(e: StoreError, key: &str, size: usize, limit: usize) -> StoreError {
    match e {
        StoreError::InvalidArgument(m) if m.contains("too large") => {
            StoreError::ValueTooLarge { key: key.to_string(), size, limit: limit.min(size.saturating_sub(1)) }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::progress_requests_ordered;

    #[test]
    fn progress_requests_are_trusted_from_the_fixed_releases_on() {
        assert!(!progress_requests_ordered("3.4.23"));
        assert!(progress_requests_ordered("3.4.25"));
        assert!(!progress_requests_ordered("3.5.7"));
        assert!(progress_requests_ordered("3.5.8"));
        assert!(progress_requests_ordered("3.6.0"));
        assert!(!progress_requests_ordered("garbage"));
    }
}
