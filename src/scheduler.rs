//! The scheduler as `berth server` runs it in process and as `berth scheduler` runs it on its
//! own against any apiserver, as kube-scheduler does: from a kubeconfig, with a
//! KubeSchedulerConfiguration's profiles, under leader election on a Lease (upstream's
//! kube-system/kube-scheduler unless told otherwise), until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_control::leader::{ElectionConfig, Elector};
use berth_control::scheduler::config::{self, KubeSchedulerConfiguration};
use berth_control::scheduler::framework::Profile;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Clone)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the apiserver with (default: the configuration's
    /// clientConnection.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1): profiles, plugin weights,
    /// percentageOfNodesToScore, clientConnection.kubeconfig, leaderElection.
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Elect a leader on a Lease before scheduling (several schedulers of one name run one).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: Option<bool>,
    /// The Lease's name (default kube-scheduler).
    #[arg(long)]
    leader_elect_resource_name: Option<String>,
    /// The Lease's namespace (default kube-system).
    #[arg(long)]
    leader_elect_resource_namespace: Option<String>,
}

/// The profiles of a KubeSchedulerConfiguration (upstream's default profile without one).
pub fn profiles(cfg: &KubeSchedulerConfiguration) -> Result<Vec<Arc<Profile>>> {
    Ok(config::profiles(cfg)?.into_iter().map(Arc::new).collect())
}

/// This process's name in the Lease: host and a random suffix, as upstream's.
fn identity() -> String {
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_else(|_| "berth".into());
    format!("{host}_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Runs the scheduler under leader election on `election` (when given; else at once) until
/// `stop`.
pub fn spawn(client: kube::Client, profiles: Vec<Arc<Profile>>, election: Option<ElectionConfig>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    match election {
        Some(cfg) => {
            let identity = cfg.identity.clone();
            let elector = Elector::new(client.clone(), cfg);
            tokio::spawn(elector.run(stop, move |token| berth_control::scheduler::run(client.clone(), profiles.clone(), identity.clone(), token)))
        }
        None => tokio::spawn(berth_control::scheduler::run(client, profiles, identity(), stop)),
    }
}

/// The scheduler inside `berth server`: the in-process API as user system:kube-scheduler, on
/// upstream's Lease.
pub fn start_in_server(api: Arc<berth_apiserver::Api>, profiles: Vec<Arc<Profile>>, stop: CancellationToken) {
    let user = berth_apiserver::User::new("system:kube-scheduler", &["system:authenticated"]);
    let client = kube::Client::new(berth_apiserver::in_process(api, user), "default");
    let election = ElectionConfig::new(config::LEASE_NAMESPACE, config::LEASE_NAME, identity());
    spawn(client, profiles, Some(election), stop);
}

/// `berth scheduler`: until `shutdown` resolves.
pub async fn run(args: SchedulerArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let cfg = match &args.scheduler_config {
        Some(path) => config::read(path).with_context(|| format!("--scheduler-config {}", path.display()))?,
        None => KubeSchedulerConfiguration::default(),
    };
    let profiles = profiles(&cfg)?;
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| cfg.client_connection.kubeconfig.as_deref().filter(|k| !k.is_empty()).map(PathBuf::from))
        .context("no kubeconfig: give --kubeconfig (or clientConnection.kubeconfig in --scheduler-config)")?;
    let client = client_from(&kubeconfig).await.with_context(|| format!("kubeconfig {}", kubeconfig.display()))?;
    let mut lease = cfg.leader_election;
    if args.leader_elect_resource_name.is_some() {
        lease.resource_name = args.leader_elect_resource_name.clone();
    }
    if args.leader_elect_resource_namespace.is_some() {
        lease.resource_namespace = args.leader_elect_resource_namespace.clone();
    }
    let election = match args.leader_elect.or(lease.leader_elect).unwrap_or(true) {
        true => Some(lease.election(identity())?),
        false => None,
    };
    let names: Vec<&str> = profiles.iter().map(|p| p.scheduler_name.as_str()).collect();
    match &election {
        Some(e) => tracing::info!(profiles = ?names, lease = %format!("{}/{}", e.namespace, e.name), identity = %e.identity, "scheduler waiting for its Lease"),
        None => tracing::info!(profiles = ?names, "scheduler running without leader election"),
    }
    let stop = CancellationToken::new();
    let task = spawn(client, profiles, election, stop.clone());
    shutdown.await;
    stop.cancel();
    let _ = task.await;
    Ok(())
}

/// A client from a kubeconfig file (its current context).
async fn client_from(path: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}
