//! Attach sessions: a client of the container monitor's attach socket, bridging it to the
//! streaming client. Detaching leaves the container running; the session ends when the
//! container's output ends (it exited) or when the client leaves.
use super::remotecommand::{CommandIo, Outcome};
use crate::runtime::process::attach_hub::{self, frame, parse_frame, KIND_RESIZE, KIND_STDERR, KIND_STDIN, KIND_STDIN_CLOSE, KIND_STDOUT};
use crate::runtime::Runtime;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn run(rt: &Runtime, container_id: &str, tty: bool, io: CommandIo) -> Outcome {
    let dir = match rt.attach_dir(container_id) {
        Ok(dir) => dir,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let sock = match attach_hub::connect(&dir).and_then(|s| {
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    }) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("container {container_id} is not running (attach socket: {e})")),
    };
    let (mut rd, mut wr) = sock.into_split();
    let CommandIo { stdin, stdout, stderr, resize, gone } = io;

    // Client → monitor: stdin and resizes. The client's stdin ending, or the session
    // ending while it was open, closes the container's stdin under stdin_once.
    let done = tokio_util::sync::CancellationToken::new();
    let input = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut stdin = stdin;
            let mut resize = resize;
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    b = async { match &mut stdin { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match b {
                        Some(b) => {
                            if wr.write_all(&frame(KIND_STDIN, &b)).await.is_err() {
                                return;
                            }
                        }
                        None => {
                            stdin = None;
                            let _ = wr.write_all(&frame(KIND_STDIN_CLOSE, &[])).await;
                        }
                    },
                    sz = async { match &mut resize { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match sz {
                        Some(sz) => {
                            let mut p = sz.width.to_be_bytes().to_vec();
                            p.extend_from_slice(&sz.height.to_be_bytes());
                            if wr.write_all(&frame(KIND_RESIZE, &p)).await.is_err() {
                                return;
                            }
                        }
                        None => resize = None,
                    },
                }
            }
            if stdin.is_some() {
                let _ = wr.write_all(&frame(KIND_STDIN_CLOSE, &[])).await;
            }
        })
    };

    // Monitor → client: output until the monitor closes (the container ended).
    let output = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Ok(Some((kind, payload))) = parse_frame(&mut buf) {
                let to = match kind {
                    KIND_STDOUT => stdout.as_ref(),
                    KIND_STDERR if tty => stdout.as_ref(),
                    KIND_STDERR => stderr.as_ref(),
                    _ => None,
                };
                if let Some(tx) = to {
                    let _ = tx.send(Bytes::from(payload)).await;
                }
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = gone.cancelled() => {}
    }
    done.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), input).await;
    Outcome::Exited(0)
}
