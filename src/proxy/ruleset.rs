//! The contents of the proxy's nftables tables as data: chains with their rules, sets and maps
//! with their declarations, and elements of the shared sets and maps. The table is split into
//! [`Fragment`]s by owner (the table's skeleton, and each Service), so one Service's share can
//! be compared and rewritten alone. Pure data and nft syntax helpers; no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// An nftables table family the proxy programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The table family (`ip`, `ip6`), also the address expression's keyword (`ip daddr`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The element type of an address.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    pub fn has(self, ip: &IpAddr) -> bool {
        matches!((self, ip), (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)))
    }

    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// `ip:port` as `dnat to` takes it (`[v6]:port`).
    pub fn socket(self, ip: &IpAddr, port: u16) -> String {
        match self {
            Family::V4 => format!("{ip}:{port}"),
            Family::V6 => format!("[{ip}]:{port}"),
        }
    }
}

/// An address as part of an identifier (chain and set names allow letters, digits, `/`, `-`,
/// `_` and `.`: an IPv6 address's `:` becomes `.`).
pub fn ip_in_name(ip: &IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

/// One chain: its base-chain declaration (type, hook, priority) for the hooked ones, and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub base: Option<String>,
    pub rules: Vec<String>,
}

impl Chain {
    pub fn new(rules: Vec<String>) -> Chain {
        Chain { base: None, rules }
    }

    pub fn hooked(base: &str, rules: Vec<String>) -> Chain {
        Chain { base: Some(base.to_string()), rules }
    }
}

/// A set or map declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDecl {
    pub map: bool,
    /// What goes between the braces: `type ipv4_addr ; flags interval ;`.
    pub spec: String,
    /// Its elements are the fragments' (flushed and written again by a full sync); false for
    /// sets the kernel fills (session affinity), whose contents a sync keeps.
    pub owned: bool,
}

impl SetDecl {
    pub fn keyword(&self) -> &'static str {
        if self.map {
            "map"
        } else {
            "set"
        }
    }
}

/// The element `key` of set or map `container` (its value for a map, e.g. `goto svc-...`).
pub type ElementKey = (String, String);

/// One owner's share of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, SetDecl>,
    pub elements: BTreeMap<ElementKey, Option<String>>,
}

impl Fragment {
    pub fn chain(&mut self, name: String, chain: Chain) {
        self.chains.insert(name, chain);
    }

    pub fn set(&mut self, name: &str, spec: String, owned: bool) {
        self.sets.insert(name.to_string(), SetDecl { map: false, spec, owned });
    }

    pub fn map(&mut self, name: &str, spec: String) {
        self.sets.insert(name.to_string(), SetDecl { map: true, spec, owned: true });
    }

    /// An element of a set.
    pub fn member(&mut self, set: &str, key: String) {
        self.elements.insert((set.to_string(), key), None);
    }

    /// An element of a map.
    pub fn entry(&mut self, map: &str, key: String, value: String) {
        self.elements.insert((map.to_string(), key), Some(value));
    }

    /// Rules, counted over the chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }
}

/// Who a fragment belongs to. The skeleton sorts first: when two owners put the same element
/// into a set or map (two Services claiming one external IP and port), the first one's counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Base,
    Service { namespace: String, name: String },
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Base => f.write_str("(table)"),
            Owner::Service { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}
