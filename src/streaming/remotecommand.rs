//! The transport-neutral side of remotecommand (exec and attach): the channels a command's
//! stdio travels on, terminal sizes, and the metav1.Status reported on the error stream.
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Protocol versions, newest first. v5 adds the stream-close signal over WebSocket; over
/// SPDY it behaves as v4. Before v4 the error stream carried plain text.
pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const V1: &str = "channel.k8s.io";
pub const SPDY_PROTOCOLS: &[&str] = &[V5, V4];
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// A terminal size as clients send it (JSON with capitalised names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The stdio of one exec or attach session, whatever the transport. A channel that
/// closes means end of stream; dropping a sender closes the client's stream.
pub struct CommandIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Cancelled when the client goes away.
    pub gone: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited (exec) or the container's output ended (attach, code 0).
    Exited(i32),
    /// The session could not run.
    Failed(String),
}

/// The error stream's payload for protocol v4 and later: a metav1.Status.
pub fn status_json(outcome: &Outcome, what: &str) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {what}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The error stream's payload before v4: nothing on success, else a message.
pub fn status_text(outcome: &Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Exited(0) => Vec::new(),
        Outcome::Exited(code) => format!("command terminated with exit code {code}").into_bytes(),
        Outcome::Failed(msg) => msg.clone().into_bytes(),
    }
}

/// Decodes the resize stream: concatenated JSON objects, split anywhere.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    pub fn feed(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
        loop {
            match it.next() {
                Some(Ok(sz)) => {
                    out.push(sz);
                    consumed = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Garbage: drop what was buffered and start again.
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > 64 * 1024 {
            self.buf.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_the_exit_code_as_kubectl_reads_it() {
        let v: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::Exited(3), "[sh -c exit 3]")).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::Exited(0), "")).unwrap();
        assert_eq!(ok["status"], "Success");
    }

    #[test]
    fn resize_messages_split_anywhere() {
        let mut d = ResizeDecoder::default();
        let wire = br#"{"Width":80,"Height":24}{"Width":100,"Height":30}"#;
        let mut got = d.feed(&wire[..10]);
        got.extend(d.feed(&wire[10..30]));
        got.extend(d.feed(&wire[30..]));
        assert_eq!(got, vec![TermSize { width: 80, height: 24 }, TermSize { width: 100, height: 30 }]);
        assert!(d.feed(b"garbage").is_empty());
        assert_eq!(d.feed(br#"{"Width":1,"Height":2}"#), vec![TermSize { width: 1, height: 2 }]);
    }
}
