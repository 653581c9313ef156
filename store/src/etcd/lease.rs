//! Leases for keys written with a TTL. A lease per write would flood etcd (the apiserver writes
//! an Event with a 1 h TTL for almost everything that happens), so, like the apiserver, writes
//! with the same TTL share one lease granted within a short reuse window; such a key expires
//! between its TTL and its TTL plus the window (a tenth of the TTL, 1 s to 60 s).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::LeaseClient;
use tokio::sync::Mutex;

use super::error::{classify, plain};
use crate::error::{Result, StoreError};

pub(crate) struct Leases {
    client: LeaseClient,
    /// TTL in seconds → (lease id, when it was granted).
    cache: Mutex<HashMap<u64, (i64, Instant)>>,
    timeout: Duration,
}

impl Leases {
    pub fn new(client: LeaseClient, timeout: Duration) -> Self {
        Leases { client, cache: Mutex::new(HashMap::new()), timeout }
    }

    /// A lease that expires between `ttl` and `ttl` plus the reuse window from now.
    pub async fn for_ttl(&self, ttl: Duration) -> Result<i64> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidArgument("a TTL must be above zero".into()));
        }
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let window = (secs / 10).clamp(1, 60);
        let mut cache = self.cache.lock().await;
        if let Some((id, granted)) = cache.get(&secs) {
            if granted.elapsed() < Duration::from_secs(window) {
                return Ok(*id);
            }
        }
        let mut client = self.client.clone();
        let granted = Instant::now();
        let resp = tokio::time::timeout(self.timeout, client.grant((secs + window) as i64, None))
            .await
            .map_err(|_| super::error::timed_out(self.timeout))?
            .map_err(|e| plain(classify(&e)))?;
        cache.insert(secs, (resp.id(), granted));
        Ok(resp.id())
    }

    /// Drops a lease etcd no longer knows.
    pub async fn forget(&self, id: i64) {
        self.cache.lock().await.retain(|_, (l, _)| *l != id);
    }
}
