//! Runtime handlers (`RunPodSandbox.runtime_handler`, what a RuntimeClass names): the default
//! handler "" and the ones configured under `[runtimes.NAME]`, each the same runtime with
//! options of its own. Status lists them; a pod keeps the handler it was made with.
use serde::Deserialize;
use std::collections::BTreeMap;

/// Names accepted for the default handler besides "" (what crictl and older configs send).
pub const DEFAULT_ALIASES: &[&str] = &["berth", "runc"];

/// `[runtimes.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerOptions {
    /// The cgroup parent of this handler's pods when the kubelet gives none (default
    /// /berth; with the systemd driver a slice, default berth.slice).
    pub cgroup_parent: Option<String>,
    /// The seccomp profile of containers that ask for none: "runtime/default",
    /// "unconfined" (the default) or the path of a profile (containerd's unset_seccomp_profile).
    pub unset_seccomp_profile: Option<String>,
    /// Privileged containers get no host devices (containerd's option of the same name).
    pub privileged_without_host_devices: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("runtimes.{name}: a runtime handler name must be a DNS label (lowercase letters, digits, '-', at most 63 characters)")]
    BadName { name: String },
    #[error("runtimes.{name}.unset_seccomp_profile: {value:?} is not \"runtime/default\", \"unconfined\" or an absolute path")]
    BadSeccomp { name: String, value: String },
    #[error("runtimes.{name}.cgroup_parent: {value:?} {why}")]
    BadCgroupParent { name: String, value: String, why: &'static str },
}

#[derive(Debug, Clone, Default)]
pub struct Handlers {
    configured: BTreeMap<String, HandlerOptions>,
    default: HandlerOptions,
}

fn dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-') && !s.ends_with('-')
}

impl Handlers {
    pub fn new(configured: BTreeMap<String, HandlerOptions>) -> Result<Handlers, HandlerError> {
        for (name, o) in &configured {
            if !dns_label(name) {
                return Err(HandlerError::BadName { name: name.clone() });
            }
            if let Some(p) = &o.unset_seccomp_profile {
                if !matches!(p.as_str(), "runtime/default" | "unconfined") && !p.starts_with('/') {
                    return Err(HandlerError::BadSeccomp { name: name.clone(), value: p.clone() });
                }
            }
            if let Some(p) = &o.cgroup_parent {
                let why = if p.is_empty() {
                    Some("is empty")
                } else if p.split('/').any(|c| c == "..") {
                    Some("must not contain ..")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(HandlerError::BadCgroupParent { name: name.clone(), value: p.clone(), why });
                }
            }
        }
        Ok(Handlers { configured, default: HandlerOptions::default() })
    }

    /// The options of handler `name`; None for a handler nobody configured.
    pub fn get(&self, name: &str) -> Option<&HandlerOptions> {
        if name.is_empty() || DEFAULT_ALIASES.contains(&name) {
            return Some(self.configured.get(name).unwrap_or(&self.default));
        }
        self.configured.get(name)
    }

    /// Every handler name Status reports: "" first, then the configured ones.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(String::new()).chain(self.configured.keys().filter(|k| !k.is_empty()).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Handlers, String> {
        let m: BTreeMap<String, HandlerOptions> = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Handlers::new(m).map_err(|e| e.to_string())
    }

    #[test]
    fn configured_names_and_options() {
        let h = parse("[test-handler]\ncgroup_parent = \"/sandboxed\"\nunset_seccomp_profile = \"runtime/default\"\n[kata]\n").unwrap();
        assert_eq!(h.names(), vec!["", "kata", "test-handler"]);
        assert_eq!(h.get("test-handler").and_then(|o| o.cgroup_parent.clone()).as_deref(), Some("/sandboxed"));
        assert!(h.get("").is_some() && h.get("runc").is_some() && h.get("nope").is_none());
        assert!(parse("[Bad_Name]\n").unwrap_err().contains("DNS label"));
        assert!(parse("[x]\nunset_seccomp_profile = \"strict\"\n").unwrap_err().contains("unset_seccomp_profile"));
        assert!(parse("[x]\ncgroup_parent = \"/a/../b\"\n").unwrap_err().contains(".."));
        assert!(parse("[x]\nbogus = 1\n").unwrap_err().contains("unknown field"));
    }
}
