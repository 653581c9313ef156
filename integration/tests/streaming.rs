//! Streaming end to end against `berth runtime` with real busybox containers: exec with and
//! without a terminal over SPDY/3.1 and WebSocket, attach from two clients, port-forward
//! with concurrent connections and a 10 MiB transfer, single-use tokens, and the real
//! crictl when this machine has one.
use berth::cri::v1 as cri;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::streaming::*;
use berth_integration::*;
use sha2::Digest;
use std::time::Duration;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;
const LIMIT: Duration = Duration::from_secs(20);

fn busybox() -> String {
    format!("{}/berth/busybox:latest", test_registry())
}

/// A daemon, a pod and a long-running busybox container in it.
struct Fixture {
    d: Daemon,
    rt: Rt,
    pod: String,
    pod_cfg: cri::PodSandboxConfig,
    logs: TempDir,
}

async fn fixture(name: &str) -> Fixture {
    fixture_with(name, "").await
}

async fn fixture_with(name: &str, config: &str) -> Fixture {
    let d = Daemon::start(config).await;
    let mut images = d.images().await;
    pull(&mut images, &busybox()).await.expect("pull busybox");
    let mut rt = d.runtime().await;
    let logs = TempDir::new("stream-logs");
    let pod_cfg = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("berth-{name}"),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "berthstream".into(),
        log_directory: logs.path().display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod_cfg.clone()), runtime_handler: String::new() })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    Fixture { d, rt, pod, pod_cfg, logs }
}

impl Fixture {
    async fn container(&mut self, name: &str, command: &[&str], stdin: bool, stdin_once: bool, tty: bool) -> String {
        let cfg = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: spec(&busybox()),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            stdin,
            stdin_once,
            tty,
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: self.pod.clone(), config: Some(cfg), sandbox_config: Some(self.pod_cfg.clone()) })
            .await
            .expect("create")
            .into_inner()
            .container_id;
        self.rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
        id
    }

    async fn exec_url(&mut self, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> String {
        self.rt
            .exec(cri::ExecRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), tty, stdin, stdout: true, stderr: !tty })
            .await
            .expect("exec")
            .into_inner()
            .url
    }

    async fn attach_url(&mut self, id: &str, stdin: bool, tty: bool) -> String {
        self.rt.attach(cri::AttachRequest { container_id: id.into(), stdin, tty, stdout: true, stderr: !tty }).await.expect("attach").into_inner().url
    }

    async fn state(&mut self, id: &str) -> i32 {
        self.rt
            .container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: false })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status")
            .state
    }

    async fn exec_sync(&mut self, id: &str, cmd: &[&str]) -> String {
        let r = self
            .rt
            .exec_sync(cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 60 })
            .await
            .expect("exec sync")
            .into_inner();
        assert_eq!(r.exit_code, 0, "{cmd:?}: {}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).to_string()
    }
}

fn status_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("error stream is not a Status ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

fn exit_code_of(status: &serde_json::Value) -> i64 {
    if status["status"] == "Success" {
        return 0;
    }
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    status["details"]["causes"][0]["message"].as_str().and_then(|m| m.parse().ok()).expect("exit code cause")
}

/// Send `word` to an attached `while read l; do echo got:$l; done` until its echo comes back
/// (a new client's output registration races its first input).
async fn ws_echo(w: &mut WsClient, word: &str) -> bool {
    let mut seen = Vec::new();
    for _ in 0..40 {
        w.send(0, format!("{word}\n").as_bytes()).await;
        if w.read_until(1, &mut seen, &format!("got:{word}"), Duration::from_millis(500)).await {
            return true;
        }
    }
    false
}

fn resize(w: u16, h: u16) -> Vec<u8> {
    format!(r#"{{"Width":{w},"Height":{h}}}"#).into_bytes()
}

#[tokio::test]
async fn exec_with_a_terminal_over_spdy_resizes_interrupts_and_reports_the_exit_code() {
    let mut f = fixture("exec-tty").await;
    let id = f.container("main", &["sleep", "3600"], false, false, false).await;
    let url = f.exec_url(&id, &["sh"], true, true).await;
    let (session, _incoming, proto) = spdy_connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).await.map_err(|a| a.status).expect("upgrade");
    assert_eq!(proto, "v5.channel.k8s.io");
    let mut error = open(&session, "error").await;
    let stdin = open(&session, "stdin").await;
    let mut stdout = open(&session, "stdout").await;
    let resize_s = open(&session, "resize").await;
    resize_s.writer.write(&resize(80, 24)).await.unwrap();
    let mut seen = Vec::new();
    stdin.writer.write(b"stty size; tty; echo tty-$((6*7))\n").await.unwrap();
    assert!(read_until(&mut stdout.data, &mut seen, "tty-42", LIMIT).await, "{}", String::from_utf8_lossy(&seen));
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.contains("24 80"), "terminal size not applied: {text}");
    assert!(text.contains("/dev/pts/"), "not on a container pty: {text}");
    // A resize in the middle of the session.
    // (The resize and stdin travel on different streams: ask until the new size shows.)
    resize_s.writer.write(&resize(132, 43)).await.unwrap();
    let mut resized = false;
    for _ in 0..40 {
        stdin.writer.write(b"stty size\n").await.unwrap();
        if read_until(&mut stdout.data, &mut seen, "43 132", Duration::from_millis(500)).await {
            resized = true;
            break;
        }
    }
    assert!(resized, "{}", String::from_utf8_lossy(&seen));
    // Ctrl-C reaches the foreground process through the terminal.
    stdin.writer.write(b"sleep 1000\n").await.unwrap();
    wait_until("sleep 1000 runs in the foreground", LIMIT, async || {
        f.exec_sync(&id, &["sh", "-c", "ps -o args | grep -q '^sleep 1000' && echo running || true"]).await.contains("running")
    })
    .await;
    stdin.writer.write(b"\x03").await.unwrap();
    stdin.writer.write(b"echo after-$((1+1))\n").await.unwrap();
    assert!(read_until(&mut stdout.data, &mut seen, "after-2", LIMIT).await, "Ctrl-C did not interrupt: {}", String::from_utf8_lossy(&seen));
    stdin.writer.write(b"exit 7\n").await.unwrap();
    let _ = read_all(&mut stdout.data, LIMIT).await;
    let st = status_of(&read_all(&mut error.data, LIMIT).await);
    assert_eq!(exit_code_of(&st), 7, "{st}");
    // The container itself goes on.
    assert_eq!(f.state(&id).await, cri::ContainerState::ContainerRunning as i32);
    drop(f.logs);
}

#[tokio::test]
async fn exec_without_a_terminal_over_spdy_and_websocket_keeps_streams_apart() {
    let mut f = fixture("exec-pipes").await;
    let id = f.container("main", &["sleep", "3600"], false, false, false).await;
    let script = ["sh", "-c", "while read l; do echo out:$l; echo err:$l >&2; done; echo eof; exit 3"];

    // SPDY (v4): stdin half-close ends `read`.
    let url = f.exec_url(&id, &script, false, true).await;
    let (session, _incoming, proto) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.map_err(|a| a.status).expect("upgrade");
    assert_eq!(proto, "v4.channel.k8s.io");
    let mut error = open(&session, "error").await;
    let stdin = open(&session, "stdin").await;
    let mut stdout = open(&session, "stdout").await;
    let mut stderr = open(&session, "stderr").await;
    stdin.writer.write(b"a\nb\n").await.unwrap();
    stdin.writer.close().await;
    let (out, err) = tokio::join!(read_all(&mut stdout.data, LIMIT), read_all(&mut stderr.data, LIMIT));
    assert_eq!(String::from_utf8_lossy(&out), "out:a\nout:b\neof\n");
    assert_eq!(String::from_utf8_lossy(&err), "err:a\nerr:b\n");
    assert_eq!(exit_code_of(&status_of(&read_all(&mut error.data, LIMIT).await)), 3);

    // WebSocket v5 (binary channels, stdin closed with the close signal).
    let url = f.exec_url(&id, &script, false, true).await;
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.expect("ws upgrade");
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(0, b"x\n").await;
    ws.send(255, &[0]).await;
    let t = ws.read_to_close(LIMIT).await;
    assert_eq!(t.text(1), "out:x\neof\n");
    assert_eq!(t.text(2), "err:x\n");
    assert_eq!(exit_code_of(&status_of(t.channels.get(&3).expect("error channel"))), 3);
    assert!(t.closed_normally);

    // WebSocket v4 base64 (text frames), a command that succeeds.
    let url = f.exec_url(&id, &["sh", "-c", "echo hi; echo oops >&2"], false, false).await;
    let mut ws = ws_connect(&url, &["v4.base64.channel.k8s.io"]).await.expect("ws upgrade");
    let t = ws.read_to_close(LIMIT).await;
    assert_eq!((t.text(1).as_str(), t.text(2).as_str()), ("hi\n", "oops\n"));
    assert_eq!(status_of(t.channels.get(&3).expect("error channel"))["status"], "Success");

    // WebSocket with a terminal: resize and exit code.
    let url = f.exec_url(&id, &["sh"], true, true).await;
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.expect("ws upgrade");
    ws.send(4, &resize(100, 30)).await;
    ws.send(0, b"stty size; exit 9\n").await;
    let t = ws.read_to_close(LIMIT).await;
    assert!(t.text(1).contains("30 100"), "{:?}", t.text(1));
    assert_eq!(exit_code_of(&status_of(t.channels.get(&3).expect("error channel"))), 9);
    drop(f.logs);
}

#[tokio::test]
async fn attach_serves_two_clients_and_detaching_leaves_the_container_running() {
    let mut f = fixture("attach").await;
    let id = f.container("echo", &["sh", "-c", "while read l; do echo got:$l; done"], true, false, false).await;
    let url_a = f.attach_url(&id, true, false).await;
    let url_b = f.attach_url(&id, false, false).await;
    let (sa, _ia, _) = spdy_connect(&url_a, &["v4.channel.k8s.io"]).await.map_err(|a| a.status).expect("upgrade a");
    let _err_a = open(&sa, "error").await;
    let stdin_a = open(&sa, "stdin").await;
    let mut out_a = open(&sa, "stdout").await;
    let _stderr_a = open(&sa, "stderr").await;
    let mut wb = ws_connect(&url_b, &["v4.channel.k8s.io"]).await.expect("ws attach b");
    // B's output registration races A's first line: write until B sees a line.
    let mut seen_b = Vec::new();
    let mut b_attached = false;
    for _ in 0..40 {
        stdin_a.writer.write(b"sync\n").await.unwrap();
        if wb.read_until(1, &mut seen_b, "got:sync", Duration::from_millis(500)).await {
            b_attached = true;
            break;
        }
    }
    assert!(b_attached, "client b: {}", String::from_utf8_lossy(&seen_b));
    stdin_a.writer.write(b"one\n").await.unwrap();
    let mut seen_a = Vec::new();
    assert!(read_until(&mut out_a.data, &mut seen_a, "got:one", LIMIT).await, "client a: {}", String::from_utf8_lossy(&seen_a));
    assert!(wb.read_until(1, &mut seen_b, "got:one", LIMIT).await, "client b: {}", String::from_utf8_lossy(&seen_b));
    // Both detach; the container keeps running and a later attach still reaches it.
    drop(wb);
    sa.shutdown().await;
    let url_c = f.attach_url(&id, true, false).await;
    let mut wc = ws_connect(&url_c, &["v5.channel.k8s.io"]).await.expect("ws attach c");
    assert!(ws_echo(&mut wc, "two").await, "client c got no echo");
    assert_eq!(f.state(&id).await, cri::ContainerState::ContainerRunning as i32);
    // Closing stdin of a stdin_once=false container leaves it open: a later client still
    // reaches the same process.
    wc.send(255, &[0]).await;
    drop(wc);
    let url_d = f.attach_url(&id, true, false).await;
    let mut wd = ws_connect(&url_d, &["v5.channel.k8s.io"]).await.expect("ws attach d");
    assert!(ws_echo(&mut wd, "three").await, "client d got no echo: stdin was closed");
    drop(wd);
    assert_eq!(f.state(&id).await, cri::ContainerState::ContainerRunning as i32);

    // A terminal container with stdin_once: the first session's end closes its stdin.
    let tty_id = f.container("shell", &["sh"], true, true, true).await;
    let url = f.attach_url(&tty_id, true, true).await;
    let mut w = ws_connect(&url, &["v5.channel.k8s.io"]).await.expect("ws attach tty");
    w.send(4, &resize(90, 20)).await;
    let mut seen = Vec::new();
    let mut resized = false;
    for _ in 0..40 {
        assert!(w.try_send(0, b"tty; stty size\n").await, "the attach session closed: {:?}\n{}", String::from_utf8_lossy(&seen), f.d.log());
        if w.read_until(1, &mut seen, "20 90", Duration::from_millis(500)).await {
            resized = true;
            break;
        }
    }
    assert!(resized, "{}", String::from_utf8_lossy(&seen));
    assert!(String::from_utf8_lossy(&seen).contains("/dev/pts/0"), "{}", String::from_utf8_lossy(&seen));
    w.send(0, b"exit 0\n").await;
    let t = w.read_to_close(LIMIT).await;
    assert_eq!(status_of(t.channels.get(&3).expect("error channel"))["status"], "Success");
    drop(f.logs);
}

/// 20 port-forward connections to the pod's httpd at the same time, each answered whole.
async fn twenty_connections_at_once(session: &berth::streaming::spdy::Session) {
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move { forward_once(&s, 8080, i, b"GET /index.html HTTP/1.0\r\n\r\n").await }));
    }
    for t in tasks {
        let (body, err) = t.await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("HTTP/1.") && text.ends_with("hello-from-pod\n"), "{text:?} {err}");
        assert!(err.is_empty(), "{err}");
    }
}

/// Fetch /big (10 MiB) through one connection; the sha256 of what arrived.
async fn big_file(session: &berth::streaming::spdy::Session, request_id: u32) -> String {
    let (body, err) = forward_once(session, 8080, request_id, b"GET /big HTTP/1.0\r\n\r\n").await;
    assert!(err.is_empty(), "{err}");
    let split = body.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head") + 4;
    assert_eq!(body.len() - split, 10 << 20);
    hex::encode(sha2::Sha256::digest(&body[split..]))
}

#[tokio::test]
async fn port_forward_carries_concurrent_connections_and_ten_mebibytes_intact() {
    let mut f = fixture("portfwd").await;
    let id = f
        .container(
            "httpd",
            &["sh", "-c", "mkdir -p /www /www2 && echo hello-from-pod > /www/index.html && echo second-port > /www2/index.html && httpd -p 8081 -h /www2 && dd if=/dev/urandom of=/www/big bs=1M count=10 2>/dev/null && exec httpd -f -p 8080 -h /www"],
            false,
            false,
            false,
        )
        .await;
    // Ready once port 8080 listens (state 0A in /proc/net/tcp{,6}): that httpd starts only
    // after /big is written whole, so its checksum is final by then.
    let listening = "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':1F90 [0-9A-F:]* 0A ' && sha256sum /www/big || true";
    let mut sum = String::new();
    berth_integration::wait_until("the pod's httpd listens on 8080", Duration::from_secs(20), async || {
        let out = f.exec_sync(&id, &["sh", "-c", listening]).await;
        sum = out.split_whitespace().next().unwrap_or("").to_string();
        sum.len() == 64
    })
    .await;
    let pf_url = |rt: &mut Rt, pod: String| {
        let mut rt = rt.clone();
        async move { rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod, port: vec![8080] }).await.expect("port forward").into_inner().url }
    };

    // SPDY: 20 connections at once.
    let url = pf_url(&mut f.rt, f.pod.clone()).await;
    let (session, _incoming, proto) = spdy_connect(&url, &["portforward.k8s.io"]).await.map_err(|a| a.status).expect("upgrade");
    assert_eq!(proto, "portforward.k8s.io");
    twenty_connections_at_once(&session).await;
    // 10 MiB through one connection.
    assert_eq!(big_file(&session, 100).await, sum);
    // A second port through the same session, alongside the first.
    let (a, b) = tokio::join!(
        forward_once(&session, 8081, 103, b"GET /index.html HTTP/1.0\r\n\r\n"),
        forward_once(&session, 8080, 104, b"GET /index.html HTTP/1.0\r\n\r\n")
    );
    assert!(String::from_utf8_lossy(&a.0).ends_with("second-port\n"), "{a:?}");
    assert!(String::from_utf8_lossy(&b.0).ends_with("hello-from-pod\n"), "{b:?}");
    // A port nobody listens on: the error stream says so, the session stays usable.
    let (_, err) = forward_once(&session, 8082, 101, b"x").await;
    assert!(err.contains("8082"), "{err:?}");
    let (body, _) = forward_once(&session, 8080, 102, b"GET /index.html HTTP/1.0\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&body).ends_with("hello-from-pod\n"));
    session.shutdown().await;

    // SPDY tunnelled over WebSocket, as kubectl 1.31+ does.
    let url = pf_url(&mut f.rt, f.pod.clone()).await;
    let tunnel = ws_tunnel(&url, "SPDY/3.1+portforward.k8s.io").await.expect("ws tunnel");
    let (session, _incoming) = berth::streaming::spdy::Session::start(tunnel, berth::streaming::spdy::Role::Client);
    twenty_connections_at_once(&session).await;
    assert_eq!(big_file(&session, 200).await, sum);
    session.shutdown().await;
    drop(f.logs);
}

#[tokio::test]
async fn tokens_are_single_use_and_bad_requests_get_clear_errors() {
    let mut f = fixture("tokens").await;
    let id = f.container("main", &["sleep", "3600"], false, false, false).await;
    let url = f.exec_url(&id, &["true"], false, false).await;
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.expect("first use");
    let t = ws.read_to_close(LIMIT).await;
    assert_eq!(status_of(t.channels.get(&3).expect("error channel"))["status"], "Success");
    // Reused, unknown, and wrong-kind tokens: 404.
    assert_eq!(ws_connect(&url, &["v5.channel.k8s.io"]).await.err().map(|e| e.0), Some(404));
    assert_eq!(spdy_connect(&url, &["v4.channel.k8s.io"]).await.err().map(|a| a.status), Some(404));
    let unknown = format!("{}/exec/AAAAAAAAAAAAAAAAAAAAAA", url.rsplitn(3, '/').nth(2).unwrap());
    assert_eq!(ws_connect(&unknown, &["v5.channel.k8s.io"]).await.err().map(|e| e.0), Some(404));
    // No protocol in common: 403 over SPDY naming ours, 400 over WebSocket.
    let url = f.exec_url(&id, &["true"], false, false).await;
    let refused = spdy_connect(&url, &["v1.channel.k8s.io"]).await.err().expect("refused");
    assert_eq!(refused.status, 403);
    assert!(refused.header("X-Accepted-Stream-Protocol-Versions").unwrap_or("").contains("v4.channel.k8s.io"));
    let url = f.exec_url(&id, &["true"], false, false).await;
    assert_eq!(ws_connect(&url, &["v9.channel.k8s.io"]).await.err().map(|e| e.0), Some(400));
    // CRI-level validation.
    let bad = f.rt.exec(cri::ExecRequest { container_id: id.clone(), cmd: vec!["sh".into()], tty: true, stdin: true, stdout: true, stderr: true }).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let bad = f.rt.exec(cri::ExecRequest { container_id: id.clone(), cmd: vec![], stdout: true, ..Default::default() }).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let bad = f.rt.exec(cri::ExecRequest { container_id: "nope".into(), cmd: vec!["sh".into()], stdout: true, ..Default::default() }).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::NotFound);
    let bad = f.rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: f.pod.clone(), port: vec![70000] }).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    f.rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.expect("stop");
    let bad = f.rt.attach(cri::AttachRequest { container_id: id.clone(), stdout: true, ..Default::default() }).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::FailedPrecondition);
    drop(f.logs);
    drop(f.d);
}

#[tokio::test]
async fn logs_follow_through_size_rotation_without_losing_lines() {
    let mut f = fixture_with("logs", "[containers]\nlog_max_size = \"4Ki\"\nlog_max_files = 3\n").await;
    let id = f
        .container(
            "counter",
            &["sh", "-c", "sleep 1; i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo line-$i; [ $((i % 50)) = 0 ] && echo warn-$i >&2; sleep 0.002; done"],
            false,
            false,
            false,
        )
        .await;
    let args = f.d.args();
    let follow = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || std::process::Command::new(berth_bin()).arg("logs").args(&args).args(["-f", &id]).output().expect("berth logs -f"))
    };
    let out = tokio::time::timeout(Duration::from_secs(60), follow).await.expect("logs -f ends with the container").unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: String = (1..=600).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let want_err: String = (1..=12).map(|i| format!("warn-{}\n", i * 50)).collect();
    assert_eq!(String::from_utf8_lossy(&out.stderr), want_err);
    // On disk: the current file and two rotated ones, none over the limit.
    let log = f.logs.path().join("counter.log");
    let names = entries_with_prefix(f.logs.path(), "counter.log");
    assert_eq!(names.len(), 3, "{names:?}");
    for n in &names {
        let len = std::fs::metadata(f.logs.path().join(n)).unwrap().len();
        assert!(len <= 4096, "{n}: {len} bytes");
    }
    assert!(log.exists());
    // tail, timestamps and since on the finished log.
    // The last four entries: three stdout lines and the last stderr one.
    let (ok, tail, _) = f.d.cli(&["logs", "--tail", "4", &id]);
    assert!(ok);
    assert_eq!(tail, "line-598\nline-599\nline-600\n");
    let (ok, stamped, _) = f.d.cli(&["logs", "--tail", "2", "--timestamps", &id]);
    assert!(ok);
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{stamped}");
    assert_eq!(rest, "line-600\n");
    let (ok, none, _) = f.d.cli(&["logs", "--since", "2099-01-01T00:00:00Z", &id]);
    assert!(ok && none.is_empty(), "{none}");
    let (ok, _, err) = f.d.cli(&["logs", "--since", "yesterday", &id]);
    assert!(!ok && err.contains("--since"), "{err}");
}

#[tokio::test]
async fn streaming_over_tls() {
    let mut f = fixture_with("tls", "[streaming]\ntls = true\n").await;
    let id = f.container("main", &["sleep", "3600"], false, false, false).await;
    let url = f.exec_url(&id, &["sh", "-c", "echo over-tls; exit 4"], false, false).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut ws = ws_connect(&url, &["v5.channel.k8s.io"]).await.expect("wss upgrade");
    let t = ws.read_to_close(LIMIT).await;
    assert_eq!(t.text(1), "over-tls\n");
    assert_eq!(exit_code_of(&status_of(t.channels.get(&3).expect("error channel"))), 4);
    let url = f.exec_url(&id, &["sh", "-c", "echo spdy-tls"], false, false).await;
    let (session, _incoming, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.map_err(|a| a.status).expect("SPDY over TLS");
    let mut error = open(&session, "error").await;
    let mut stdout = open(&session, "stdout").await;
    let _stderr = open(&session, "stderr").await;
    assert_eq!(String::from_utf8_lossy(&read_all(&mut stdout.data, LIMIT).await), "spdy-tls\n");
    assert_eq!(status_of(&read_all(&mut error.data, LIMIT).await)["status"], "Success");
    // The certificate was generated into the data dir.
    assert!(f.d.data_dir().join("streaming.crt").exists());
    drop(f.logs);
}

/// The real crictl (cri-tools), when this machine has one: `BERTH_CRICTL` or `crictl` on PATH.
fn crictl() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("BERTH_CRICTL") {
        return Some(p.into());
    }
    std::env::var("PATH").ok()?.split(':').map(|d| std::path::Path::new(d).join("crictl")).find(|p| p.is_file())
}

#[tokio::test]
#[ignore = "needs the real crictl (BERTH_CRICTL or crictl on PATH): run with --ignored"]
async fn real_crictl_exec_attach_and_port_forward() {
    let bin = crictl().expect("no crictl on this machine: set BERTH_CRICTL or put crictl on PATH");
    let mut f = fixture("crictl").await;
    let id = f
        .container(
            "httpd",
            &["sh", "-c", "mkdir -p /www && echo crictl-ok > /www/index.html && httpd -p 8080 -h /www && while true; do echo tick; sleep 0.2; done"],
            false,
            false,
            false,
        )
        .await;
    let endpoint = format!("unix://{}", f.d.socket().display());
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(["--runtime-endpoint", &endpoint, "--image-endpoint", &endpoint, "--timeout", "20s"])
            .args(args)
            .output()
            .expect("run crictl")
    };
    for transport in ["spdy", "websocket"] {
        let out = run(&["exec", "--transport", transport, &id, "sh", "-c", "echo from-$0; exit 0", transport]);
        assert!(out.status.success(), "{transport}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("from-{transport}\n"));
        let out = run(&["exec", "--transport", transport, &id, "sh", "-c", "exit 3"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("exit code 3"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // crictl reads the log file the monitor writes.
    let out = run(&["logs", "--tail", "3", &id]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("tick"), "{}", String::from_utf8_lossy(&out.stderr));
    // Attach for a moment: the ticks come through.
    let child = std::process::Command::new(&bin)
        .args(["--runtime-endpoint", &endpoint, "attach", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("crictl attach");
    let mut child = child;
    let stdout = child.stdout.take().expect("attach stdout");
    // Read until a tick arrives (on a thread: the pipe read blocks).
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("tick"))
    });
    let ticked = tokio::time::timeout(LIMIT, tokio::task::spawn_blocking(move || reader.join().ok().flatten())).await;
    // crictl attach runs until the container ends: end it, a process this test started, by pid.
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(ticked, Ok(Ok(Some(_)))), "crictl attach showed no tick");
    assert_eq!(f.state(&id).await, cri::ContainerState::ContainerRunning as i32);
    // Port-forward to a free local port and fetch through it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut pf = std::process::Command::new(&bin)
        .args(["--runtime-endpoint", &endpoint, "port-forward", &f.pod, &format!("{port}:8080")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("crictl port-forward");
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
            let _ = c.read_to_string(&mut body).await;
            if body.contains("crictl-ok") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains("crictl-ok"), "{body:?}");
    drop(f.logs);
}
