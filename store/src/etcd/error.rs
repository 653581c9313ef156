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
                || connection_lost(s)
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

/// Whether a status stands for a connection that broke under a request (the member died or
/// restarted). tonic reports that as `Unknown: transport error`, with the transport's error as
/// the status's source; the request may or may not have been applied.
fn connection_lost(s: &tonic::Status) -> bool {
    if s.code() != Code::Unknown {
        return false;
    }
    if s.message() == "transport error" {
        return true;
    }
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable() {
        let s = tonic::Status::new(Code::Unknown, "transport error");
        assert!(matches!(classify(&etcd_client::Error::GRpcStatus(s)), Failure::Unavailable(_)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let s = tonic::Status::from_error(Box::new(io));
        assert!(matches!(classify(&etcd_client::Error::GRpcStatus(s)), Failure::Unavailable(_)));
    }

    #[test]
    fn other_unknown_answers_stay_internal() {
        let s = tonic::Status::new(Code::Unknown, "etcdserver: some new condition");
        assert!(matches!(classify(&etcd_client::Error::GRpcStatus(s)), Failure::Other(_)));
    }
}
