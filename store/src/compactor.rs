//! The periodic compactor both backends run: every period it compacts to the revision that was
//! current one period before, so about one period of history is kept (the Kubernetes
//! apiserver's compactor does the same against etcd, every 5 minutes by default).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::store::Store;
use crate::types::Revision;

/// Runs until the store behind `weak` is gone (or the task is aborted). `handle` turns the
/// shared state back into a store handle for one round.
pub(crate) fn spawn<T, S, F>(weak: Weak<T>, every: Duration, handle: F) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    S: Store,
    F: Fn(Arc<T>) -> S + Send + 'static,
{
    tokio::spawn(
        async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let mut previous: Option<Revision> = None;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let store = handle(inner);
                if let Some(revision) = previous.filter(|r| *r > 0) {
                    match store.compact(revision).await {
                        Ok(()) => tracing::debug!(revision, "cluster store: compacted"),
                        Err(e) => {
                            tracing::warn!(revision, error = %e, "cluster store: compaction failed")
                        }
                    }
                }
                match store.current_revision().await {
                    Ok(r) => previous = Some(r),
                    Err(e) => tracing::warn!(error = %e, "cluster store: cannot read the revision"),
                }
            }
        }
        .instrument(tracing::info_span!("store-compactor")),
    )
}
