//! ServiceAccount tokens for the serviceAccountToken projections of this node's pods (the
//! `kube-api-access-*` volume admission adds to every pod). Each is asked for through the
//! TokenRequest API (`serviceaccounts/NAME/token`) bound to its pod, so it dies with the pod,
//! and asked for again once 80 % of its lifetime or 24 hours have passed, as the kubelet's token
//! manager does. The tokens ride along with the pods the node follows ([`ClusterPods`]), so the
//! pod workers write and rewrite the token files as they do ConfigMap volumes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ClusterPods;
use crate::node::volumes::{token_key, TokenKey};

/// How often tokens due for renewal are looked for.
const CHECK: Duration = Duration::from_secs(5);
/// Token requests in flight at once.
const CONCURRENT_REQUESTS: usize = 16;
/// A token request's pod and key, and the token with when to renew it (or why not).
type Answer = (Pod, TokenKey, Result<(String, Duration), String>);
/// A token is renewed after this long at the latest.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Issued {
    token: String,
    renew_at: Instant,
}

/// The token requests a pod's volumes make: (key, service account, pod).
fn wanted(pod: &Pod) -> Vec<TokenKey> {
    let Some(spec) = &pod.spec else { return vec![] };
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| token_key(pod, t))
        .collect()
}

/// Asks for one token.
async fn request(client: &kube::Client, pod: &Pod, key: &TokenKey) -> Result<(String, Duration), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).filter(|s| !s.is_empty()).unwrap_or_else(|| "default".into());
    let audiences = if key.1.is_empty() { vec![] } else { vec![key.1.clone()] };
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(key.2),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let answer =
        Api::<ServiceAccount>::namespaced(client.clone(), &ns).create_token_request(&sa, &PostParams::default(), &req).await.map_err(|e| e.to_string())?;
    let status = answer.status.ok_or("the TokenRequest came back without a status")?;
    // renew at 80 % of the lifetime the server gave (it may give more than asked)
    let lifetime = (status.expiration_timestamp.0 - jiff::Timestamp::now()).get_seconds().max(0) as u64;
    Ok((status.token, Duration::from_secs(lifetime * 8 / 10).min(MAX_AGE)))
}

/// Passes the followed pods on from `raw` to `tx` with the tokens their volumes need.
pub async fn run(client: kube::Client, mut raw: watch::Receiver<ClusterPods>, tx: watch::Sender<ClusterPods>, mut stop: watch::Receiver<bool>) {
    let mut issued: BTreeMap<TokenKey, Issued> = BTreeMap::new();
    let mut tick = tokio::time::interval(CHECK);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = raw.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        let mut pods = raw.borrow_and_update().clone();
        let live: Vec<(&Pod, TokenKey)> =
            pods.pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).flat_map(|p| wanted(p).into_iter().map(move |k| (p, k))).collect();
        let mut changed = false;
        // the due requests at once (a hundred new pods wait for one round trip, not a hundred)
        let due: Vec<(Pod, TokenKey)> = live
            .iter()
            .filter(|(_, key)| issued.get(key).is_none_or(|i| Instant::now() >= i.renew_at))
            .map(|(pod, key)| ((*pod).clone(), key.clone()))
            .collect();
        let answers: Vec<Answer> = stream::iter(due)
            .map(|(pod, key)| {
                let client = client.clone();
                async move {
                    let answer = request(&client, &pod, &key).await;
                    (pod, key, answer)
                }
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        for (pod, key, answer) in answers {
            match answer {
                Ok((token, renew_in)) => {
                    issued.insert(key, Issued { token, renew_at: Instant::now() + renew_in });
                    changed = true;
                }
                Err(e) => tracing::warn!(pod = ?pod.metadata.name, error = %e, "requesting a service account token"),
            }
        }
        let before = issued.len();
        issued.retain(|k, _| live.iter().any(|(_, l)| l == k));
        changed |= issued.len() != before;
        pods.objects.tokens = issued.iter().map(|(k, i)| (k.clone(), i.token.clone())).collect();
        if changed
            || tx.borrow().pods != pods.pods
            || tx.borrow().mirrors != pods.mirrors
            || tx.borrow().synced != pods.synced
            || tx.borrow().objects != pods.objects
        {
            tx.send_replace(pods);
        }
    }
}
