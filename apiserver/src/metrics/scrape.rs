//! The scraper: every resolution, every node's /metrics/resource at once (through the kubelet
//! address and client the connect subresources use), each within metrics-server's timeout
//! (its kubelet request timeout of 10 s, at most 90 % of the resolution); the answers merged
//! into one round for [`super::points`]. A node that does not answer is missing from the
//! round (and so are its pods, until two more scrapes), as with metrics-server.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::decode::{self, Batch};
use super::points::Round;
use super::ResourceMetrics;
use crate::api::Api;
use crate::rest::ListOptions;

/// metrics-server's default kubelet request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn spawn(api: &Arc<Api>, metrics: Arc<ResourceMetrics>) {
    let weak = Arc::downgrade(api);
    let resolution = metrics.resolution;
    let timeout = REQUEST_TIMEOUT.min(resolution.mul_f64(0.9));
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(resolution);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(api) = weak.upgrade() else { return };
                let started = std::time::Instant::now();
                let round = scrape_round(&api, timeout).await;
                let (nodes, pods) = (round.nodes.len(), round.pods.len());
                let mut points = metrics.points.write().unwrap_or_else(|e| e.into_inner());
                points.store(round);
                tracing::debug!(nodes, pods, containers = points.containers(), took = ?started.elapsed(), "scraped resource metrics");
            }
        }
        .instrument(tracing::debug_span!("resource-metrics")),
    );
}

/// One scrape of every node.
async fn scrape_round(api: &Arc<Api>, timeout: Duration) -> Round {
    let mut round = Round::default();
    let nodes = match api.resource("", "nodes") {
        Ok(res) => {
            let opts = ListOptions { resource_version: Some("0".into()), ..Default::default() };
            match api.list(&res, None, &opts).await {
                Ok((items, _)) => items,
                Err(e) => {
                    tracing::warn!(error = %e, "listing nodes to scrape");
                    return round;
                }
            }
        }
        Err(_) => return round,
    };
    let scrapes = nodes.iter().map(|node| {
        let name = crate::meta::name(node).to_string();
        async move {
            let batch = match tokio::time::timeout(timeout, scrape_node(api, &name, node)).await {
                Ok(Ok(b)) => Some(b),
                Ok(Err(e)) => {
                    tracing::debug!(node = %name, error = %e, "failed to scrape node");
                    None
                }
                Err(_) => {
                    tracing::debug!(node = %name, ?timeout, "failed to scrape node: timeout to access kubelet");
                    None
                }
            };
            (name, batch)
        }
    });
    for (name, batch) in futures_util::future::join_all(scrapes).await {
        let Some(batch) = batch else { continue };
        if let Some(point) = batch.node {
            round.nodes.insert(name, point);
        }
        for (pod, containers) in batch.pods {
            round.pods.entry(pod).or_insert(containers);
        }
    }
    round
}

/// The batch of one node.
async fn scrape_node(api: &Api, name: &str, node: &Value) -> Result<Batch, String> {
    let (host, port) = crate::rest::connect::kubelet_endpoint(name, node).map_err(|e| e.message)?;
    let scraped = jiff::Timestamp::now().as_nanosecond() as i64;
    let (status, body) = crate::rest::connect::kubelet_get(api, &host, port, "/metrics/resource").await?;
    if !status.is_success() {
        return Err(format!("request failed, status: {status:?}"));
    }
    let text = std::str::from_utf8(&body).map_err(|e| e.to_string())?;
    decode::decode(text, scraped).map_err(|e| e.to_string())
}
