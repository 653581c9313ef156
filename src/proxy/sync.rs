//! The proxy's loop: informers on Services, EndpointSlices, Nodes and ServiceCIDRs mark what
//! changed; a sync runs once changes have settled for a moment (and no sooner than
//! `min_sync_period` after the previous one), recomputes the fragments of the Services that
//! changed and writes only their differences in one transaction. The first sync, one every
//! `sync_period` and one after any failed transaction are full: they converge the whole table
//! with what the kernel holds (leftovers of Services deleted meanwhile go). On stop the table
//! stays, so established connections and the rules survive a restart of the agent.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::ResourceExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use berth_control::informer::{key_of, Change, Informer, ObjectKey};

use super::cluster;
use super::conntrack;
use super::health::{self, BindAddresses, ProxyHealth, ServiceHealthServers};
use super::model::{ServiceModel, Skip, SERVICE_NAME_LABEL};
use super::nft;
use super::rules::{self, Context};
use super::ruleset::{Family, Fragment, Owner};
use super::table::TableState;
use super::{NodePortAddresses, ProxyConfig};

/// How long a change waits for more before a sync starts.
const COALESCE: Duration = Duration::from_millis(5);
/// The longest wait for Nodes and ServiceCIDRs before the first sync goes ahead without them.
const SECONDARY_SYNC_WAIT: Duration = Duration::from_secs(10);
/// Changed Services named one by one in a sync's log line (beyond it, a count).
const LOGGED_CHANGES: usize = 20;

/// What changed since the last sync.
#[derive(Default)]
struct Pending {
    services: BTreeSet<ObjectKey>,
    /// Nodes or ServiceCIDRs (the skeleton's settings).
    base: bool,
    full: bool,
}

struct Dirty {
    pending: Mutex<Pending>,
    notify: Notify,
    /// Told of every change waiting for a sync.
    health: Arc<ProxyHealth>,
}

impl Dirty {
    fn new(health: Arc<ProxyHealth>) -> Dirty {
        Dirty { pending: Mutex::default(), notify: Notify::new(), health }
    }

    fn mark(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.health.queued();
        self.notify.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Runs the proxy until `stop` turns true. Ends early (with an error in the log) when `nft` is
/// missing: the node keeps running pods, but Services are not reachable from it.
pub async fn run(client: kube::Client, cfg: ProxyConfig, stop: watch::Receiver<bool>) {
    let span = tracing::info_span!("proxy", table = %cfg.table);
    run_inner(client, cfg, stop).instrument(span).await
}

async fn run_inner(client: kube::Client, cfg: ProxyConfig, mut stop: watch::Receiver<bool>) {
    match nft::version().await {
        Ok(v) => tracing::debug!(version = %v, "nft found"),
        Err(e) => {
            tracing::error!(error = %e, "the service proxy needs the nft binary (package nftables): Services will not be reachable from this node");
            return;
        }
    }
    bridge_netfilter().await;
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            token.cancel();
        });
    }
    // upstream's health timeout: two sync periods
    let health = ProxyHealth::new(cfg.sync_period.saturating_mul(2));
    if let Some(addr) = cfg.healthz_bind_address {
        tokio::spawn(health::serve_healthz(addr, health.clone(), token.clone()).in_current_span());
    }
    let dirty = Arc::new(Dirty::new(health.clone()));
    let services: Arc<Informer<Service>> = Informer::new();
    let slices: Arc<Informer<EndpointSlice>> = Informer::new();
    let nodes: Arc<Informer<Node>> = Informer::new();
    let cidrs: Arc<Informer<ServiceCIDR>> = Informer::new();
    {
        let d = dirty.clone();
        services.on_change(move |c| {
            let key = key_of(c.object().as_ref());
            d.mark(|p| {
                p.services.insert(key);
            })
        });
        let d = dirty.clone();
        slices.on_change(move |c| {
            let owner = |s: &EndpointSlice| s.labels().get(SERVICE_NAME_LABEL).map(|n| (s.namespace().unwrap_or_default(), n.clone()));
            let keys: Vec<ObjectKey> = match c {
                Change::Added(s) | Change::Deleted(s) => owner(s).into_iter().collect(),
                Change::Updated { old, new } => owner(old).into_iter().chain(owner(new)).collect(),
            };
            if !keys.is_empty() {
                d.mark(|p| p.services.extend(keys));
            }
        });
        let d = dirty.clone();
        let (own_name, own_health) = (cfg.node_name.clone(), health.clone());
        nodes.on_change(move |c| {
            match c {
                Change::Added(n) | Change::Updated { new: n, .. } if n.name_any() == own_name => own_health.node_changed(Some(n)),
                Change::Deleted(n) if n.name_any() == own_name => own_health.node_changed(None),
                _ => {}
            }
            // heartbeats change nothing the proxy uses: only pod CIDRs and addresses count
            let relevant = match c {
                Change::Updated { old, new } => {
                    old.spec.as_ref().map(|s| (&s.pod_cidr, &s.pod_cidrs)) != new.spec.as_ref().map(|s| (&s.pod_cidr, &s.pod_cidrs))
                        || cluster::node_addresses(old) != cluster::node_addresses(new)
                }
                _ => true,
            };
            if relevant {
                d.mark(|p| p.base = true);
            }
        });
        let d = dirty.clone();
        cidrs.on_change(move |_| d.mark(|p| p.base = true));
    }
    tokio::spawn(services.clone().run(kube::Api::all(client.clone()), token.clone()));
    tokio::spawn(slices.clone().run(kube::Api::all(client.clone()), token.clone()));
    tokio::spawn(nodes.clone().run(kube::Api::all(client.clone()), token.clone()));
    tokio::spawn(cidrs.clone().run(kube::Api::all(client.clone()), token.clone()));
    tokio::select! {
        _ = token.cancelled() => return,
        _ = async { tokio::join!(services.synced(), slices.synced()) } => {}
    }
    let secondary = async { tokio::join!(nodes.synced(), cidrs.synced()) };
    if tokio::time::timeout(SECONDARY_SYNC_WAIT, secondary).await.is_err() {
        tracing::warn!("Nodes or ServiceCIDRs not listed yet: the first sync goes ahead without them");
    }
    let mut proxy = Proxy::new(cfg, services, slices, nodes, cidrs, health);
    proxy.serve(dirty, token).await;
    tracing::info!("service proxy stopped; its rules stay in place");
}

/// The addresses of this host's interfaces.
fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return vec![] };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| if let Some(v4) = a.as_sockaddr_in() { Some(IpAddr::V4(v4.ip())) } else { a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The node's bridges hand frames to iptables/nftables (br_netfilter), so the reply of a pod to
/// another pod on the same bridge through a Service is translated back, as kube-proxy needs.
async fn bridge_netfilter() {
    let work = tokio::task::spawn_blocking(|| {
        for (file, needed) in [("/proc/sys/net/bridge/bridge-nf-call-iptables", true), ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", false)] {
            let path = std::path::Path::new(file);
            if !path.exists() {
                if needed {
                    tracing::warn!(
                        "br_netfilter is not loaded (no {file}): a pod reaching a Service whose endpoint is on its own bridge gets no reply; run `modprobe br_netfilter`"
                    );
                }
                continue;
            }
            if std::fs::read_to_string(path).map(|v| v.trim() == "1").unwrap_or(false) {
                continue;
            }
            match std::fs::write(path, "1") {
                Ok(()) => tracing::info!(file, "set to 1"),
                Err(e) => tracing::warn!(file, error = %e, "cannot set to 1: replies through Services between pods of one bridge may fail"),
            }
        }
    });
    let _ = work.await;
}

struct Proxy {
    cfg: ProxyConfig,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    nodes: Arc<Informer<Node>>,
    cidrs: Arc<Informer<ServiceCIDR>>,
    tables: HashMap<Family, TableState>,
    /// The context each family's Service fragments were made with.
    contexts: HashMap<Family, Context>,
    /// The next full sync makes the tables anew (after a full sync failed).
    recreate: bool,
    health: Arc<ProxyHealth>,
    /// The health check node ports' servers, and where they listen (settled at full syncs).
    health_checks: ServiceHealthServers,
    health_bind: BindAddresses,
}

/// The outcome of one sync, for the log.
struct Synced {
    full: bool,
    changed: Vec<String>,
}

impl Proxy {
    fn new(
        cfg: ProxyConfig,
        services: Arc<Informer<Service>>,
        slices: Arc<Informer<EndpointSlice>>,
        nodes: Arc<Informer<Node>>,
        cidrs: Arc<Informer<ServiceCIDR>>,
        health: Arc<ProxyHealth>,
    ) -> Proxy {
        let tables = Family::ALL.iter().map(|f| (*f, TableState::new(*f, &cfg.table))).collect();
        let health_checks = ServiceHealthServers::new(health.clone());
        Proxy {
            cfg,
            services,
            slices,
            nodes,
            cidrs,
            tables,
            contexts: HashMap::new(),
            recreate: false,
            health,
            health_checks,
            health_bind: BindAddresses::Ips(vec![]),
        }
    }

    async fn serve(&mut self, dirty: Arc<Dirty>, token: CancellationToken) {
        dirty.mark(|p| p.full = true);
        // as upstream: healthy from the start, in case no sync ever succeeds
        self.health.updated();
        let mut last_start = Instant::now() - self.cfg.min_sync_period;
        let mut last_full = Instant::now();
        let mut failures = 0u32;
        loop {
            let next_full = tokio::time::Instant::from_std(last_full + self.cfg.sync_period);
            tokio::select! {
                _ = token.cancelled() => return,
                _ = dirty.notify.notified() => {}
                _ = tokio::time::sleep_until(next_full) => dirty.mark(|p| p.full = true),
            }
            let settle = (Instant::now() + COALESCE).max(last_start + self.cfg.min_sync_period);
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(settle)) => {}
            }
            let pending = dirty.take();
            last_start = Instant::now();
            let full = pending.full;
            let result = if full { self.full_sync().await } else { self.incremental(pending).await };
            let ms = last_start.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(s) => {
                    failures = 0;
                    self.health.updated();
                    if s.full {
                        last_full = Instant::now();
                        let (chains, rules) = self.tables.get(&Family::V4).map(TableState::counts).unwrap_or_default();
                        tracing::info!(services = self.services.list().len(), chains, rules, ms, "programmed the full table");
                    } else if !s.changed.is_empty() {
                        let changes = if s.changed.len() <= LOGGED_CHANGES { s.changed.join(" ") } else { format!("{} services", s.changed.len()) };
                        tracing::debug!(%changes, ms, "programmed");
                    }
                }
                Err(e) if !full => {
                    tracing::warn!(error = %e, "an incremental sync failed: writing the whole table");
                    dirty.mark(|p| p.full = true);
                }
                Err(e) => {
                    failures += 1;
                    self.recreate = true;
                    let delay = Duration::from_secs(1 << failures.min(5));
                    tracing::error!(error = %e, retry_in_s = delay.as_secs(), "writing the service proxy's table failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(delay) => dirty.mark(|p| p.full = true),
                    }
                }
            }
        }
    }

    /// Whether the table of family `f` is wanted: IPv4 always, IPv6 in clusters with an IPv6
    /// service range.
    fn wanted(&self, f: Family) -> bool {
        f == Family::V4 || self.cidrs.list().iter().flat_map(|c| c.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default()).any(|c| c.contains(':'))
    }

    fn base_and_context(&self, f: Family) -> (Fragment, Context) {
        let nodes = self.nodes.list();
        let own = self.nodes.get("", &self.cfg.node_name);
        let cidrs = self.cidrs.list();
        let base = cluster::base(
            f,
            nodes.iter().map(|n| n.as_ref()),
            own.as_deref(),
            cidrs.iter().map(|c| c.as_ref()),
            &self.cfg.cluster_cidrs,
            &self.cfg.nodeport_addresses,
        );
        let node_ips = own.as_deref().map(cluster::node_addresses).unwrap_or_default().into_iter().filter(|ip| f.has(ip)).collect();
        let ctx = Context { masquerade_off_cluster: !base.pod_cidrs.is_empty(), skip_cluster_ips: self.cfg.skip_cluster_ips.clone(), node_ips };
        (rules::skeleton(f, &base), ctx)
    }

    /// The model of one Service (None: gone, or not proxied) and its versions for the log.
    fn model(&self, key: &ObjectKey) -> (Option<ServiceModel>, String) {
        let (ns, name) = key;
        let Some(svc) = self.services.get(ns, name) else { return (None, format!("{ns}/{name}@deleted")) };
        let slices: Vec<Arc<EndpointSlice>> =
            self.slices.list_namespace(ns).into_iter().filter(|s| s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name.as_str())).collect();
        let versions = std::iter::once(svc.resource_version().unwrap_or_default())
            .chain(slices.iter().map(|s| s.resource_version().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let label = format!("{ns}/{name}@{versions}");
        match ServiceModel::from_api(&svc, slices.iter().map(|s| s.as_ref()), &self.cfg.node_name) {
            Ok(m) => (Some(m), label),
            Err(Skip::NotProxied) => (None, label),
            Err(e @ Skip::BadName(_)) => {
                tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "not proxied");
                (None, label)
            }
        }
    }

    async fn incremental(&mut self, pending: Pending) -> Result<Synced, nft::NftError> {
        let models: Vec<(ObjectKey, Option<ServiceModel>, String)> = pending
            .services
            .iter()
            .map(|k| {
                let (m, label) = self.model(k);
                (k.clone(), m, label)
            })
            .collect();
        let mut plans = vec![];
        let mut text = String::new();
        for f in Family::ALL {
            if !self.wanted(f) {
                if self.tables.get(&f).is_some_and(|t| t.counts().0 > 0) {
                    return self.full_sync().await;
                }
                continue;
            }
            let mut changes = vec![];
            if pending.base || !self.contexts.contains_key(&f) {
                let (skeleton, ctx) = self.base_and_context(f);
                changes.push((Owner::Base, Some(skeleton)));
                if self.contexts.get(&f) != Some(&ctx) {
                    // every Service depends on the context: all of them again
                    return self.full_sync().await;
                }
            }
            let ctx = self.contexts.get(&f).cloned().unwrap_or_default();
            for (key, model, _) in &models {
                let owner = Owner::Service { namespace: key.0.clone(), name: key.1.clone() };
                changes.push((owner, model.as_ref().map(|m| rules::service(f, m, &ctx))));
            }
            let Some(table) = self.tables.get(&f) else { continue };
            let plan = table.plan(changes);
            for (key, owners) in &plan.conflicts {
                tracing::debug!(element = %format!("{} {}", key.0, key.1), owners = ?owners.iter().map(|o| o.to_string()).collect::<Vec<_>>(), "claimed by more than one Service: the first one's");
            }
            text.push_str(&plan.text);
            plans.push((f, plan));
        }
        let changed = if text.is_empty() { vec![] } else { models.iter().map(|(_, _, label)| label.clone()).collect() };
        if !text.is_empty() {
            nft::apply(&text).await?;
            for (f, plan) in plans {
                if let Some(t) = self.tables.get_mut(&f) {
                    t.commit(plan);
                }
            }
        }
        let models: Vec<(ObjectKey, Option<ServiceModel>)> = models.into_iter().map(|(k, m, _)| (k, m)).collect();
        self.after_sync(models, false).await;
        Ok(Synced { full: false, changed })
    }

    async fn full_sync(&mut self) -> Result<Synced, nft::NftError> {
        let keys: Vec<ObjectKey> = self.services.list().iter().map(|s| key_of(s.as_ref())).collect();
        // the slices once, by Service
        let mut by_service: HashMap<ObjectKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
        for s in self.slices.list() {
            if let Some(n) = s.labels().get(SERVICE_NAME_LABEL) {
                by_service.entry((s.namespace().unwrap_or_default(), n.clone())).or_default().push(s.clone());
            }
        }
        let models: Vec<ServiceModel> = keys
            .iter()
            .filter_map(|(ns, name)| {
                let svc = self.services.get(ns, name)?;
                let slices = by_service.get(&(ns.clone(), name.clone())).map(Vec::as_slice).unwrap_or_default();
                match ServiceModel::from_api(&svc, slices.iter().map(|s| s.as_ref()), &self.cfg.node_name) {
                    Ok(m) => Some(m),
                    Err(Skip::NotProxied) => None,
                    Err(e) => {
                        tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "not proxied");
                        None
                    }
                }
            })
            .collect();
        let mut text = String::new();
        let mut plans = vec![];
        let mut deleted = vec![];
        let mut contexts = HashMap::new();
        for f in Family::ALL {
            let existing = nft::existing(f, &self.cfg.table).await?;
            if !self.wanted(f) {
                if existing.is_some() {
                    text.push_str(&format!("delete table {} {}\n", f.nft(), self.cfg.table));
                    deleted.push(f);
                }
                continue;
            }
            let (skeleton, ctx) = self.base_and_context(f);
            let mut desired: HashMap<Owner, Fragment> = HashMap::new();
            desired.insert(Owner::Base, skeleton);
            for m in &models {
                let frag = rules::service(f, m, &ctx);
                if frag != Fragment::default() {
                    desired.insert(Owner::Service { namespace: m.namespace.clone(), name: m.name.clone() }, frag);
                }
            }
            let Some(table) = self.tables.get(&f) else { continue };
            let existing = if self.recreate { None } else { existing };
            let plan = table.full(desired, existing.as_ref());
            text.push_str(&plan.text);
            plans.push((f, plan));
            contexts.insert(f, ctx);
        }
        nft::apply(&text).await?;
        for (f, plan) in plans {
            if let Some(t) = self.tables.get_mut(&f) {
                t.commit_full(plan);
            }
        }
        for f in deleted {
            if let Some(t) = self.tables.get_mut(&f) {
                t.clear();
            }
        }
        self.contexts = contexts;
        self.recreate = false;
        self.health_bind = self.health_bind_addresses().await;
        let models = models.into_iter().map(|m| ((m.namespace.clone(), m.name.clone()), Some(m))).collect();
        self.after_sync(models, true).await;
        Ok(Synced { full: true, changed: vec![] })
    }

    /// What follows a sync that wrote the rules of `models` (every Service with `all`): the
    /// health check servers, and the stale UDP conntrack entries of their Services.
    async fn after_sync(&mut self, models: Vec<(ObjectKey, Option<ServiceModel>)>, all: bool) {
        let wants = models.iter().map(|(k, m)| (k.clone(), m.as_ref().and_then(|m| m.health_check_node_port.map(|p| (p, m.local_ready_endpoints())))));
        self.health_checks.sync(self.health_bind.clone(), wants.collect(), all).await;
        let families: Vec<Family> = Family::ALL.into_iter().filter(|f| self.wanted(*f)).collect();
        let skip = self.cfg.skip_cluster_ips.clone();
        let work = tokio::task::spawn_blocking(move || {
            for f in families {
                let udp = conntrack::udp_services(f, models.iter().filter_map(|(_, m)| m.as_ref()), &skip);
                match conntrack::clear_stale(f, &udp) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(family = f.nft(), deleted = n, "stale UDP conntrack entries"),
                    Err(e) => tracing::warn!(family = f.nft(), error = %e, "cannot clear stale UDP conntrack entries"),
                }
            }
        });
        let _ = work.await;
    }

    /// Where health check node ports listen: the node's addresses (`primary`), or the local
    /// addresses in the --nodeport-addresses CIDRs (all of them for 0.0.0.0/0 or ::/0).
    async fn health_bind_addresses(&self) -> BindAddresses {
        match &self.cfg.nodeport_addresses {
            NodePortAddresses::Primary => {
                BindAddresses::Ips(self.nodes.get("", &self.cfg.node_name).as_deref().map(cluster::node_addresses).unwrap_or_default())
            }
            NodePortAddresses::Cidrs(cidrs) => {
                let cidrs: Vec<berth_apiserver::services::cidr::Cidr> =
                    cidrs.iter().filter_map(|c| berth_apiserver::services::cidr::Cidr::parse_network(c).ok()).collect();
                if cidrs.iter().any(|c| c.prefix() == 0) {
                    return BindAddresses::Any;
                }
                let local = tokio::task::spawn_blocking(local_addresses).await.unwrap_or_default();
                BindAddresses::Ips(local.into_iter().filter(|ip| cidrs.iter().any(|c| c.contains(ip))).collect())
            }
        }
    }
}
