//! Which controllers run, as kube-controller-manager's `--controllers`: a list of names, `*`
//! for every controller on by default, `-name` to turn one off (`*,-deployment`).

use std::collections::BTreeSet;

/// The controllers Berth's controller manager has, by upstream's names (sorted).
pub const KNOWN: &[&str] = &[
    "cronjob",
    "daemonset",
    "deployment",
    "disruption",
    "endpoint",
    "endpointslice",
    "garbagecollector",
    "horizontalpodautoscaling",
    "job",
    "namespace",
    "nodeipam",
    "nodelifecycle",
    "persistentvolume-binder",
    "podgc",
    "replicaset",
    "replicationcontroller",
    "service-lb",
    "statefulset",
    "ttl-after-finished",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("\"{0}\" is not in the list of known controllers: {known}", known = KNOWN.join(", "))]
pub struct UnknownController(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    all: bool,
    on: BTreeSet<String>,
    off: BTreeSet<String>,
}

impl Selection {
    pub fn parse(items: &[String]) -> Result<Self, UnknownController> {
        let mut s = Selection { all: false, on: BTreeSet::new(), off: BTreeSet::new() };
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            if item == "*" {
                s.all = true;
                continue;
            }
            let (name, set) = match item.strip_prefix('-') {
                Some(n) => (n, &mut s.off),
                None => (item, &mut s.on),
            };
            if !KNOWN.contains(&name) {
                return Err(UnknownController(name.to_string()));
            }
            set.insert(name.to_string());
        }
        Ok(s)
    }

    /// Every controller.
    pub fn all() -> Self {
        Selection { all: true, on: BTreeSet::new(), off: BTreeSet::new() }
    }

    pub fn enabled(&self, name: &str) -> bool {
        debug_assert!(KNOWN.contains(&name), "controller {name} missing from selection::KNOWN");
        !self.off.contains(name) && (self.on.contains(name) || self.all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_names_and_minuses() {
        let s = Selection::parse(&["*".into(), "-deployment".into()]).expect("parse");
        assert!(s.enabled("replicaset") && !s.enabled("deployment"));
        let s = Selection::parse(&["nodeipam".into()]).expect("parse");
        assert!(s.enabled("nodeipam") && !s.enabled("replicaset"));
        assert_eq!(Selection::parse(&["bogus".into()]), Err(UnknownController("bogus".into())));
    }
}
