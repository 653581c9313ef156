//! Optional IP masquerade for traffic leaving the pod network (`"ipMasq": true`), one
//! iptables rule per pod address, tagged with the network and container so DEL finds it.
use crate::ipam::{from_u128, Allocation};
use crate::types::CniError;
use std::process::Command;

fn comment(network: &str, id: &str) -> String {
    format!("berth-cni {network} {id}")
}

fn rule(network: &str, id: &str, a: &Allocation) -> Vec<String> {
    let subnet = format!("{}/{}", from_u128(a.range.network, a.range.v6), a.range.prefix);
    let host = if a.range.v6 { 128 } else { 32 };
    vec![
        "-s".into(),
        format!("{}/{host}", a.ip),
        "!".into(),
        "-d".into(),
        subnet,
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        comment(network, id),
        "-j".into(),
        "MASQUERADE".into(),
    ]
}

fn tool(v6: bool) -> &'static str {
    if v6 {
        "ip6tables"
    } else {
        "iptables"
    }
}

pub fn add(network: &str, id: &str, a: &Allocation) -> Result<(), CniError> {
    let mut args = vec!["-w".to_string(), "-t".into(), "nat".into(), "-A".into(), "POSTROUTING".into()];
    args.extend(rule(network, id, a));
    let out = Command::new(tool(a.range.v6)).args(&args).output().map_err(|e| CniError::io(format!("running iptables: {e}")))?;
    if !out.status.success() {
        return Err(CniError::io(format!("iptables: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Delete every POSTROUTING rule carrying this container's comment.
pub fn remove(network: &str, id: &str) {
    let tag = comment(network, id);
    for t in ["iptables", "ip6tables"] {
        let Ok(out) = Command::new(t).args(["-w", "-t", "nat", "-S", "POSTROUTING"]).output() else { continue };
        for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&tag)) {
            let spec: Vec<String> = shell_words(line.trim_start_matches("-A POSTROUTING "));
            let _ = Command::new(t).args(["-w", "-t", "nat", "-D", "POSTROUTING"]).args(&spec).output();
        }
    }
}

/// Split an iptables -S line into arguments (double quotes group words).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
