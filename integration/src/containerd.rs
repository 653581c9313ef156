//! Debian's containerd (with runc) on private directories and a private socket, for tests
//! that check berth-cni under another runtime and for side-by-side comparisons.
use crate::TempDir;
use berth::cri::v1 as cri;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct Containerd {
    pub dir: TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Start containerd with its CRI plugin using `cni_conf_dir` and `cni_bin_dir`, pulling
    /// from the local registry over plain HTTP, with the local pause image as sandbox image.
    pub async fn start(cni_conf_dir: &Path, cni_bin_dir: &Path, registry: &str) -> Containerd {
        let dir = TempDir::new("containerd");
        let d = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/berth/pause:latest"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            bin = cni_bin_dir.display(),
            conf = cni_conf_dir.display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        let c = Containerd { dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tokio::net::UnixStream::connect(c.socket()).await.is_ok() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("containerd did not start:\n{}", c.log());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop containerd (SIGTERM; shims and pods keep running) and start it again on the same
    /// directories; returns once its socket answers.
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("containerd.sock"));
        let log = std::fs::OpenOptions::new().append(true).open(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart containerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if tokio::net::UnixStream::connect(self.socket()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("containerd did not come back:\n{}", self.log());
    }

    /// PIDs of this containerd's shims.
    pub fn shim_pids(&self) -> Vec<i32> {
        self.shims()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(channel(self.socket()).await)
    }

    pub async fn images(&self) -> berth::cri::v1::image_service_client::ImageServiceClient<Channel> {
        berth::cri::v1::image_service_client::ImageServiceClient::new(channel(self.socket()).await)
    }

    /// PIDs of the shims serving this containerd.
    fn shims(&self) -> Vec<i32> {
        let sock = self.socket().display().to_string();
        let mut out = vec![];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("containerd-shim") && cmd.contains(&sock) {
                out.push(pid);
            }
        }
        out
    }
}

async fn channel(path: PathBuf) -> Channel {
    Endpoint::try_from("http://containerd.sock")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect to containerd")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Pods first, through containerd itself, so CNI DEL runs; then the daemon and its shims.
        let socket = self.socket();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let mut c = RuntimeServiceClient::new(channel(socket).await);
                if let Ok(list) = c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await {
                    for p in list.into_inner().items {
                        let _ = c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.id.clone() }).await;
                        let _ = c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.id }).await;
                    }
                }
            });
        })
        .join();
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.shims() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for m in crate::mounts_under(self.dir.path()) {
            let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).expect("path");
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
