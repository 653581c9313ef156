//! The garbage collector's picture of the cluster (upstream's dependency graph, reduced): every
//! observed object by uid with its identity and owner references, and for each owner uid the
//! objects that name it. Changes report which items the collector must look at: an object whose
//! owners changed, and the dependents of an object that went away. Pure bookkeeping.

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
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// Records `node` (added or updated); the uids to look at: the node when its owners changed.
    pub fn upsert(&mut self, uid: &str, node: Node) -> Vec<String> {
        let old = self.nodes.insert(uid.to_string(), node.clone());
        let old_owners = old.map(|o| o.owners).unwrap_or_default();
        if old_owners == node.owners {
            return vec![];
        }
        for r in &old_owners {
            if let Some(d) = self.dependents.get_mut(&r.uid) {
                d.remove(uid);
            }
        }
        for r in &node.owners {
            self.dependents.entry(r.uid.clone()).or_default().insert(uid.to_string());
        }
        if node.owners.is_empty() {
            vec![]
        } else {
            vec![uid.to_string()]
        }
    }

    /// Forgets the object `uid`; the uids to look at: its dependents.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        if let Some(old) = self.nodes.remove(uid) {
            for r in &old.owners {
                if let Some(d) = self.dependents.get_mut(&r.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&r.uid);
                    }
                }
            }
        }
        self.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default()
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
            owners: owner.map(|uid| vec![OwnerReference { uid: uid.into(), ..Default::default() }]).unwrap_or_default(),
        }
    }

    #[test]
    fn owner_changes_and_removals_name_the_items_to_look_at() {
        let mut g = Graph::default();
        assert!(g.upsert("owner", node(None)).is_empty());
        assert_eq!(g.upsert("dep", node(Some("owner"))), vec!["dep".to_string()]);
        assert!(g.upsert("dep", node(Some("owner"))).is_empty(), "no change: nothing to do");
        assert!(g.has_dependents("owner"));
        assert_eq!(g.remove("owner"), vec!["dep".to_string()]);
        assert!(g.remove("dep").is_empty());
        assert!(!g.has_dependents("owner"));
        assert_eq!(g.of_resource("v1/configmaps").len(), 0);
    }
}
