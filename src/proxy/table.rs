//! One nftables table as the proxy last wrote it, and the text of the transactions that change
//! it (`nft -f` input, applied all or nothing):
//! - [`TableState::plan`]: incremental. Only the owners (Services) that changed are compared
//!   with what was written for them: new chains are added, changed ones flushed and written
//!   again, gone ones flushed and deleted; set and map elements are added and deleted one by one.
//! - [`TableState::full`]: the whole table, converging whatever the kernel holds (after a
//!   restart, or drift): every chain flushed and rewritten, the proxy's maps and sets flushed
//!   and filled, chains and sets that are not wanted deleted. Sets the kernel fills (session
//!   affinity) keep their contents.
//!
//! Pure: making the text and recording the outcome are separate, so a transaction that fails
//! leaves the record as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ruleset::{Chain, ElementKey, Family, Fragment, Owner, SetDecl};

/// Elements per `add element` statement.
const ELEMENTS_PER_STATEMENT: usize = 500;

/// What the kernel holds of a table (names only), read before a full sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    pub maps: BTreeSet<String>,
}

/// The claims of owners on one element, and their values.
type Claims = BTreeMap<Owner, Option<String>>;

/// The element's value as written: the first claimant's.
fn winner(claims: &Claims) -> Option<&Option<String>> {
    claims.values().next()
}

/// A table as last written.
#[derive(Debug, Clone)]
pub struct TableState {
    pub family: Family,
    pub name: String,
    fragments: HashMap<Owner, Fragment>,
    claims: BTreeMap<ElementKey, Claims>,
}

/// An incremental transaction and the record it leaves once applied.
#[derive(Debug)]
pub struct Plan {
    pub text: String,
    fragments: Vec<(Owner, Option<Fragment>)>,
    claims: Vec<(ElementKey, Claims)>,
    /// Elements two owners claim (the first owner's value is written).
    pub conflicts: Vec<(ElementKey, Vec<Owner>)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// A full transaction and the record it leaves once applied.
#[derive(Debug)]
pub struct FullPlan {
    pub text: String,
    state: TableState,
    pub conflicts: Vec<(ElementKey, Vec<Owner>)>,
}

/// Transaction text in sections that must come in this order.
#[derive(Default)]
struct Text {
    /// Declarations: tables, chains, sets (anything later text may name).
    decl: Vec<String>,
    /// Elements deleted (before the chains they may point to go).
    del_elements: BTreeMap<String, Vec<String>>,
    /// Flushes and rules.
    body: Vec<String>,
    add_elements: BTreeMap<String, Vec<String>>,
    /// Chains to delete, flushed first (they may point at each other), then sets and maps
    /// (the chains' rules may name them).
    gone_flush: Vec<String>,
    gone_chains: Vec<String>,
    gone_sets: Vec<String>,
}

impl Text {
    fn render(self, t: &str) -> String {
        let mut out = String::new();
        let mut line = |s: &str| {
            out.push_str(s);
            out.push('\n');
        };
        for d in &self.decl {
            line(d);
        }
        for (c, keys) in &self.del_elements {
            for chunk in keys.chunks(ELEMENTS_PER_STATEMENT) {
                line(&format!("delete element {t} {c} {{ {} }}", chunk.join(", ")));
            }
        }
        for b in &self.body {
            line(b);
        }
        for (c, items) in &self.add_elements {
            for chunk in items.chunks(ELEMENTS_PER_STATEMENT) {
                line(&format!("add element {t} {c} {{ {} }}", chunk.join(", ")));
            }
        }
        for g in self.gone_flush.iter().chain(&self.gone_chains).chain(&self.gone_sets) {
            line(g);
        }
        out
    }
}

fn element_text(key: &str, value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{key} : {v}"),
        None => key.to_string(),
    }
}

fn declare_chain(t: &str, name: &str, chain: &Chain) -> String {
    match &chain.base {
        Some(base) => format!("add chain {t} {name} {{ {base} }}"),
        None => format!("add chain {t} {name}"),
    }
}

fn declare_set(t: &str, name: &str, decl: &SetDecl) -> String {
    format!("add {} {t} {name} {{ {} }}", decl.keyword(), decl.spec)
}

fn rules_of(t: &str, name: &str, chain: &Chain, out: &mut Vec<String>) {
    for r in &chain.rules {
        out.push(format!("add rule {t} {name} {r}"));
    }
}

impl TableState {
    pub fn new(family: Family, name: &str) -> TableState {
        TableState { family, name: name.to_string(), fragments: HashMap::new(), claims: BTreeMap::new() }
    }

    /// `ip berth-proxy`.
    pub fn id(&self) -> String {
        format!("{} {}", self.family.nft(), self.name)
    }

    /// The fragment last written for `owner`.
    pub fn fragment(&self, owner: &Owner) -> Option<&Fragment> {
        self.fragments.get(owner)
    }

    /// Chains and rules of the table as written.
    pub fn counts(&self) -> (usize, usize) {
        let chains = self.fragments.values().map(|f| f.chains.len()).sum();
        let rules = self.fragments.values().map(Fragment::rule_count).sum();
        (chains, rules)
    }

    /// The transaction that gives each owner of `changes` its new fragment (None: it is gone).
    pub fn plan(&self, changes: Vec<(Owner, Option<Fragment>)>) -> Plan {
        let t = self.id();
        let empty = Fragment::default();
        let mut text = Text::default();
        let mut touched: BTreeMap<ElementKey, Claims> = BTreeMap::new();
        let mut kept = vec![];
        for (owner, new) in changes {
            let old = self.fragments.get(&owner).unwrap_or(&empty);
            let new_ref = new.as_ref().unwrap_or(&empty);
            if old == new_ref {
                continue;
            }
            for (name, decl) in &new_ref.sets {
                if !old.sets.contains_key(name) {
                    text.decl.push(declare_set(&t, name, decl));
                }
            }
            for (name, decl) in &old.sets {
                if !new_ref.sets.contains_key(name) {
                    text.gone_sets.push(format!("delete {} {t} {name}", decl.keyword()));
                }
            }
            for (name, chain) in &new_ref.chains {
                match old.chains.get(name) {
                    None => {
                        text.decl.push(declare_chain(&t, name, chain));
                        rules_of(&t, name, chain, &mut text.body);
                    }
                    Some(o) if o.rules != chain.rules => {
                        text.body.push(format!("flush chain {t} {name}"));
                        rules_of(&t, name, chain, &mut text.body);
                    }
                    Some(_) => {}
                }
            }
            for name in old.chains.keys() {
                if !new_ref.chains.contains_key(name) {
                    text.gone_flush.push(format!("flush chain {t} {name}"));
                    text.gone_chains.push(format!("delete chain {t} {name}"));
                }
            }
            for key in old.elements.keys().chain(new_ref.elements.keys()) {
                let claims = touched.entry(key.clone()).or_insert_with(|| self.claims.get(key).cloned().unwrap_or_default());
                match new_ref.elements.get(key) {
                    Some(v) => claims.insert(owner.clone(), v.clone()),
                    None => claims.remove(&owner),
                };
            }
            kept.push((owner, new));
        }
        let mut conflicts = vec![];
        for (key, claims) in &touched {
            let before = self.claims.get(key).and_then(winner);
            let after = winner(claims);
            if before != after {
                let (container, k) = key;
                if before.is_some() {
                    text.del_elements.entry(container.clone()).or_default().push(k.clone());
                }
                if let Some(v) = after {
                    text.add_elements.entry(container.clone()).or_default().push(element_text(k, v));
                }
            }
            if claims.len() > 1 {
                conflicts.push((key.clone(), claims.keys().cloned().collect()));
            }
        }
        let rendered = text.render(&t);
        Plan { text: rendered, fragments: kept, claims: touched.into_iter().collect(), conflicts }
    }

    /// Records an applied plan.
    pub fn commit(&mut self, plan: Plan) {
        for (owner, fragment) in plan.fragments {
            match fragment {
                Some(f) => self.fragments.insert(owner, f),
                None => self.fragments.remove(&owner),
            };
        }
        for (key, claims) in plan.claims {
            if claims.is_empty() {
                self.claims.remove(&key);
            } else {
                self.claims.insert(key, claims);
            }
        }
    }

    /// The transaction that makes the table hold exactly `desired`, given the names the kernel
    /// has (`None`: the table is to be made anew, whatever is there).
    pub fn full(&self, desired: HashMap<Owner, Fragment>, existing: Option<&Existing>) -> FullPlan {
        let t = self.id();
        let mut text = Text::default();
        let fresh = Existing::default();
        match existing {
            Some(_) => text.decl.push(format!("add table {t}")),
            // made if missing, then deleted with everything in it, then made empty
            None => text.decl.extend([format!("add table {t}"), format!("delete table {t}"), format!("add table {t}")]),
        }
        let existing = existing.unwrap_or(&fresh);
        let mut owners: Vec<&Owner> = desired.keys().collect();
        owners.sort();
        let mut claims: BTreeMap<ElementKey, Claims> = BTreeMap::new();
        let mut wanted_chains = BTreeSet::new();
        let mut wanted_sets = BTreeSet::new();
        for owner in &owners {
            let f = &desired[*owner];
            for (name, decl) in &f.sets {
                text.decl.push(declare_set(&t, name, decl));
                if decl.owned && (existing.sets.contains(name) || existing.maps.contains(name)) {
                    text.body.push(format!("flush {} {t} {name}", decl.keyword()));
                }
                wanted_sets.insert(name.clone());
            }
            for (key, value) in &f.elements {
                claims.entry(key.clone()).or_default().insert((*owner).clone(), value.clone());
            }
        }
        // flushes of the maps come first in the body: they may point at chains that go
        for owner in &owners {
            for (name, chain) in &desired[*owner].chains {
                text.decl.push(declare_chain(&t, name, chain));
                if existing.chains.contains(name) {
                    text.body.push(format!("flush chain {t} {name}"));
                }
                rules_of(&t, name, chain, &mut text.body);
                wanted_chains.insert(name.clone());
            }
        }
        for name in existing.chains.difference(&wanted_chains) {
            text.gone_flush.push(format!("flush chain {t} {name}"));
            text.gone_chains.push(format!("delete chain {t} {name}"));
        }
        for name in existing.sets.difference(&wanted_sets) {
            text.gone_sets.push(format!("delete set {t} {name}"));
        }
        for name in existing.maps.difference(&wanted_sets) {
            text.gone_sets.push(format!("delete map {t} {name}"));
        }
        let mut conflicts = vec![];
        for (key, c) in &claims {
            if let Some(v) = winner(c) {
                text.add_elements.entry(key.0.clone()).or_default().push(element_text(&key.1, v));
            }
            if c.len() > 1 {
                conflicts.push((key.clone(), c.keys().cloned().collect()));
            }
        }
        let rendered = text.render(&t);
        let state = TableState { family: self.family, name: self.name.clone(), fragments: desired, claims };
        FullPlan { text: rendered, state, conflicts }
    }

    /// Records an applied full transaction.
    pub fn commit_full(&mut self, plan: FullPlan) {
        *self = plan.state;
    }

    /// Forgets everything (the table was deleted).
    pub fn clear(&mut self) {
        self.fragments.clear();
        self.claims.clear();
    }
}

/// The names of chains and of sets and maps of table `name` in `nft list chains <family>` and
/// `nft -t list sets|maps <family>` output.
pub fn parse_listing(name: &str, chains: &str, sets: &str) -> Option<Existing> {
    let mut found = false;
    let mut out = Existing::default();
    for (text, words) in [(chains, &["chain"][..]), (sets, &["set", "map"][..])] {
        let mut inside = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("table ") {
                // "table ip NAME {"
                inside = rest.split_whitespace().nth(1) == Some(name);
                found |= inside;
                continue;
            }
            if !inside {
                continue;
            }
            let l = line.trim();
            for w in words {
                if let Some(rest) = l.strip_prefix(w).and_then(|r| r.strip_prefix(' ')) {
                    if let Some(n) = rest.strip_suffix(" {").or_else(|| rest.strip_suffix('{')).map(str::trim) {
                        let into = match *w {
                            "chain" => &mut out.chains,
                            "set" => &mut out.sets,
                            _ => &mut out.maps,
                        };
                        into.insert(n.to_string());
                    }
                }
            }
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Endpoint, Proto, ServiceModel, ServicePort};
    use crate::proxy::rules::{self, Base, Context};

    fn svc(name: &str, ips: &[&str]) -> ServiceModel {
        ServiceModel {
            namespace: "ns".into(),
            name: name.into(),
            cluster_ips: vec!["10.43.0.5".parse().expect("ip")],
            external_ips: vec!["192.0.2.1".parse().expect("ip")],
            load_balancer_ips: vec![],
            ports: vec![ServicePort {
                name: String::new(),
                protocol: Proto::Tcp,
                port: 80,
                node_port: None,
                endpoints: ips
                    .iter()
                    .map(|i| Endpoint { ip: i.parse().expect("ip"), port: 80, ready: true, serving: true, terminating: false, local: true })
                    .collect(),
            }],
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            source_ranges: vec![],
            health_check_node_port: None,
        }
    }

    fn owner(name: &str) -> Owner {
        Owner::Service { namespace: "ns".into(), name: name.into() }
    }

    fn frag(s: &ServiceModel) -> Fragment {
        rules::service(Family::V4, s, &Context::default())
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn one_changed_service_rewrites_only_its_own_chains_and_elements() {
        let mut t = TableState::new(Family::V4, "bp");
        let base = rules::skeleton(Family::V4, &Base::default());
        let first = t.plan(vec![(Owner::Base, Some(base)), (owner("a"), Some(frag(&svc("a", &["10.42.0.1", "10.42.0.2"]))))]);
        assert!(first.text.lines().next().is_some_and(|l| l.starts_with("add set ip bp cluster-ips")), "declarations first: {}", first.text);
        t.commit(first);

        // an endpoint goes: the service chain is rewritten, the endpoint's hairpin pair goes,
        // the map elements stay
        let p = t.plan(vec![(owner("a"), Some(frag(&svc("a", &["10.42.0.1"]))))]);
        assert_eq!(
            lines(&p.text),
            [
                "delete element ip bp hairpin-endpoints { 10.42.0.2 . 10.42.0.2 }",
                "flush chain ip bp svc-ns/a/tcp/80",
                "add rule ip bp svc-ns/a/tcp/80 meta l4proto tcp dnat to 10.42.0.1:80",
            ]
        );
        t.commit(p);
        assert!(t.plan(vec![(owner("a"), Some(frag(&svc("a", &["10.42.0.1"]))))]).is_empty(), "nothing changed");

        // no endpoints: the element moves from service-ips to no-endpoint-services, chains go
        let p = t.plan(vec![(owner("a"), Some(frag(&svc("a", &[]))))]);
        let l = lines(&p.text);
        assert!(l.contains(&"delete element ip bp service-ips { 10.43.0.5 . tcp . 80, 192.0.2.1 . tcp . 80 }"), "{l:?}");
        assert!(l.iter().position(|x| x.starts_with("delete element")) < l.iter().position(|x| x.starts_with("delete chain")), "{l:?}");
        assert!(l.contains(&"add element ip bp no-endpoint-services { 10.43.0.5 . tcp . 80 : goto reject-chain, 192.0.2.1 . tcp . 80 : goto reject-chain }"));
        assert_eq!(l.iter().filter(|x| x.starts_with("delete chain")).count(), 2, "svc and ext: {l:?}");
        t.commit(p);

        // deleted: its elements go, the cluster IP leaves cluster-ips
        let p = t.plan(vec![(owner("a"), None)]);
        assert!(p.text.contains("delete element ip bp cluster-ips { 10.43.0.5 }"), "{}", p.text);
        t.commit(p);
        assert_eq!(t.counts().0, rules::skeleton(Family::V4, &Base::default()).chains.len());
    }

    #[test]
    fn the_first_owner_of_a_shared_element_wins_and_the_other_takes_over_when_it_goes() {
        let mut t = TableState::new(Family::V4, "bp");
        let mut b = svc("b", &["10.42.0.9"]);
        b.cluster_ips = vec!["10.43.0.6".parse().expect("ip")];
        let p = t.plan(vec![(owner("a"), Some(frag(&svc("a", &["10.42.0.1"])))), (owner("b"), Some(frag(&b)))]);
        assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
        assert!(p.text.contains("192.0.2.1 . tcp . 80 : goto ext-ns/a/tcp/80"), "{}", p.text);
        t.commit(p);
        let p = t.plan(vec![(owner("a"), None)]);
        assert!(p.text.contains("delete element ip bp service-ips { 10.43.0.5 . tcp . 80, 192.0.2.1 . tcp . 80 }"), "{}", p.text);
        assert!(p.text.contains("add element ip bp service-ips { 192.0.2.1 . tcp . 80 : goto ext-ns/b/tcp/80 }"), "{}", p.text);
    }

    #[test]
    fn a_full_sync_rewrites_everything_and_deletes_leftovers() {
        let t = TableState::new(Family::V4, "bp");
        let mut desired = HashMap::new();
        desired.insert(Owner::Base, rules::skeleton(Family::V4, &Base { pod_cidrs: vec!["10.42.0.0/16".into()], ..Default::default() }));
        desired.insert(owner("a"), frag(&svc("a", &["10.42.0.1"])));
        let existing = Existing {
            chains: ["services", "svc-ns/a/tcp/80", "svc-ns/gone/tcp/80", "ep-ns/gone/tcp/80__10.42.0.3/80"].iter().map(|s| s.to_string()).collect(),
            sets: ["aff-ns/gone/tcp/80__10.42.0.3/80"].iter().map(|s| s.to_string()).collect(),
            maps: ["service-ips", "old-map"].iter().map(|s| s.to_string()).collect(),
        };
        let p = t.full(desired.clone(), Some(&existing));
        let l = lines(&p.text);
        assert_eq!(l[0], "add table ip bp");
        let pos = |s: &str| l.iter().position(|x| *x == s).unwrap_or_else(|| panic!("no {s:?} in\n{}", p.text));
        assert!(
            pos("flush map ip bp service-ips")
                < pos("add element ip bp service-ips { 10.43.0.5 . tcp . 80 : goto svc-ns/a/tcp/80, 192.0.2.1 . tcp . 80 : goto ext-ns/a/tcp/80 }")
        );
        assert!(pos("add chain ip bp svc-ns/a/tcp/80") < pos("flush chain ip bp svc-ns/a/tcp/80"));
        assert!(pos("flush chain ip bp svc-ns/gone/tcp/80") < pos("delete chain ip bp ep-ns/gone/tcp/80__10.42.0.3/80"));
        assert!(pos("flush chain ip bp ep-ns/gone/tcp/80__10.42.0.3/80") < pos("delete chain ip bp svc-ns/gone/tcp/80"));
        assert!(pos("delete chain ip bp svc-ns/gone/tcp/80") < pos("delete set ip bp aff-ns/gone/tcp/80__10.42.0.3/80"));
        pos("delete map ip bp old-map");
        assert!(l.contains(&"add element ip bp pod-cidrs { 10.42.0.0/16 }"));
        assert!(!l.iter().any(|x| x.starts_with("flush chain ip bp ext-")), "new chains need no flush");

        // after it, an unchanged service plans nothing
        let mut t = t;
        t.commit_full(p);
        assert!(t.plan(vec![(owner("a"), Some(frag(&svc("a", &["10.42.0.1"]))))]).is_empty());
        // anew: the table is deleted first
        let p = t.full(desired, None);
        assert_eq!(lines(&p.text)[..3], ["add table ip bp", "delete table ip bp", "add table ip bp"]);
    }

    #[test]
    fn listings_name_the_chains_and_sets_of_our_table_only() {
        let chains = "table ip nat {\n\tchain POSTROUTING {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n}\ntable ip bp {\n\tchain services {\n\t}\n\tchain svc-ns/a/tcp/80 {\n\t}\n}\n";
        let sets = "table ip bp {\n\tset pod-cidrs {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n}\n";
        let e = parse_listing("bp", chains, sets).expect("found");
        assert_eq!(e.chains.iter().map(String::as_str).collect::<Vec<_>>(), ["services", "svc-ns/a/tcp/80"]);
        assert_eq!(e.sets.iter().map(String::as_str).collect::<Vec<_>>(), ["pod-cidrs"]);
        assert_eq!(e.maps.iter().map(String::as_str).collect::<Vec<_>>(), ["service-ips"]);
        assert_eq!(parse_listing("other", chains, sets), None);
    }
}
