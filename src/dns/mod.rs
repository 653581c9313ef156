//! Cluster DNS, node-local: what CoreDNS does for a cluster (k3s's Corefile: the kubernetes
//! plugin with `pods insecure` and the reverse zones, `forward . /etc/resolv.conf`, `cache 30`),
//! served by every node agent on its own node. Each cluster DNS address (`--cluster-dns`, the
//! address pods' resolv.conf names) is put on a link of the host (`link`) and served on UDP and
//! TCP port 53 there (`server`), so pods reach it through their default route. Answers for the
//! cluster zone come from an in-memory index of Services and EndpointSlices (`index`,
//! `answer`) kept current by watches on the API (`watch`); everything else goes to the node's
//! upstream resolvers through a cache (`forward`, `cache`). The `kube-dns` Service that reserves
//! the address is made by `berth server` (`service`).
//!
//! It must not read the store or anything but the API, and must not touch addresses or links it
//! did not make.

pub mod answer;
pub mod cache;
pub mod forward;
pub mod index;
pub mod link;
pub mod name;
pub mod server;
pub mod service;
mod watch;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch as signal;
use tracing::Instrument;

/// The TTL of the cluster zone's records: CoreDNS's kubernetes plugin default, which k3s's
/// Corefile keeps.
pub const TTL: u32 = 5;
/// The port the server listens on.
pub const PORT: u16 = 53;

/// What the node's DNS serves.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster DNS addresses (`--cluster-dns`).
    pub addresses: Vec<IpAddr>,
    /// The cluster domain (`--cluster-domain`).
    pub domain: String,
    /// The node's resolver configuration, whose nameservers are the upstreams (`--resolv-conf`).
    pub resolv_conf: PathBuf,
}

impl DnsConfig {
    /// The config from the flags' text; an address that does not parse is an error.
    pub fn parse(addresses: &[String], domain: &str, resolv_conf: PathBuf) -> Result<DnsConfig, std::net::AddrParseError> {
        let addresses = addresses.iter().map(|a| a.trim().parse()).collect::<Result<Vec<IpAddr>, _>>()?;
        Ok(DnsConfig { addresses, domain: domain.to_string(), resolv_conf })
    }
}

/// Serves cluster DNS for this node through `client` until `stop`; then the links and their
/// addresses are removed. Failing to bind is logged and retried, never fatal to the node.
pub fn spawn(client: kube::Client, cfg: DnsConfig, stop: signal::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("dns");
    tokio::spawn(run(client, cfg, stop).instrument(span))
}

async fn run(client: kube::Client, cfg: DnsConfig, mut stop: signal::Receiver<bool>) {
    let zone = match answer::Zone::new(&cfg.domain, TTL, cfg.addresses.clone()) {
        Ok(z) => z,
        Err(e) => {
            tracing::error!(domain = %cfg.domain, error = %e, "the cluster domain is not a DNS name: no cluster DNS");
            return;
        }
    };
    let index = index::Index::new(&cfg.domain);
    let forwarder = forward::Forwarder::new(cfg.resolv_conf.clone(), cfg.addresses.clone()).await;
    let handler = match server::Handler::new(index.clone(), zone, forwarder.clone()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "the DNS handler: no cluster DNS");
            return;
        }
    };
    let watches = tokio::spawn(watch::follow(client, index.clone(), stop.clone()).in_current_span());
    let resolv_conf = tokio::spawn(forwarder.follow(stop.clone()).in_current_span());
    let mut delay = Duration::from_millis(500);
    let served = loop {
        match bind(&cfg.addresses, handler.clone()).await {
            Ok(s) => break Some(s),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "cluster DNS cannot serve yet"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => break None,
            _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(30)),
        }
    };
    if let Some(mut server) = served {
        tracing::info!(addresses = ?cfg.addresses, domain = %cfg.domain, "serving cluster DNS");
        stopped(&mut stop).await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "stopping the DNS server");
        }
    }
    for ip in &cfg.addresses {
        if let Err(e) = link::remove(*ip).await {
            tracing::warn!(%ip, error = %e, "removing the cluster DNS link");
        }
    }
    let _ = watches.await;
    let _ = resolv_conf.await;
    tracing::info!("cluster DNS stopped");
}

/// Resolves once `stop` says true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut signal::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[derive(Debug, thiserror::Error)]
enum BindError {
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Socket(#[from] server::BindError),
}

async fn bind(addresses: &[IpAddr], handler: server::Handler) -> Result<hickory_server::Server<server::Handler>, BindError> {
    for ip in addresses {
        link::ensure(*ip).await?;
    }
    Ok(server::serve(addresses, PORT, handler).await?)
}
