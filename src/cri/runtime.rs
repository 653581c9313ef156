//! The RuntimeService calls this build answers: version, status and runtime config.
//! Pod sandboxes and containers come with the runtime layer.
use super::api::{CriResult, RuntimeApi};
use k8s_cri::v1 as cri;

/// The CRI API version Berth speaks.
pub const CRI_API_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "berth";

pub struct CriRuntime {
    cgroup_driver: cri::CgroupDriver,
}

impl CriRuntime {
    pub fn new(systemd_cgroup: bool) -> Self {
        let cgroup_driver = if systemd_cgroup { cri::CgroupDriver::Systemd } else { cri::CgroupDriver::Cgroupfs };
        CriRuntime { cgroup_driver }
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition { r#type: kind.into(), status, reason: reason.into(), message: message.into() }
}

#[tonic::async_trait]
impl RuntimeApi for CriRuntime {
    async fn version(&self, _req: cri::VersionRequest) -> CriResult<cri::VersionResponse> {
        Ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        })
    }

    async fn status(&self, _req: cri::StatusRequest) -> CriResult<cri::StatusResponse> {
        let conditions = vec![
            condition(
                "RuntimeReady",
                false,
                "PodRuntimeUnavailable",
                "this build serves images only; pod sandboxes and containers are not available yet",
            ),
            condition("NetworkReady", false, "NetworkPluginNotReady", "no pod network is configured"),
        ];
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            ..Default::default()
        })
    }

    async fn runtime_config(&self, _req: cri::RuntimeConfigRequest) -> CriResult<cri::RuntimeConfigResponse> {
        Ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: self.cgroup_driver as i32 }),
        })
    }
}
