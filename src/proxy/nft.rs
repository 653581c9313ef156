//! The `nft` binary as the proxy uses it: one transaction per call (`nft -f -`, all or nothing,
//! checked by the kernel), and the names in a table (`nft list chains`, `nft -t list sets|maps`)
//! before a full sync. Runs as child processes, never on the async threads' time.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::ruleset::Family;
use super::table::{parse_listing, Existing};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft {what} failed: {stderr}")]
    Failed { what: String, stderr: String },
}

/// `nft --version`, when the binary is there.
pub async fn version() -> Result<String, NftError> {
    let out = tokio::process::Command::new("nft").arg("--version").output().await.map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Failed { what: "--version".into(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Applies `text` as one transaction.
pub async fn apply(text: &str) -> Result<(), NftError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = text.as_bytes().to_vec();
        // written while the output is read, so a chatty failure cannot block both sides
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let out = child.wait_with_output().await.map_err(NftError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // the first error and the line it quotes are enough
    let stderr: String = stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
    Err(NftError::Failed { what: "-f (transaction)".into(), stderr })
}

async fn list(args: &[&str]) -> Result<String, NftError> {
    let out = tokio::process::Command::new("nft").args(args).stdin(Stdio::null()).output().await.map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Failed { what: args.join(" "), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The chains, sets and maps of table `name` of `family` (None: no such table).
pub async fn existing(family: Family, name: &str) -> Result<Option<Existing>, NftError> {
    let f = family.nft();
    let chains = list(&["list", "chains", f]).await?;
    let sets = list(&["-t", "list", "sets", f]).await?;
    let maps = list(&["-t", "list", "maps", f]).await?;
    Ok(parse_listing(name, &chains, &format!("{sets}\n{maps}")))
}

/// Deletes table `name` of `family` when it exists.
pub async fn delete_table(family: Family, name: &str) -> Result<(), NftError> {
    let t = format!("{} {name}", family.nft());
    apply(&format!("add table {t}\ndelete table {t}\n")).await
}
