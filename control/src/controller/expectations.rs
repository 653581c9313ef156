//! Expectations, as upstream's ControllerExpectations: after a controller creates or deletes
//! pods it waits until its informer has seen those changes before it counts pods again, so a
//! watch that lags never makes it create or delete twice. Berth remembers the names it created
//! and the uids it deleted (not just counts), and asks the informer whether they are there or
//! gone; expectations older than five minutes are dropped, as upstream's expire.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::informer::ObjectKey;

const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Pending>> {
        self.by_owner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The owner created the object `name`.
    pub fn created(&self, owner: &ObjectKey, name: &str) {
        let mut m = self.lock();
        let p = m.entry(owner.clone()).or_default();
        p.created.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// The owner deleted the object with `uid`.
    pub fn deleted(&self, owner: &ObjectKey, uid: &str) {
        let mut m = self.lock();
        let p = m.entry(owner.clone()).or_default();
        p.deleted.insert(uid.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Whether the owner may count its objects again: everything it created is in the informer
    /// (`seen(name)`), everything it deleted is gone or being deleted (`gone(uid)`), or the
    /// expectations expired. Satisfied expectations are dropped.
    pub fn satisfied(&self, owner: &ObjectKey, seen: impl Fn(&str) -> bool, gone: impl Fn(&str) -> bool) -> bool {
        let mut m = self.lock();
        let Some(p) = m.get_mut(owner) else { return true };
        p.created.retain(|n| !seen(n));
        p.deleted.retain(|u| !gone(u));
        let done = (p.created.is_empty() && p.deleted.is_empty()) || p.since.is_some_and(|s| s.elapsed() > TIMEOUT);
        if done {
            m.remove(owner);
        }
        done
    }

    /// Forgets the owner (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_the_informer_saw_every_change() {
        let e = Expectations::default();
        let owner = ("ns".to_string(), "rs".to_string());
        assert!(e.satisfied(&owner, |_| false, |_| false));
        e.created(&owner, "rs-a");
        e.created(&owner, "rs-b");
        e.deleted(&owner, "uid-1");
        assert!(!e.satisfied(&owner, |n| n == "rs-a", |_| true));
        assert!(!e.satisfied(&owner, |_| false, |_| false), "rs-b still unseen");
        assert!(e.satisfied(&owner, |n| n == "rs-b", |_| false));
    }
}
