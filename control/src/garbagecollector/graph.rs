//! The garbage collector's picture of the cluster (upstream's dependency graph, reduced): every
//! observed object by uid with its identity, owner references and deletion state, and for each
//! owner uid the objects that name it. Changes report the work they make (`Work`): an object
//! whose owners changed, the dependents of an object that went away, an owner that starts
//! waiting for its dependents (or whose blocking dependent went or stopped blocking), an owner
//! that starts orphaning its dependents. Pure bookkeeping.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// One observed object.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// apiVersion and kind, as an owner reference names them.
    pub api_version: String,
    pub kind: String,
    /// The resource it was observed through (its monitor's key).
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    /// Being deleted with the `foregroundDeletion` finalizer: waiting for its dependents.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer: its dependents are to be orphaned.
    pub orphaning: bool,
}

/// What the collector must do after a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Look at the item (upstream's attemptToDelete queue).
    Attempt(String),
    /// Remove the references to the owner from its dependents, then its `orphan` finalizer
    /// (upstream's attemptToOrphan queue).
    Orphan(String),
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

/// Whether `r` holds its owner's foreground deletion back.
fn blocks(r: &OwnerReference) -> bool {
    r.block_owner_deletion == Some(true)
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The observed dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        let mut out: Vec<String> = self.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default();
        out.sort();
        out
    }

    /// The dependents of `uid` whose reference to it has blockOwnerDeletion, each with whether
    /// it is itself waiting for its own dependents.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<(String, bool)> {
        self.dependents(uid)
            .into_iter()
            .filter_map(|d| {
                let n = self.nodes.get(&d)?;
                n.owners.iter().any(|r| r.uid == uid && blocks(r)).then_some((d, n.deleting_dependents))
            })
            .collect()
    }

    /// The owners among `refs` that wait for their dependents.
    fn waiting<'a>(&'a self, refs: impl Iterator<Item = &'a OwnerReference> + 'a) -> impl Iterator<Item = Work> + 'a {
        refs.filter(|r| self.nodes.get(&r.uid).is_some_and(|o| o.deleting_dependents)).map(|r| Work::Attempt(r.uid.clone()))
    }

    /// Records `node` (added or updated) and returns the work it makes.
    pub fn upsert(&mut self, uid: &str, node: Node) -> Vec<Work> {
        let old = self.nodes.insert(uid.to_string(), node.clone());
        let mut work = vec![];
        if old.as_ref().is_none_or(|o| !o.orphaning) && node.orphaning {
            work.push(Work::Orphan(uid.to_string()));
        }
        if old.as_ref().is_none_or(|o| !o.deleting_dependents) && node.deleting_dependents {
            work.extend(self.dependents(uid).into_iter().map(Work::Attempt));
            work.push(Work::Attempt(uid.to_string()));
        }
        let old_owners = old.map(|o| o.owners).unwrap_or_default();
        if old_owners == node.owners {
            return work;
        }
        // owners that this item held back and no longer does are looked at again
        let unblocked: Vec<OwnerReference> =
            old_owners.iter().filter(|r| blocks(r) && !node.owners.iter().any(|n| n.uid == r.uid && blocks(n))).cloned().collect();
        work.extend(self.waiting(unblocked.iter()).collect::<Vec<_>>());
        for r in &old_owners {
            if let Some(d) = self.dependents.get_mut(&r.uid) {
                d.remove(uid);
            }
        }
        for r in &node.owners {
            self.dependents.entry(r.uid.clone()).or_default().insert(uid.to_string());
        }
        if !node.owners.is_empty() {
            work.push(Work::Attempt(uid.to_string()));
        }
        work
    }

    /// Forgets the object `uid`; the work: its dependents, and its owners waiting for it.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let mut work = vec![];
        if let Some(old) = self.nodes.remove(uid) {
            for r in &old.owners {
                if let Some(d) = self.dependents.get_mut(&r.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&r.uid);
                    }
                }
            }
            work.extend(self.waiting(old.owners.iter()).collect::<Vec<_>>());
        }
        work.extend(self.dependents(uid).into_iter().map(Work::Attempt));
        work
    }

    /// The uids observed through `resource`.
    pub fn of_resource(&self, resource: &str) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.resource == resource).map(|(uid, _)| uid.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owner: Option<&str>) -> Node {
        Node {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            resource: "v1/configmaps".into(),
            namespace: "a".into(),
            name: "x".into(),
            owners: owner.map(|uid| vec![OwnerReference { uid: uid.into(), block_owner_deletion: Some(true), ..Default::default() }]).unwrap_or_default(),
            deleting_dependents: false,
            orphaning: false,
        }
    }

    fn attempt(uid: &str) -> Work {
        Work::Attempt(uid.to_string())
    }

    #[test]
    fn owner_changes_and_removals_name_the_items_to_look_at() {
        let mut g = Graph::default();
        assert!(g.upsert("owner", node(None)).is_empty());
        assert_eq!(g.upsert("dep", node(Some("owner"))), vec![attempt("dep")]);
        assert!(g.upsert("dep", node(Some("owner"))).is_empty(), "no change: nothing to do");
        assert!(g.has_dependents("owner"));
        assert_eq!(g.remove("owner"), vec![attempt("dep")]);
        assert!(g.remove("dep").is_empty());
        assert!(!g.has_dependents("owner"));
        assert_eq!(g.of_resource("v1/configmaps").len(), 0);
    }

    #[test]
    fn an_owner_waiting_for_dependents_is_looked_at_with_them_and_when_one_goes_or_stops_blocking() {
        let mut g = Graph::default();
        g.upsert("owner", node(None));
        g.upsert("d1", node(Some("owner")));
        g.upsert("d2", node(Some("owner")));
        let waiting = Node { deleting_dependents: true, ..node(None) };
        // also when first observed so (a restart): the dependents, then the owner
        assert_eq!(g.upsert("owner", waiting.clone()), vec![attempt("d1"), attempt("d2"), attempt("owner")]);
        assert!(g.upsert("owner", waiting).is_empty(), "already waiting");
        assert_eq!(g.blocking_dependents("owner"), vec![("d1".to_string(), false), ("d2".to_string(), false)]);
        // d1's reference stops blocking: the owner is looked at again
        let mut loose = node(Some("owner"));
        loose.owners[0].block_owner_deletion = None;
        assert_eq!(g.upsert("d1", loose), vec![attempt("owner"), attempt("d1")]);
        assert_eq!(g.blocking_dependents("owner"), vec![("d2".to_string(), false)]);
        assert_eq!(g.remove("d2"), vec![attempt("owner")]);
        assert!(g.blocking_dependents("owner").is_empty());
    }

    #[test]
    fn an_owner_that_starts_orphaning_is_orphaned_once() {
        let mut g = Graph::default();
        let orphaning = Node { orphaning: true, ..node(None) };
        assert_eq!(g.upsert("owner", orphaning.clone()), vec![Work::Orphan("owner".into())]);
        assert!(g.upsert("owner", orphaning).is_empty());
    }
}
