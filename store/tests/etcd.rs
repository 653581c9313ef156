//! The etcd backend against Debian's etcd-server: the conformance suite on a single member,
//! plus a three-member cluster that loses a member while writes go on.

mod common;
#[macro_use]
mod conformance;

conformance_suite!(common::etcd);
