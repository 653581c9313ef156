//! Berth's Kubernetes apiserver. One generic REST layer ([`rest`]) over a table of resources
//! ([`resources`], each kind a [`strategy`]), a watch cache per resource in front of the store
//! ([`cache`]), discovery and OpenAPI from the same table, and one door: [`router`], a tower
//! service that the HTTPS listener ([`serve`]) adapts to TLS connections and that in-process
//! callers use without TCP. Objects are the k8s-openapi types, stored as JSON in berth-store.

pub mod api;
pub mod cache;
pub mod content;
pub mod convert;
pub mod discovery;
pub mod managed;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod resources;
pub mod rest;
pub mod selector;
pub mod serve;
pub mod server;
pub mod status;
pub mod strategy;
pub mod table;

pub use api::{Api, ApiConfig};
pub use rest::http::{in_process, router};
pub use server::{run, ServerError, ServerOptions};
pub use status::ApiError;

/// An authenticated user: what authentication found, what authorization will judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}
