//! CNI network configuration: the first usable `.conflist` / `.conf` / `.json` file of the
//! conf dir by name, a single-plugin `.conf` turned into a list.
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfError {
    #[error("no network config found in {0}")]
    Missing(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A network configuration list as the CNI spec defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Each plugin's own configuration object (with at least "type").
    pub plugins: Vec<Value>,
    /// The whole list as read (kept in the result cache so DEL uses what ADD used).
    pub raw: Value,
}

impl NetConfList {
    pub fn from_value(path: &Path, v: Value) -> Result<NetConfList, ConfError> {
        let bad = |m: &str| ConfError::Invalid { path: path.to_path_buf(), message: m.to_string() };
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let (plugins, raw) = match obj.get("plugins") {
            Some(Value::Array(p)) => (p.clone(), v.clone()),
            Some(_) => return Err(bad("\"plugins\" must be a list")),
            None => {
                // A single-plugin .conf: its name and version move up to the list.
                let mut plugin = v.clone();
                if let Some(o) = plugin.as_object_mut() {
                    o.remove("name");
                    o.remove("cniVersion");
                }
                let list = json!({"cniVersion": obj.get("cniVersion").cloned().unwrap_or(json!("0.3.1")), "name": obj.get("name").cloned().unwrap_or(Value::Null), "plugins": [plugin]});
                (vec![plugin], list)
            }
        };
        let name = raw["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| bad("\"name\" is required"))?.to_string();
        let cni_version = raw["cniVersion"].as_str().unwrap_or("0.3.1").to_string();
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty"));
        }
        for (i, p) in plugins.iter().enumerate() {
            if p["type"].as_str().map(str::is_empty).unwrap_or(true) {
                return Err(bad(&format!("plugins[{i}] has no \"type\"")));
            }
        }
        let disable_check = raw["disableCheck"].as_bool().unwrap_or(false);
        Ok(NetConfList { path: path.to_path_buf(), name, cni_version, disable_check, plugins, raw })
    }
}

/// The config files of `dir` in load order, with their modification times.
pub fn candidates(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut files: Vec<(PathBuf, Option<SystemTime>)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
        .map(|p| {
            let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, m)
        })
        .collect();
    files.sort();
    files
}

/// Load the first config of `dir` by name. A file that cannot be read or parsed is an error
/// naming it (as containerd's CNI loader does), not skipped: the network it was meant to
/// configure would otherwise be silently replaced by the next file or by none.
pub fn load(dir: &Path) -> Result<NetConfList, ConfError> {
    let Some((path, _)) = candidates(dir).into_iter().next() else {
        return Err(ConfError::Missing(dir.to_path_buf()));
    };
    let v = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
        .map_err(|message| ConfError::Invalid { path: path.clone(), message: format!("failed to load CNI config: {message}") })?;
    NetConfList::from_value(&path, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_lowest_name_first_and_wraps_single_confs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("10-one.conf"), r#"{"cniVersion":"1.0.0","name":"one","type":"bridge","bridge":"b0"}"#).unwrap();
        std::fs::write(d.path().join("20-two.conflist"), r#"{"cniVersion":"1.1.0","name":"two","plugins":[{"type":"x"}]}"#).unwrap();
        let l = load(d.path()).unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str(), l.plugins.len()), ("one", "1.0.0", 1));
        assert_eq!(l.plugins[0]["bridge"], "b0");
        assert!(l.plugins[0].get("name").is_none());
        let e = NetConfList::from_value(Path::new("x"), json!({"name": "n", "plugins": [{"bridge": "b"}]})).unwrap_err();
        assert!(e.to_string().contains("type"));
    }

    #[test]
    fn an_unparsable_first_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("05-broken.conflist"), "{not json").unwrap();
        std::fs::write(d.path().join("10-one.conf"), r#"{"cniVersion":"1.0.0","name":"one","type":"bridge"}"#).unwrap();
        let e = load(d.path()).unwrap_err().to_string();
        assert!(e.contains("05-broken.conflist") && e.contains("failed to load CNI config"), "{e}");
        assert!(matches!(load(&d.path().join("none")), Err(ConfError::Missing(_))));
    }
}
