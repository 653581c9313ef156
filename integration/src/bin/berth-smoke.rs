//! berth-smoke: one pod with one container through a running daemon's CRI socket, checked
//! end to end, then removed. CI runs it against the daemon that the README's run command
//! (hack/run.sh) started (hack/smoke-run.sh), so the run command cannot silently break.
//!   berth-smoke SOCKET IMAGE POD_CIDR
use berth::cri::v1 as cri;
use berth::cri::v1::image_service_client::ImageServiceClient;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::connect_unix;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let parse = |s: &str| s.parse::<std::net::Ipv4Addr>().map(u32::from).ok();
    let len: u32 = len.parse().unwrap_or(32);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    matches!((parse(ip), parse(net)), (Some(a), Some(n)) if a & mask == n & mask)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, image, cidr] = args.as_slice() else {
        return Err("usage: berth-smoke SOCKET IMAGE POD_CIDR".into());
    };
    let channel = connect_unix(Path::new(socket)).await?;
    let mut images = ImageServiceClient::new(channel.clone());
    let mut rt = RuntimeServiceClient::new(channel);
    let spec = Some(cri::ImageSpec { image: image.clone(), ..Default::default() });

    let status = rt.status(cri::StatusRequest { verbose: false }).await?.into_inner();
    for c in status.status.map(|s| s.conditions).unwrap_or_default() {
        println!("condition {} = {} {} {}", c.r#type, c.status, c.reason, c.message);
        if !c.status {
            return Err(format!("{} is false: {}", c.r#type, c.message).into());
        }
    }
    images.pull_image(cri::PullImageRequest { image: spec.clone(), ..Default::default() }).await?;
    println!("pulled {image}");

    let logs = PathBuf::from(socket).with_file_name("berth-smoke-logs");
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "berth-smoke".into(),
            uid: format!("berth-smoke-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "berth-smoke".into(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod_id = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() }).await?.into_inner().pod_sandbox_id;
    let result = check_pod(&mut rt, &pod_id, &pod, spec, cidr, &logs).await;
    let _ = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await?;
    let _ = std::fs::remove_dir_all(&logs);
    result?;
    let left = rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await?.into_inner().items;
    if !left.is_empty() {
        return Err(format!("pods left after removal: {left:?}").into());
    }
    println!("berth-smoke: ok");
    Ok(())
}

async fn check_pod(
    rt: &mut RuntimeServiceClient<tonic::transport::Channel>,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    image: Option<cri::ImageSpec>,
    cidr: &str,
    logs: &Path,
) -> Result<(), Error> {
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod_id.into(), verbose: false }).await?.into_inner();
    let ip = st.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
    println!("pod {pod_id} has address {ip:?}");
    if !in_cidr(&ip, cidr) {
        return Err(format!("pod address {ip:?} is not in {cidr}").into());
    }
    let ctr = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "hello".into(), attempt: 0 }),
        image,
        command: vec!["sh".into(), "-c".into(), "echo hello from berth; ip -4 -o addr show eth0".into()],
        log_path: "hello.log".into(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let cid = rt
        .create_container(cri::CreateContainerRequest { pod_sandbox_id: pod_id.into(), config: Some(ctr), sandbox_config: Some(pod.clone()) })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await?.into_inner();
        let st = st.status.ok_or("no container status")?;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            if st.exit_code != 0 {
                return Err(format!("container exited with {}", st.exit_code).into());
            }
            break;
        }
        if Instant::now() > deadline {
            return Err("the container did not exit within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(logs.join("hello.log"))?;
    print!("container log:\n{log}");
    if !log.contains(" stdout F hello from berth") || !log.contains(&format!("inet {ip}/")) {
        return Err("the container's log lacks its output or the pod address".into());
    }
    Ok(())
}
