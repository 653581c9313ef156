//! Harness for the apiserver tests: a real `berth server` on 127.0.0.1 with a port of its own
//! choosing, a private data dir (embedded store) or an etcd member, and the real kubectl of a
//! given version. The process (only the one started here) and every directory are removed on drop.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{berth_bin, TempDir};

/// The kubectl binary of `version` ("1.33").
pub fn kubectl_bin(version: &str) -> PathBuf {
    PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"))
}

pub struct ApiServer {
    pub dir: TempDir,
    child: Option<Child>,
    pub kubeconfig: PathBuf,
    extra: Vec<String>,
}

impl ApiServer {
    /// Starts `berth server` on the embedded store.
    pub fn start(tag: &str) -> ApiServer {
        Self::start_with(tag, vec![])
    }

    /// Starts `berth server` with more flags (`--datastore-endpoint ...`).
    pub fn start_with(tag: &str, extra: Vec<String>) -> ApiServer {
        let dir = TempDir::new(&format!("api-{tag}"));
        let kubeconfig = dir.path().join("server/admin.kubeconfig");
        let mut s = ApiServer { dir, child: None, kubeconfig, extra };
        s.launch();
        s
    }

    fn launch(&mut self) {
        // The data dir is the test's directory: the control plane keeps its state in server/.
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("server log");
        let _ = std::fs::remove_file(&self.kubeconfig);
        let child = Command::new(berth_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--listen", "127.0.0.1:0", "--watch-bookmark-interval", "1s", "--disable-agent"])
            // the API alone, as upstream's apiserver tests run it: no workload controller
            // changes what a test writes (give --controllers to have them); the namespace
            // controller stays, so deleted namespaces go
            .args(if self.extra.iter().any(|a| a.starts_with("--controllers")) {
                vec![]
            } else {
                vec!["--controllers=*,-replicaset,-replicationcontroller,-deployment,-job,-ttl-after-finished,-cronjob,-daemonset,-disruption,-podgc,-garbagecollector,-statefulset,-endpoint,-endpointslice"]
            })
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berth server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubeconfig.exists() && self.kubectl("1.33", &["get", "--raw", "/readyz"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("berth server exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "berth server did not get ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL) and starts it again on the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Stops the server and starts it again on the same data dir with other extra flags (a
    /// controller turned on).
    pub fn restart_with(&mut self, extra: Vec<String>) {
        self.stop();
        self.extra = extra;
        self.launch();
    }

    /// Kills the server with SIGKILL (no shutdown: what a crash leaves behind).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this harness started and has not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs kubectl `version` against the server.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Output {
        self.kubectl_in(version, args, None)
    }

    /// A kubectl `version` command for this server, its discovery and HTTP caches in the test's
    /// directory (not in $HOME/.kube).
    pub fn command(&self, version: &str) -> Command {
        let mut cmd = Command::new(kubectl_bin(version));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.dir.path().join("kube-cache"));
        cmd
    }

    pub fn kubectl_in(&self, version: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.command(version);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl `version` as the holder of bearer `token`: a kubeconfig with the server and its CA
    /// and no client certificate.
    pub fn as_token(&self, version: &str, token: &str, args: &[&str]) -> Output {
        let kc = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let field = |name: &str| {
            kc.lines().find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string())).unwrap_or_else(|| panic!("{name} missing"))
        };
        // written each time: a restarted server listens on another port
        let path = self.dir.path().join("token.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: nobody\ncurrent-context: berth\n",
            field("server"),
            field("certificate-authority-data")
        );
        std::fs::write(&path, text).expect("token kubeconfig");
        Command::new(kubectl_bin(version))
            .arg("--kubeconfig")
            .arg(&path)
            .arg("--cache-dir")
            .arg(self.dir.path().join("token-cache"))
            .arg("--token")
            .arg(token)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, version: &str, args: &[&str]) -> String {
        self.ok_in(version, args, None)
    }

    pub fn ok_in(&self, version: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_in(version, args, stdin);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
        assert!(out.status.success(), "kubectl {version} {args:?} failed: {stderr}\n{stdout}\nserver log:\n{}", self.log());
        stdout
    }

    /// kubectl that must fail; its stderr.
    pub fn fails(&self, version: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_in(version, args, stdin);
        assert!(!out.status.success(), "kubectl {version} {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
