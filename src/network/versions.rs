//! Which CNI spec versions each plugin binary speaks: its answer to VERSION, asked once per
//! binary and cached by path and modification time, so a pod start never pays for it and an
//! upgraded plugin is asked again.
use crate::network::plugin::{self, Invocation, PluginError};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Versions Berth itself can drive a chain at, newest first.
pub const RUNTIME_VERSIONS: &[&str] = &["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0"];

/// Plugin binary → (its modification time when asked, the versions it answered).
type Answers = HashMap<PathBuf, (Option<SystemTime>, Vec<String>)>;

#[derive(Default)]
pub struct VersionCache {
    known: Mutex<Answers>,
}

impl VersionCache {
    /// The versions the plugin `kind` supports, from the cache or by asking it.
    pub async fn supported(&self, kind: &str, inv: &Invocation<'_>) -> Result<Vec<String>, PluginError> {
        let binary =
            plugin::find_plugin(kind, inv.bin_dirs).ok_or_else(|| PluginError::NotFound { plugin: kind.to_string(), path: plugin::path_list(inv.bin_dirs) })?;
        let mtime = modified(&binary);
        if let Some((stamp, versions)) = self.lock().get(&binary) {
            if *stamp == mtime && mtime.is_some() {
                return Ok(versions.clone());
            }
        }
        let answer = plugin::run(&json!({"type": kind, "cniVersion": RUNTIME_VERSIONS[0]}), inv).await?;
        let versions: Vec<String> = match answer["supportedVersions"].as_array() {
            Some(list) => list.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            // A plugin that does not list versions speaks the one it answered with.
            None => answer["cniVersion"].as_str().map(|v| vec![v.to_string()]).unwrap_or_default(),
        };
        if versions.is_empty() {
            return Err(PluginError::Exec {
                plugin: kind.to_string(),
                command: "VERSION".into(),
                message: format!("answer lists no supported versions: {answer}"),
            });
        }
        self.lock().insert(binary, (mtime, versions.clone()));
        Ok(versions)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest of Berth's versions that every plugin's list contains.
pub fn newest_common(per_plugin: &[Vec<String>]) -> Option<&'static str> {
    RUNTIME_VERSIONS.iter().copied().find(|v| per_plugin.iter().all(|supported| supported.iter().any(|s| s == v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn newest_common_version_of_a_chain() {
        let berth = list(&["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
        let debian_portmap = list(&["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]);
        assert_eq!(newest_common(&[berth.clone(), debian_portmap]), Some("1.0.0"));
        assert_eq!(newest_common(std::slice::from_ref(&berth)), Some("1.1.0"));
        assert_eq!(newest_common(&[berth, list(&["0.1.0", "0.2.0"])]), None);
    }
}
