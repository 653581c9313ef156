//! What the garbage collector does with one dependent, given what it found of each owner
//! (upstream's attemptToDeleteItem after classifyReferences). Pure: no API calls.
//!
//! - some owner is solid (exists, not deleting its dependents in the foreground): only the
//!   references to absent owners and to owners waiting for their dependents are removed;
//! - no solid owner, some owner waiting for dependents, and the item has dependents itself: the
//!   item is deleted in the foreground (so the waiting owner waits for the whole tree);
//! - otherwise (every owner absent, or waiting and the item has no dependents): the item is
//!   deleted, with the policy its own finalizers ask for (orphan, foregroundDeletion, else
//!   background).
//!
//! And what it does with an owner being deleted (`waiting`, `without_reference`): one waiting
//! for its dependents loses its `foregroundDeletion` finalizer once no dependent whose
//! reference has blockOwnerDeletion is left, and until then has those dependents looked at
//! (which deletes them, as their owner waits); one orphaning its dependents has its reference
//! removed from each, then loses its `orphan` finalizer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// What the collector found of one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Not found (or another object with that name, or in another namespace).
    Absent,
    /// Exists and is not deleting its dependents.
    Solid,
    /// Being deleted in the foreground (deletionTimestamp and the foregroundDeletion finalizer).
    WaitingForDependents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Remove the references to these owner uids.
    RemoveReferences(Vec<String>),
    Delete(Propagation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    pub fn policy(self) -> kube::api::PropagationPolicy {
        match self {
            Propagation::Orphan => kube::api::PropagationPolicy::Orphan,
            Propagation::Background => kube::api::PropagationPolicy::Background,
            Propagation::Foreground => kube::api::PropagationPolicy::Foreground,
        }
    }
}

pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The decision for an item whose owners (uid and state) are `owners`, that has dependents of
/// its own or not, and carries `finalizers`.
pub fn decide(owners: &[(String, Owner)], has_dependents: bool, finalizers: &[String]) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let of = |state: Owner| owners.iter().filter(move |(_, s)| *s == state).map(|(uid, _)| uid.clone());
    if of(Owner::Solid).next().is_some() {
        let gone: Vec<String> = of(Owner::Absent).chain(of(Owner::WaitingForDependents)).collect();
        return if gone.is_empty() { Decision::Keep } else { Decision::RemoveReferences(gone) };
    }
    if of(Owner::WaitingForDependents).next().is_some() && has_dependents {
        return Decision::Delete(Propagation::Foreground);
    }
    let policy = if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
        Propagation::Orphan
    } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    Decision::Delete(policy)
}

/// What to do with an owner waiting for its dependents (upstream's processDeletingDependentsItem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// No blocking dependent is left: remove the `foregroundDeletion` finalizer.
    RemoveFinalizer,
    /// Look at these blocking dependents (each not itself waiting for its own dependents: that
    /// one is already being deleted in the foreground).
    LookAt(Vec<String>),
}

/// The decision for an owner waiting for its dependents, given its blocking dependents (uid and
/// whether each waits for its own dependents).
pub fn waiting(blocking: &[(String, bool)]) -> Waiting {
    if blocking.is_empty() {
        return Waiting::RemoveFinalizer;
    }
    Waiting::LookAt(blocking.iter().filter(|(_, deleting)| !deleting).map(|(uid, _)| uid.clone()).collect())
}

/// The owner references of a dependent without the one to `owner`; None when it names no such
/// owner (nothing to write).
pub fn without_reference(refs: &[OwnerReference], owner: &str) -> Option<Vec<OwnerReference>> {
    refs.iter().any(|r| r.uid == owner).then(|| refs.iter().filter(|r| r.uid != owner).cloned().collect())
}

/// `finalizers` without `finalizer`; None when it is not there.
pub fn without_finalizer(finalizers: &[String], finalizer: &str) -> Option<Vec<String>> {
    finalizers.iter().any(|f| f == finalizer).then(|| finalizers.iter().filter(|f| *f != finalizer).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(uid: &str, s: Owner) -> (String, Owner) {
        (uid.to_string(), s)
    }

    #[test]
    fn a_dependent_of_absent_owners_is_deleted_and_a_solid_owner_keeps_it() {
        assert_eq!(decide(&[o("a", Owner::Absent)], false, &[]), Decision::Delete(Propagation::Background));
        assert_eq!(decide(&[o("a", Owner::Absent), o("b", Owner::Absent)], true, &["orphan".into()]), Decision::Delete(Propagation::Orphan));
        assert_eq!(decide(&[o("a", Owner::Solid)], false, &[]), Decision::Keep);
        assert_eq!(decide(&[], false, &[]), Decision::Keep);
    }

    #[test]
    fn dangling_and_waiting_references_are_removed_when_a_solid_owner_remains() {
        let owners = [o("a", Owner::Absent), o("b", Owner::Solid), o("c", Owner::WaitingForDependents)];
        assert_eq!(decide(&owners, false, &[]), Decision::RemoveReferences(vec!["a".into(), "c".into()]));
    }

    #[test]
    fn owners_waiting_for_dependents_get_their_dependents_deleted_in_the_foreground_when_they_have_dependents() {
        let owners = [o("a", Owner::WaitingForDependents), o("b", Owner::Absent)];
        assert_eq!(decide(&owners, true, &[]), Decision::Delete(Propagation::Foreground));
        assert_eq!(decide(&owners, false, &[]), Decision::Delete(Propagation::Background));
        assert_eq!(decide(&owners, false, &["foregroundDeletion".into()]), Decision::Delete(Propagation::Foreground));
    }

    #[test]
    fn an_owner_waiting_for_dependents_loses_its_finalizer_when_no_blocking_dependent_is_left() {
        assert_eq!(waiting(&[]), Waiting::RemoveFinalizer);
        // a dependent that waits for its own dependents is already on its way
        let blocking = [("d1".to_string(), false), ("d2".to_string(), true)];
        assert_eq!(waiting(&blocking), Waiting::LookAt(vec!["d1".into()]));
        assert_eq!(waiting(&[("d2".to_string(), true)]), Waiting::LookAt(vec![]));
    }

    #[test]
    fn orphaning_removes_only_the_owners_reference_and_then_the_finalizer() {
        let r = |uid: &str| OwnerReference { uid: uid.into(), name: uid.into(), ..Default::default() };
        assert_eq!(without_reference(&[r("a"), r("b")], "a"), Some(vec![r("b")]));
        assert_eq!(without_reference(&[r("b")], "a"), None, "already orphaned: nothing to write");
        assert_eq!(without_reference(&[r("a")], "a"), Some(vec![]));
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(without_finalizer(&f(&["orphan", "example.com/x"]), "orphan"), Some(f(&["example.com/x"])));
        assert_eq!(without_finalizer(&f(&["example.com/x"]), "orphan"), None);
    }
}
