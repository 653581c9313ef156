//! The embedded store: the conformance suite, plus what only it has — a data dir lock, reopen,
//! slow-watcher cut-off, bounded file size under endless rewrites, and the kill -9 crash test.

mod common;
#[macro_use]
mod conformance;

conformance_suite!(common::embedded);
