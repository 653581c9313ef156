//! Kubernetes names: the one grammar lives in the shared `berth-names` crate (the apiserver
//! checks names with the same rules); this module re-exports it for the node side.
pub use berth_names::*;
