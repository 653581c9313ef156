//! The node port repair loop (upstream's portallocator repair controller): the stored bitmap is
//! rebuilt from the Services. A port a Service uses but the bitmap lacks is set again
//! (PortNotAllocated), one used twice or outside the range is reported (PortAlreadyAllocated,
//! PortOutOfRange), and a port the bitmap has but no Service uses is freed only after it was
//! seen unused on three passes in a row: a Service create holds its ports before the Service is
//! stored. The bitmap is read first and written back only if unchanged (compare-and-swap on its
//! revision); a pass that loses the race is simply run again later.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::book;
use super::events;
use crate::api::Api;
use crate::meta;

const COMPONENT: &str = "portallocator-repair-controller";
const PERIOD: Duration = Duration::from_secs(10);
/// Passes a port must be seen unused before it is freed (upstream's numRepairsBeforeLeakCleanup).
const LEAK_PASSES: u32 = 3;

pub fn spawn(api: &Arc<Api>) {
    let api = Arc::downgrade(api);
    tokio::spawn(
        async move {
            let mut leaks = HashMap::new();
            loop {
                let Some(api) = api.upgrade() else { return };
                if let Err(e) = pass(&api, &mut leaks).await {
                    tracing::warn!(error = %e, "node port repair");
                }
                drop(api);
                tokio::time::sleep(PERIOD).await;
            }
        }
        .instrument(tracing::info_span!("repair_node_ports")),
    );
}

/// The node ports of a Service (health check port included).
fn node_ports(svc: &Value) -> BTreeSet<i64> {
    let mut out: BTreeSet<i64> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .filter(|p| *p != 0)
        .collect();
    out.extend(svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).filter(|p| *p != 0));
    out
}

/// One repair pass; `leaks` counts, per port, the passes it was seen unused.
pub async fn pass(api: &Api, leaks: &mut HashMap<i32, u32>) -> Result<(), String> {
    let ports = &api.services.ports;
    let (stored, revision) = ports.load().await.map_err(|e| e.to_string())?;
    // read after the bitmap: a Service deleted before it was read has released its ports
    let services = book::list_stored(api, "", "services").await?;
    let mut rebuilt = super::ports::Bitmap::empty(ports.range);
    let mut owner: BTreeMap<i32, String> = BTreeMap::new();
    let mut reports = vec![];
    for svc in &services {
        let who = format!("{}/{}", meta::get(svc, "namespace").unwrap_or(""), meta::name(svc));
        for p in node_ports(svc) {
            let port = p as i32;
            if !ports.range.contains(port) {
                reports.push((svc, "PortOutOfRange", format!("Port {port} is not within the port range {}; please recreate service", ports.range)));
                continue;
            }
            if let Some(first) = owner.get(&port) {
                if *first != who {
                    reports.push((svc, "PortAlreadyAllocated", format!("Port {port} was assigned to multiple services; please recreate service")));
                }
                continue;
            }
            owner.insert(port, who.clone());
            if !stored.has(port) {
                reports.push((svc, "PortNotAllocated", format!("Port {port} is not allocated; repairing")));
            }
            rebuilt.set(port);
        }
    }
    let mut still_leaking = HashMap::new();
    for port in stored.ports() {
        if rebuilt.has(port) {
            continue;
        }
        let seen = leaks.get(&port).copied().unwrap_or(0) + 1;
        if seen < LEAK_PASSES {
            rebuilt.set(port);
            still_leaking.insert(port, seen);
        } else {
            tracing::info!(port, "freeing a node port no Service uses");
        }
    }
    // an allocation that came in between makes the write fail: the next pass sees it
    if (rebuilt != stored || revision.is_none()) && !ports.store_at(&rebuilt, revision).await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    *leaks = still_leaking;
    for (svc, reason, message) in reports {
        events::warn(api, COMPONENT, svc, reason, &message).await;
    }
    Ok(())
}
