//! Creates that no caller can cut short. A CRI client that times out or disconnects drops
//! its request's future; were the create running in that future, it would stop wherever it
//! was, its rollback would never run and its name would stay reserved. So RunPodSandbox and
//! CreateContainer run on a task of their own, to the end: success, or failure with its
//! rollback. When the caller is gone by then, what was made is removed again, since nobody
//! learnt its ID. A retry with the same name waits for all of that (a per-name lock) and
//! then finds the name free. Only what the abandoned call made itself is removed: when it
//! answered with the object of an identical earlier create (a retry that got the lock first),
//! that object belongs to whoever got its ID. A call whose caller left before the name was
//! free does not start at all.
use super::{Made, RtResult, Runtime, RuntimeError};
use crate::cri::v1 as cri;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::Instrument;

/// Set when the caller's future is dropped before it got the result.
struct CallerGone(Arc<AtomicBool>);

impl CallerGone {
    fn new() -> (CallerGone, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (CallerGone(flag.clone()), flag)
    }
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for CallerGone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn joined<T>(r: Result<RtResult<T>, tokio::task::JoinError>) -> RtResult<T> {
    r.unwrap_or_else(|e| Err(RuntimeError::Internal(format!("the create task failed: {e}"))))
}

impl Runtime {
    /// RunPodSandbox, finished (or rolled back) whatever the caller does.
    pub async fn run_sandbox_detached(self: &Arc<Self>, config: cri::PodSandboxConfig, runtime_handler: String) -> RtResult<String> {
        let name_key = format!("sandbox-name:{}", super::sandbox::sandbox_name(&config));
        let (guard, gone) = CallerGone::new();
        let rt = self.clone();
        let task = tokio::spawn(
            async move {
                let _name = rt.locks.lock(&name_key).await;
                if gone.load(Ordering::SeqCst) {
                    return Err(RuntimeError::Cancelled("the caller left before RunPodSandbox started".into()));
                }
                let made = rt.run_sandbox(config, runtime_handler).await;
                if let (Ok(Made { id, fresh: true }), true) = (&made, gone.load(Ordering::SeqCst)) {
                    tracing::info!(sandbox = %id, "the caller left before RunPodSandbox finished: removing the pod");
                    rt.abandon_sandbox(id).await;
                }
                made.map(|m| m.id)
            }
            .in_current_span(),
        );
        let result = joined(task.await);
        guard.disarm();
        result
    }

    /// CreateContainer, finished (or rolled back) whatever the caller does.
    pub async fn create_container_detached(
        self: &Arc<Self>,
        sandbox_id: String,
        config: cri::ContainerConfig,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> RtResult<String> {
        let md = config.metadata.clone().unwrap_or_default();
        let pod = self.sandbox(&sandbox_id).map(|s| s.id).unwrap_or_else(|_| sandbox_id.clone());
        let name_key = format!("container-name:{pod}_{}_{}", md.name, md.attempt);
        let (guard, gone) = CallerGone::new();
        let rt = self.clone();
        let task = tokio::spawn(
            async move {
                let _name = rt.locks.lock(&name_key).await;
                if gone.load(Ordering::SeqCst) {
                    return Err(RuntimeError::Cancelled("the caller left before CreateContainer started".into()));
                }
                let made = rt.create_container(&sandbox_id, config, sandbox_config).await;
                if let (Ok(Made { id, fresh: true }), true) = (&made, gone.load(Ordering::SeqCst)) {
                    tracing::info!(container = %id, "the caller left before CreateContainer finished: removing the container");
                    if let Err(e) = rt.remove_container(id).await {
                        tracing::warn!(container = %id, "removing an abandoned container: {e}");
                    }
                }
                made.map(|m| m.id)
            }
            .in_current_span(),
        );
        let result = joined(task.await);
        guard.disarm();
        result
    }

    async fn abandon_sandbox(&self, id: &str) {
        if let Err(e) = self.stop_sandbox(id).await {
            tracing::warn!(sandbox = %id, "stopping an abandoned pod: {e}");
        }
        if let Err(e) = self.remove_sandbox(id).await {
            tracing::warn!(sandbox = %id, "removing an abandoned pod: {e}");
        }
    }
}
