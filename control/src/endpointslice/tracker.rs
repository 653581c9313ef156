//! What this controller last wrote of each service's slices, as upstream's
//! EndpointSliceTracker, so a lagging informer never makes it act on slices older than its own
//! writes (a second slice created for the same endpoints): the resourceVersion each written
//! slice got, and the slices it deleted. Slices whose informer events only echo our own writes
//! need no sync.
//!
//! Upstream compares generations; here resourceVersions (the store's revisions, increasing),
//! which also see label-only changes.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::informer::ObjectKey;

/// What is known of one slice (by uid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Written(u64),
    DeletionExpected,
}

#[derive(Default)]
pub struct Tracker {
    by_service: Mutex<HashMap<ObjectKey, HashMap<String, Seen>>>,
}

fn rv(slice: &EndpointSlice) -> u64 {
    slice.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn uid(slice: &EndpointSlice) -> String {
    slice.metadata.uid.clone().unwrap_or_default()
}

impl Tracker {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ObjectKey, HashMap<String, Seen>>) -> T) -> T {
        f(&mut self.by_service.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Remembers a slice of service `svc` as written (created or updated) at its version.
    pub fn written(&self, svc: &ObjectKey, slice: &EndpointSlice) {
        self.with(|m| m.entry(svc.clone()).or_default().insert(uid(slice), Seen::Written(rv(slice))));
    }

    /// Remembers a slice as deleted by us.
    pub fn expect_deletion(&self, svc: &ObjectKey, slice: &EndpointSlice) {
        self.with(|m| m.entry(svc.clone()).or_default().insert(uid(slice), Seen::DeletionExpected));
    }

    /// Whether an informer event about this slice may show something we did not write.
    pub fn should_sync(&self, svc: &ObjectKey, slice: &EndpointSlice) -> bool {
        self.with(|m| match m.get(svc).and_then(|s| s.get(&uid(slice))) {
            Some(Seen::Written(v)) => rv(slice) > *v,
            Some(Seen::DeletionExpected) | None => true,
        })
    }

    /// A slice's deletion reached the informer: true if we expected it (then no sync is
    /// needed). Forgets the slice.
    pub fn handle_deletion(&self, svc: &ObjectKey, slice: &EndpointSlice) -> bool {
        self.with(|m| {
            let Some(slices) = m.get_mut(svc) else { return false };
            slices.remove(&uid(slice)) == Some(Seen::DeletionExpected)
        })
    }

    /// Whether the cached `slices` of a service are older than what we wrote: one older than
    /// our write, one we deleted still there, or one we wrote missing.
    pub fn stale(&self, svc: &ObjectKey, slices: &[std::sync::Arc<EndpointSlice>]) -> bool {
        self.with(|m| {
            let Some(known) = m.get(svc) else { return false };
            let mut present = std::collections::HashSet::new();
            for s in slices {
                let id = uid(s);
                match known.get(&id) {
                    Some(Seen::DeletionExpected) => return true,
                    Some(Seen::Written(v)) if *v > rv(s) => return true,
                    _ => {}
                }
                present.insert(id);
            }
            known.iter().any(|(id, seen)| matches!(seen, Seen::Written(_)) && !present.contains(id))
        })
    }

    /// Forgets a deleted service.
    pub fn delete_service(&self, svc: &ObjectKey) {
        self.with(|m| m.remove(svc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn slice(uid: &str, rv: &str) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        s.metadata.uid = Some(uid.into());
        s.metadata.resource_version = Some(rv.into());
        s
    }

    #[test]
    fn a_cache_behind_our_writes_is_stale_and_our_echoes_need_no_sync() {
        let t = Tracker::default();
        let svc = ("ns".to_string(), "web".to_string());
        assert!(!t.stale(&svc, &[]));
        t.written(&svc, &slice("a", "10"));
        assert!(t.stale(&svc, &[]), "our slice is not in the cache yet");
        assert!(t.stale(&svc, &[Arc::new(slice("a", "9"))]));
        assert!(!t.stale(&svc, &[Arc::new(slice("a", "10"))]));
        assert!(!t.should_sync(&svc, &slice("a", "10")));
        assert!(t.should_sync(&svc, &slice("a", "11")), "someone else wrote it");
        t.expect_deletion(&svc, &slice("a", "10"));
        assert!(t.stale(&svc, &[Arc::new(slice("a", "10"))]));
        assert!(!t.stale(&svc, &[]));
        assert!(t.handle_deletion(&svc, &slice("a", "10")));
        assert!(!t.handle_deletion(&svc, &slice("b", "3")));
    }
}
