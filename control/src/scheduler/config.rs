//! The scheduler's configuration file: a subset of kubescheduler.config.k8s.io/v1
//! KubeSchedulerConfiguration (profiles with their schedulerName, filter/score/multiPoint
//! plugins enabled and disabled with weights, NodeResourcesFit's scoring strategy,
//! percentageOfNodesToScore), and the profiles built from it over upstream's defaults.

use serde::Deserialize;

use super::framework::{FilterPlugin, Profile, ScorePlugin};
use super::plugins::node_resources_fit::{default_scored_resources, NodeResourcesFit, ShapePoint, Strategy};
use super::plugins::{
    balanced_allocation, image_locality, inter_pod_affinity, node_affinity, node_name, node_ports, node_resources_fit, node_unschedulable, pod_topology_spread,
    taint_toleration, volume_binding,
};

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("decoding the scheduler configuration: {0}")]
    Decode(String),
    #[error("unsupported apiVersion {0:?} (want kubescheduler.config.k8s.io/v1)")]
    ApiVersion(String),
    #[error("{0:?} does not exist as a plugin")]
    UnknownPlugin(String),
    #[error("scoringStrategy.type {0:?} is not one of LeastAllocated, MostAllocated, RequestedToCapacityRatio")]
    UnknownStrategy(String),
    #[error("percentageOfNodesToScore: Invalid value: {0}: not in valid range [0-100]")]
    Percentage(i64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeSchedulerConfiguration {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i64>,
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    /// Where `berth scheduler` finds the apiserver (`berth server` runs its scheduler in
    /// process and ignores it).
    #[serde(default)]
    pub client_connection: ClientConnection,
    /// How `berth scheduler` elects its leader (`berth server` elects on upstream's Lease).
    #[serde(default)]
    pub leader_election: LeaderElection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

/// componentbaseconfig's LeaderElectionConfiguration, as far as a Lease lock uses it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElection {
    #[serde(default)]
    pub leader_elect: Option<bool>,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub resource_namespace: Option<String>,
    /// Go durations ("15s").
    #[serde(default)]
    pub lease_duration: Option<String>,
    #[serde(default)]
    pub renew_deadline: Option<String>,
    #[serde(default)]
    pub retry_period: Option<String>,
}

/// The Lease lock upstream's scheduler elects on.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "kube-scheduler";

impl LeaderElection {
    /// The election on `identity` this section describes (upstream's defaults where silent:
    /// kube-system/kube-scheduler, 15 s / 10 s / 2 s).
    pub fn election(&self, identity: String) -> Result<crate::leader::ElectionConfig, ConfigError> {
        let mut cfg = crate::leader::ElectionConfig::new(
            self.resource_namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(LEASE_NAMESPACE),
            self.resource_name.as_deref().filter(|n| !n.is_empty()).unwrap_or(LEASE_NAME),
            identity,
        );
        for (field, text, slot) in [
            ("leaseDuration", &self.lease_duration, &mut cfg.lease_duration),
            ("renewDeadline", &self.renew_deadline, &mut cfg.renew_deadline),
            ("retryPeriod", &self.retry_period, &mut cfg.retry_period),
        ] {
            let Some(text) = text else { continue };
            let nanos = berth_names::duration::parse_nanos(text).map_err(|e| ConfigError::Decode(format!("leaderElection.{field}: {e}")))?;
            if nanos <= 0 {
                return Err(ConfigError::Decode(format!("leaderElection.{field}: Invalid value: {text:?}: must be greater than zero")));
            }
            *slot = std::time::Duration::from_nanos(nanos as u64);
        }
        if cfg.lease_duration <= cfg.renew_deadline {
            return Err(ConfigError::Decode("leaderElection.leaseDuration: Invalid value: must be greater than renewDeadline".into()));
        }
        Ok(cfg)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    #[serde(default)]
    pub scheduler_name: Option<String>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i64>,
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugins {
    #[serde(default)]
    pub multi_point: PluginSet,
    #[serde(default)]
    pub filter: PluginSet,
    #[serde(default)]
    pub score: PluginSet,
}

#[derive(Debug, Default, Deserialize)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct PluginConfig {
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FitArgs {
    #[serde(default)]
    scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScoringStrategy {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    resources: Vec<PluginRef>,
    #[serde(default)]
    requested_to_capacity_ratio: Option<RatioArgs>,
}

#[derive(Debug, Default, Deserialize)]
struct RatioArgs {
    #[serde(default)]
    shape: Vec<Point>,
}

#[derive(Debug, Default, Deserialize)]
struct Point {
    utilization: i64,
    score: i64,
}

/// Filters in upstream's order.
const FILTERS: [&str; 9] = [
    node_unschedulable::NAME,
    node_name::NAME,
    taint_toleration::NAME,
    node_affinity::NAME,
    node_ports::NAME,
    node_resources_fit::NAME,
    volume_binding::NAME,
    pod_topology_spread::NAME,
    inter_pod_affinity::NAME,
];
/// Scores with upstream's default weights.
const SCORES: [(&str, i64); 7] = [
    (taint_toleration::NAME, 3),
    (node_affinity::NAME, 2),
    (node_resources_fit::NAME, 1),
    (pod_topology_spread::NAME, 2),
    (inter_pod_affinity::NAME, 2),
    (balanced_allocation::NAME, 1),
    (image_locality::NAME, 1),
];

fn filter_plugin(name: &str, fit: &FitSettings) -> Option<Box<dyn FilterPlugin>> {
    Some(match name {
        node_unschedulable::NAME => Box::new(node_unschedulable::NodeUnschedulable),
        node_name::NAME => Box::new(node_name::NodeName),
        taint_toleration::NAME => Box::new(taint_toleration::TaintToleration),
        node_affinity::NAME => Box::new(node_affinity::NodeAffinity),
        node_ports::NAME => Box::new(node_ports::NodePorts),
        node_resources_fit::NAME => Box::new(fit.plugin()),
        inter_pod_affinity::NAME => Box::new(inter_pod_affinity::InterPodAffinity),
        pod_topology_spread::NAME => Box::new(pod_topology_spread::PodTopologySpread),
        volume_binding::NAME => Box::new(volume_binding::VolumeBinding),
        _ => return None,
    })
}

fn score_plugin(name: &str, fit: &FitSettings) -> Option<Box<dyn ScorePlugin>> {
    Some(match name {
        taint_toleration::NAME => Box::new(taint_toleration::TaintToleration),
        node_affinity::NAME => Box::new(node_affinity::NodeAffinity),
        node_resources_fit::NAME => Box::new(fit.plugin()),
        balanced_allocation::NAME => Box::new(balanced_allocation::BalancedAllocation { resources: fit.resources.clone() }),
        image_locality::NAME => Box::new(image_locality::ImageLocality),
        inter_pod_affinity::NAME => Box::new(inter_pod_affinity::InterPodAffinity),
        pod_topology_spread::NAME => Box::new(pod_topology_spread::PodTopologySpread),
        _ => return None,
    })
}

fn known(name: &str) -> bool {
    FILTERS.contains(&name) || SCORES.iter().any(|(n, _)| *n == name)
}

struct FitSettings {
    strategy: Strategy,
    resources: Vec<(String, i64)>,
}

impl FitSettings {
    fn plugin(&self) -> NodeResourcesFit {
        NodeResourcesFit { strategy: self.strategy.clone(), resources: self.resources.clone() }
    }
}

fn fit_settings(cfg: &ProfileConfig) -> Result<FitSettings, ConfigError> {
    let mut s = FitSettings { strategy: Strategy::LeastAllocated, resources: default_scored_resources() };
    let Some(pc) = cfg.plugin_config.iter().find(|p| p.name == node_resources_fit::NAME) else { return Ok(s) };
    let args: FitArgs = serde_json::from_value(pc.args.clone()).map_err(|e| ConfigError::Decode(format!("NodeResourcesFitArgs: {e}")))?;
    let Some(strategy) = args.scoring_strategy else { return Ok(s) };
    if !strategy.resources.is_empty() {
        s.resources = strategy.resources.iter().map(|r| (r.name.clone(), r.weight.unwrap_or(1).max(1))).collect();
    }
    s.strategy = match strategy.kind.as_deref().unwrap_or("LeastAllocated") {
        "LeastAllocated" => Strategy::LeastAllocated,
        "MostAllocated" => Strategy::MostAllocated,
        "RequestedToCapacityRatio" => {
            let shape = strategy.requested_to_capacity_ratio.unwrap_or_default().shape;
            Strategy::RequestedToCapacityRatio(shape.iter().map(|p| ShapePoint { utilization: p.utilization, score: p.score }).collect())
        }
        other => return Err(ConfigError::UnknownStrategy(other.into())),
    };
    Ok(s)
}

fn check_percentage(p: Option<i64>) -> Result<u32, ConfigError> {
    match p {
        None => Ok(0),
        Some(v) if (0..=100).contains(&v) => Ok(v as u32),
        Some(v) => Err(ConfigError::Percentage(v)),
    }
}

fn disabled(sets: [&PluginSet; 2], name: &str) -> bool {
    sets.iter().any(|s| s.disabled.iter().any(|d| d.name == "*" || d.name == name))
}

/// Builds one profile over upstream's defaults.
pub fn build_profile(cfg: &ProfileConfig, global_percentage: u32) -> Result<Profile, ConfigError> {
    let fit = fit_settings(cfg)?;
    let p = &cfg.plugins;
    for r in p
        .multi_point
        .enabled
        .iter()
        .chain(&p.filter.enabled)
        .chain(&p.score.enabled)
        .chain(&p.multi_point.disabled)
        .chain(&p.filter.disabled)
        .chain(&p.score.disabled)
    {
        if r.name != "*" && !known(&r.name) {
            return Err(ConfigError::UnknownPlugin(r.name.clone()));
        }
    }
    let mut filters: Vec<Box<dyn FilterPlugin>> = vec![];
    let mut filter_names: Vec<String> = vec![];
    for name in FILTERS.iter().filter(|n| !disabled([&p.multi_point, &p.filter], n)) {
        filter_names.push(name.to_string());
    }
    for r in p.multi_point.enabled.iter().chain(&p.filter.enabled) {
        if FILTERS.contains(&r.name.as_str()) && !filter_names.contains(&r.name) {
            filter_names.push(r.name.clone());
        }
    }
    for n in &filter_names {
        filters.extend(filter_plugin(n, &fit));
    }
    let mut weights: Vec<(String, i64)> = SCORES.iter().filter(|(n, _)| !disabled([&p.multi_point, &p.score], n)).map(|(n, w)| (n.to_string(), *w)).collect();
    for r in p.multi_point.enabled.iter().chain(&p.score.enabled) {
        let Some(default) = SCORES.iter().find(|(n, _)| *n == r.name).map(|(_, w)| *w) else { continue };
        let w = r.weight.filter(|w| *w > 0).unwrap_or(default);
        match weights.iter_mut().find(|(n, _)| *n == r.name) {
            Some(e) => e.1 = w,
            None => weights.push((r.name.clone(), w)),
        }
    }
    let scores = weights.iter().filter_map(|(n, w)| score_plugin(n, &fit).map(|p| (p, *w))).collect();
    let pct = match cfg.percentage_of_nodes_to_score {
        Some(_) => check_percentage(cfg.percentage_of_nodes_to_score)?,
        None => global_percentage,
    };
    Ok(Profile {
        scheduler_name: cfg.scheduler_name.clone().unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into()),
        filters,
        scores,
        percentage_of_nodes_to_score: pct,
    })
}

/// The profiles of a configuration (one default-scheduler profile when it lists none).
pub fn profiles(cfg: &KubeSchedulerConfiguration) -> Result<Vec<Profile>, ConfigError> {
    if let Some(v) = cfg.api_version.as_deref() {
        if v != "kubescheduler.config.k8s.io/v1" {
            return Err(ConfigError::ApiVersion(v.into()));
        }
    }
    let global = check_percentage(cfg.percentage_of_nodes_to_score)?;
    if cfg.profiles.is_empty() {
        return Ok(vec![build_profile(&ProfileConfig::default(), global)?]);
    }
    cfg.profiles.iter().map(|p| build_profile(p, global)).collect()
}

pub fn parse(text: &str) -> Result<KubeSchedulerConfiguration, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| ConfigError::Decode(e.to_string()))
}

/// The configuration in the file at `path`.
pub fn read(path: &std::path::Path) -> Result<KubeSchedulerConfiguration, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let p = profiles(&KubeSchedulerConfiguration::default()).expect("profiles");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].scheduler_name, "default-scheduler");
        let filters: Vec<&str> = p[0].filters.iter().map(|f| f.name()).collect();
        assert_eq!(filters, FILTERS);
        let scores: Vec<(&str, i64)> = p[0].scores.iter().map(|(s, w)| (s.name(), *w)).collect();
        assert_eq!(scores, SCORES);
    }

    #[test]
    fn profiles_weights_and_strategy_from_yaml() {
        let yaml = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: packer
  plugins:
    score:
      disabled:
      - name: "*"
      enabled:
      - name: NodeResourcesFit
        weight: 5
    filter:
      disabled:
      - name: NodePorts
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 2
"#;
        let p = profiles(&parse(yaml).expect("parse")).expect("profiles");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].percentage_of_nodes_to_score, 30);
        assert_eq!(p[1].scheduler_name, "packer");
        let scores: Vec<(&str, i64)> = p[1].scores.iter().map(|(s, w)| (s.name(), *w)).collect();
        assert_eq!(scores, vec![("NodeResourcesFit", 5)]);
        assert!(!p[1].filters.iter().any(|f| f.name() == "NodePorts"));
        let e = parse(yaml).expect("parse").leader_election.election("me".into()).expect("election");
        assert_eq!((e.namespace.as_str(), e.name.as_str(), e.lease_duration.as_secs()), ("kube-system", "kube-scheduler", 15));
        let bad = parse("profiles:\n- plugins:\n    score:\n      enabled:\n      - name: Nope\n").expect("parse");
        assert!(matches!(profiles(&bad), Err(ConfigError::UnknownPlugin(n)) if n == "Nope"));
    }

    #[test]
    fn leader_election_and_client_connection_from_yaml() {
        let yaml = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: /etc/berth/scheduler.kubeconfig
leaderElection:
  leaderElect: true
  resourceName: second-scheduler
  resourceNamespace: team-a
  leaseDuration: 30s
  renewDeadline: 20s
  retryPeriod: 500ms
"#;
        let cfg = parse(yaml).expect("parse");
        assert_eq!(cfg.client_connection.kubeconfig.as_deref(), Some("/etc/berth/scheduler.kubeconfig"));
        assert_eq!(cfg.leader_election.leader_elect, Some(true));
        let e = cfg.leader_election.election("me".into()).expect("election");
        assert_eq!((e.namespace.as_str(), e.name.as_str(), e.identity.as_str()), ("team-a", "second-scheduler", "me"));
        assert_eq!((e.lease_duration.as_millis(), e.renew_deadline.as_millis(), e.retry_period.as_millis()), (30_000, 20_000, 500));
        let short = parse("leaderElection:\n  leaseDuration: 5s\n  renewDeadline: 10s\n").expect("parse");
        assert!(matches!(short.leader_election.election("me".into()), Err(ConfigError::Decode(m)) if m.contains("greater than renewDeadline")));
        let bad = parse("leaderElection:\n  retryPeriod: soon\n").expect("parse");
        assert!(
            matches!(bad.leader_election.election("me".into()), Err(ConfigError::Decode(m)) if m.contains("retryPeriod") && m.contains("invalid duration"))
        );
    }
}
