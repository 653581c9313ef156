//! How etcd's answers map to the store's typed errors. etcd reports most conditions as gRPC
//! statuses with fixed messages ("etcdserver: mvcc: required revision has been compacted");
//! this module is the one place that reads them.

use std::time::Duration;

use tonic::Code;

use crate::error::StoreError;

/// What an etcd error means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No answer (connection, leader election, timeout): a read may be retried.
    Unavailable(String),
    /// The revision asked for has been compacted.
    Compacted,
    /// The revision asked for is in the future.
    Future,
    /// The request was over etcd's size limit.
    TooLarge,
    /// A lease used by a put no longer exists.
    LeaseNotFound,
    Other(String),
}

pub(crate) fn classify(e: &etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            if msg.contains("required revision has been compacted") {
                Failure::Compacted
            } else if msg.contains("required revision is a future revision") {
                Failure::Future
            } else if msg.contains("request is too large") || s.code() == Code::ResourceExhausted {
                Failure::TooLarge
            } else if msg.contains("requested lease not found") {
                Failure::LeaseNotFound
            } else if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled)
                || msg.contains("leader changed")
                || msg.contains("no leader")
                || msg.contains("request timed out")
                || msg.contains("too many requests")
            {
                Failure::Unavailable(format!("etcd: {msg}"))
            } else {
                Failure::Other(format!("etcd answered {:?}: {msg}", s.code()))
            }
        }
        etcd_client::Error::TransportError(t) => Failure::Unavailable(format!("etcd: {t}")),
        etcd_client::Error::IoError(io) => Failure::Unavailable(format!("etcd: {io}")),
        etcd_client::Error::WatchError(w) => Failure::Unavailable(format!("etcd watch: {w}")),
        other => Failure::Other(format!("etcd client: {other}")),
    }
}

/// The error for a failure that has no richer mapping at the call site.
pub(crate) fn plain(f: Failure) -> StoreError {
    match f {
        Failure::Unavailable(m) => StoreError::Unavailable(m),
        Failure::Compacted => StoreError::Compacted { requested: 0, compact_revision: 0 },
        Failure::Future => StoreError::InvalidArgument("revision is in the future".into()),
        Failure::TooLarge => StoreError::InvalidArgument("request too large for etcd".into()),
        Failure::LeaseNotFound => StoreError::Internal("etcd lost a lease in use".into()),
        Failure::Other(m) => StoreError::Internal(m),
    }
}

pub(crate) fn timed_out(after: Duration) -> StoreError {
    StoreError::Unavailable(format!("etcd did not answer within {after:?}"))
}
