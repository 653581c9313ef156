//! Berth's Kubernetes apiserver. One generic REST layer ([`rest`]) over a table of resources
//! ([`resources`], each kind a [`strategy`]), a watch cache per resource in front of the store
//! ([`cache`]), discovery and OpenAPI from the same table, and one door: [`router`], a tower
//! service that the HTTPS listener ([`serve`]) adapts to TLS connections and that in-process
//! callers use without TCP. The router authenticates every request from the network ([`authn`]);
//! in-process callers bring their [`User`]; every request is then authorized ([`authz`]). Objects are the k8s-openapi types, stored as JSON in
//! berth-store.

pub mod admission;
pub mod api;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod cache;
pub mod certificates;
pub mod content;
pub mod convert;
pub mod crd;
pub mod cron;
pub mod discovery;
pub mod encoded;
pub mod encryption;
pub mod managed;
pub mod meta;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod resources;
pub mod rest;
pub mod review;
pub mod selector;
pub mod serve;
pub mod server;
pub mod services;
pub mod status;
pub mod strategy;
pub mod table;
pub mod written;

pub use api::{Api, ApiConfig};
pub use rest::http::{in_process, router};
pub use server::{run, run_with, OnStarted, ServerError, ServerOptions};
pub use status::ApiError;

/// An authenticated user: what authentication found, what authorization and admission judge
/// (upstream's user.Info).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    /// Empty when the credential does not carry one (client certificates).
    pub uid: String,
    pub groups: Vec<String>,
    /// What the authenticator adds (a service account token's pod, a node's ...).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        User { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
    }
}
