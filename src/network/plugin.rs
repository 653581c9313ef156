//! Running one CNI plugin: find its binary on the plugin path, pass the command in the
//! environment and the config on stdin, and read a result or a CNI error from stdout.
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("CNI plugin {plugin:?} not found in {path}")]
    NotFound { plugin: String, path: String },
    /// The plugin's own error: CNI code, message and details.
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin { plugin: String, command: String, code: u64, msg: String, details: String },
    #[error("CNI plugin {plugin} {command} did not finish within {secs} s")]
    Timeout { plugin: String, command: String, secs: u64 },
    #[error("CNI plugin {plugin} {command}: {message}")]
    Exec { plugin: String, command: String, message: String },
}

/// What a plugin is told besides its config.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

pub fn find_plugin(kind: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    if kind.contains('/') {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file())
}

pub fn path_list(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.to_string_lossy().to_string()).collect::<Vec<_>>().join(":")
}

/// Run the plugin named by `config["type"]` with `config` on stdin. Returns its stdout as
/// JSON (Null when it printed nothing, as DEL may).
pub async fn run(config: &Value, inv: &Invocation<'_>) -> Result<Value, PluginError> {
    let kind = config["type"].as_str().unwrap_or_default().to_string();
    let exec_err = |message: String| PluginError::Exec { plugin: kind.clone(), command: inv.command.into(), message };
    let binary = find_plugin(&kind, inv.bin_dirs).ok_or_else(|| PluginError::NotFound { plugin: kind.clone(), path: path_list(inv.bin_dirs) })?;
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", path_list(inv.bin_dirs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| exec_err(format!("starting {}: {e}", binary.display())))?;
    let input = serde_json::to_vec(config).map_err(|e| exec_err(e.to_string()))?;
    let mut stdin = child.stdin.take().ok_or_else(|| exec_err("no stdin".into()))?;
    let output = async {
        // A plugin that exits without reading its input is not our problem: ignore EPIPE.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(inv.timeout, output).await {
        Ok(r) => r.map_err(|e| exec_err(e.to_string()))?,
        Err(_) => return Err(PluginError::Timeout { plugin: kind, command: inv.command.into(), secs: inv.timeout.as_secs() }),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    if !out.status.success() {
        let e = parsed.unwrap_or_default();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(PluginError::Plugin {
            plugin: kind,
            command: inv.command.into(),
            code: e["code"].as_u64().unwrap_or(999),
            msg: e["msg"].as_str().map(String::from).unwrap_or_else(|| if stderr.is_empty() { format!("exit status {}", out.status) } else { stderr }),
            details: e["details"].as_str().unwrap_or_default().to_string(),
        });
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    parsed.ok_or_else(|| exec_err(format!("output is not JSON: {}", stdout.trim())))
}

/// The plugin config as a plugin receives it: the list's name and version, the previous
/// result, and the runtime config keys the plugin asks for in "capabilities".
pub fn plugin_input(plugin: &Value, name: &str, version: &str, prev: Option<&Value>, runtime_config: &Value) -> Value {
    let mut conf = plugin.clone();
    let Some(o) = conf.as_object_mut() else { return conf };
    o.insert("name".into(), Value::String(name.into()));
    o.insert("cniVersion".into(), Value::String(version.into()));
    if let Some(p) = prev.filter(|p| !p.is_null()) {
        o.insert("prevResult".into(), p.clone());
    }
    let mut rc = serde_json::Map::new();
    if let (Some(caps), Some(given)) = (plugin["capabilities"].as_object(), runtime_config.as_object()) {
        for (k, v) in given {
            if caps.get(k).and_then(|c| c.as_bool()).unwrap_or(false) {
                rc.insert(k.clone(), v.clone());
            }
        }
    }
    if !rc.is_empty() {
        o.insert("runtimeConfig".into(), Value::Object(rc));
    }
    conf
}

/// Whether `v` ("1.1.0") is at least `min`.
pub fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| s.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    parse(v) >= parse(min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_carries_only_asked_capabilities() {
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let rc = json!({"portMappings": [{"hostPort": 8080}], "bandwidth": {"ingressRate": 1}});
        let v = plugin_input(&plugin, "net", "1.0.0", Some(&json!({"ips": []})), &rc);
        assert_eq!(v["runtimeConfig"], json!({"portMappings": [{"hostPort": 8080}]}));
        assert_eq!(v["name"], "net");
        assert!(v["prevResult"].is_object());
        assert!(version_at_least("1.1.0", "1.1.0") && !version_at_least("1.0.0", "1.1.0") && version_at_least("1.10.0", "1.2.0"));
    }
}
