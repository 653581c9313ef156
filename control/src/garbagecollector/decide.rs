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
}
