//! Leader election through a coordination.k8s.io/v1 Lease, with client-go's leaderelection
//! semantics: a candidate takes the Lease when it is free or its holder has not renewed it for
//! `lease_duration` (measured on this candidate's clock from when it last saw the record change,
//! so clock skew between servers does not matter), renews it every `retry_period`, and gives up
//! leading when it could not renew within `renew_deadline`. Losing the Lease stops the component
//! (its token is cancelled and awaited) before this candidate competes again; on shutdown the
//! Lease is released so another server takes over at once.
//!
//! This module owns only the Lease; what runs while leading is the caller's.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Upstream's defaults (kube-scheduler's --leader-elect-* flags).
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    pub fn new(namespace: &str, name: &str, identity: String) -> Self {
        ElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("lease {namespace}/{name}: {source}")]
    Api { namespace: String, name: String, source: kube::Error },
    #[error("lease {namespace}/{name} is held by {holder}")]
    Held { namespace: String, name: String, holder: String },
}

/// One candidate's view of the Lease.
pub struct Elector {
    cfg: ElectionConfig,
    leases: kube::Api<Lease>,
    /// The record last seen (holder, renewTime) and when this candidate saw it change.
    observed: Option<(String, Option<MicroTime>, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: ElectionConfig) -> Self {
        let leases = kube::Api::namespaced(client, &cfg.namespace);
        Elector { cfg, leases, observed: None }
    }

    fn err(&self, source: kube::Error) -> ElectionError {
        ElectionError::Api { namespace: self.cfg.namespace.clone(), name: self.cfg.name.clone(), source }
    }

    fn held(&self, holder: &str) -> ElectionError {
        ElectionError::Held { namespace: self.cfg.namespace.clone(), name: self.cfg.name.clone(), holder: holder.into() }
    }

    /// One attempt to take or renew the Lease (client-go's tryAcquireOrRenew).
    pub async fn try_acquire_or_renew(&mut self) -> Result<(), ElectionError> {
        let now = MicroTime(Timestamp::now());
        let secs = self.cfg.lease_duration.as_secs() as i32;
        let existing = match self.leases.get_opt(&self.cfg.name).await {
            Ok(l) => l,
            Err(e) => return Err(self.err(e)),
        };
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), namespace: Some(self.cfg.namespace.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now.clone()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            self.leases.create(&PostParams::default(), &lease).await.map_err(|e| self.err(e))?;
            self.observed = Some((self.cfg.identity.clone(), Some(now), Instant::now()));
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(h, r, _)| *h != holder || *r != spec.renew_time);
        if changed {
            self.observed = Some((holder.clone(), spec.renew_time.clone(), Instant::now()));
        }
        let seen_at = self.observed.as_ref().map(|(_, _, t)| *t).unwrap_or_else(Instant::now);
        let duration = spec.lease_duration_seconds.map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(self.cfg.lease_duration);
        let mine = holder == self.cfg.identity;
        if !holder.is_empty() && !mine && seen_at.elapsed() < duration {
            return Err(self.held(&holder));
        }
        let mut new = spec.clone();
        if !mine {
            new.acquire_time = Some(now.clone());
            new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new.holder_identity = Some(self.cfg.identity.clone());
        new.lease_duration_seconds = Some(secs);
        new.renew_time = Some(now.clone());
        lease.spec = Some(new);
        // The resourceVersion read above makes this a compare-and-swap: two candidates cannot both win.
        self.leases.replace(&self.cfg.name, &PostParams::default(), &lease).await.map_err(|e| self.err(e))?;
        self.observed = Some((self.cfg.identity.clone(), Some(now), Instant::now()));
        Ok(())
    }

    /// Gives the Lease up (client-go's ReleaseOnCancel): empty holder, one-second duration.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.cfg.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let now = MicroTime(Timestamp::now());
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        if let Err(e) = self.leases.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "releasing the lease");
        }
    }

    /// Competes for the Lease until `stop`; while leading runs `lead(token)`, cancelling the token
    /// (and awaiting the future) when the Lease is lost or on `stop`.
    pub async fn run<F, Fut>(mut self, stop: CancellationToken, lead: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("leader", lease = %format!("{}/{}", self.cfg.namespace, self.cfg.name), identity = %self.cfg.identity);
        async move {
            loop {
                // Acquire.
                loop {
                    match self.try_acquire_or_renew().await {
                        Ok(()) => break,
                        Err(e) => tracing::debug!(error = %e, "not leading"),
                    }
                    let jitter = self.cfg.retry_period.mul_f64(1.0 + 1.2 * fastrand::f64());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(jitter) => {}
                    }
                }
                tracing::info!("acquired the lease");
                let token = stop.child_token();
                let work = tokio::spawn(lead(token.clone()));
                // Renew until the deadline passes without a success, or stop.
                let mut last_renew = Instant::now();
                let lost = loop {
                    tokio::select! {
                        _ = stop.cancelled() => break false,
                        _ = tokio::time::sleep(self.cfg.retry_period) => {}
                    }
                    match tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire_or_renew()).await {
                        Ok(Ok(())) => last_renew = Instant::now(),
                        Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease"),
                        Err(_) => tracing::warn!("renewing the lease timed out"),
                    }
                    if last_renew.elapsed() >= self.cfg.renew_deadline {
                        break true;
                    }
                };
                token.cancel();
                if let Err(e) = work.await {
                    tracing::error!(error = %e, "the leading component failed");
                }
                if !lost {
                    self.release().await;
                    return;
                }
                tracing::warn!("lost the lease: the component stopped");
            }
        }
        .instrument(span)
        .await
    }
}
