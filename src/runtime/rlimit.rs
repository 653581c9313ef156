//! A resource limit every container gets (`[containers] rlimits` in the config): the type the
//! runtime applies, owned here and only assembled by the config.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// RLIMIT_NOFILE, RLIMIT_NPROC, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}
