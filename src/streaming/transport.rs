//! Carrying a remotecommand session (exec or attach) over SPDY streams or WebSocket
//! channels: each side turns its transport into a `CommandIo`, runs the session, and
//! reports the outcome on the error stream the way the negotiated protocol says.
use super::remotecommand::{status_json, status_text, CommandIo, Outcome, ResizeDecoder, TermSize};
use super::spdy::{header, Session, Stream};
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// How long a client has to open every stream it needs (the kubelet's default too).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which stdio streams a session uses.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Forward an output channel to a SPDY stream, then half-close it.
fn spdy_sink(stream: Stream) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if stream.writer.write(&b).await.is_err() {
                break;
            }
        }
        stream.writer.close().await;
    });
    (tx, task)
}

fn resize_channel(mut data: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut dec = ResizeDecoder::default();
        while let Some(b) = data.recv().await {
            for sz in dec.feed(&b) {
                if tx.send(sz).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// remotecommand over SPDY: wait for the client's streams, run, report on the error stream.
pub async fn serve_spdy<F, Fut>(session: Session, mut incoming: mpsc::Receiver<Stream>, protocol: &str, wanted: Wanted, what: String, run: F)
where
    F: FnOnce(CommandIo) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut error = None;
    let mut stdin = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut resize = None;
    let complete = |e: &Option<Stream>, i: &Option<Stream>, o: &Option<Stream>, r: &Option<Stream>, x: &Option<Stream>| {
        e.is_some()
            && (!wanted.stdin || i.is_some())
            && (!wanted.stdout || o.is_some())
            && (!wanted.stderr || wanted.tty || x.is_some())
            && (!wanted.tty || r.is_some())
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&error, &stdin, &stdout, &resize, &stderr) {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(_) => {
                tracing::info!("streaming client did not open its streams in time");
                if let Some(e) = &error {
                    let _ = e.writer.write(b"timed out waiting for the client to create streams").await;
                }
                session.shutdown().await;
                return;
            }
        };
        let slot = match header(&stream.headers, "streamtype") {
            Some("error") => &mut error,
            Some("stdin") => &mut stdin,
            Some("stdout") => &mut stdout,
            Some("stderr") => &mut stderr,
            Some("resize") => &mut resize,
            _ => {
                stream.writer.reset(super::spdy::frame::rst::PROTOCOL_ERROR).await;
                continue;
            }
        };
        *slot = Some(stream);
    }
    let Some(error) = error else { return };
    // Streams keep arriving after the set is complete only from misbehaving clients.
    tokio::spawn(async move { while incoming.recv().await.is_some() {} });
    let (out_tx, out_task) = stdout.map(spdy_sink).unzip();
    let (err_tx, err_task) = stderr.map(spdy_sink).unzip();
    let stdin_rx = stdin.map(|s| s.data);
    let io = CommandIo { stdin: stdin_rx, stdout: out_tx, stderr: err_tx, resize: resize.map(|r| resize_channel(r.data)), gone: session.closed() };
    let outcome = run(io).await;
    for t in [out_task, err_task].into_iter().flatten() {
        let _ = t.await;
    }
    let payload = if protocol == super::remotecommand::V1 { status_text(&outcome) } else { status_json(&outcome, &what) };
    if !payload.is_empty() {
        let _ = error.writer.write(&payload).await;
    }
    error.writer.close().await;
    session.shutdown().await;
}

/// The WebSocket flavours of the channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsProtocol {
    /// Text messages with a digit for the channel and base64 data.
    pub base64: bool,
    /// v5: the client may close a channel with [255, channel].
    pub close_signal: bool,
    /// v4 and later: the error channel carries a metav1.Status.
    pub status: bool,
}

pub const WS_PROTOCOLS: &[(&str, WsProtocol)] = &[
    ("v5.channel.k8s.io", WsProtocol { base64: false, close_signal: true, status: true }),
    ("v4.channel.k8s.io", WsProtocol { base64: false, close_signal: false, status: true }),
    ("v4.base64.channel.k8s.io", WsProtocol { base64: true, close_signal: false, status: true }),
    ("channel.k8s.io", WsProtocol { base64: false, close_signal: false, status: false }),
    ("base64.channel.k8s.io", WsProtocol { base64: true, close_signal: false, status: false }),
];

const CH_STDIN: u8 = 0;
const CH_STDOUT: u8 = 1;
const CH_STDERR: u8 = 2;
const CH_ERROR: u8 = 3;
const CH_RESIZE: u8 = 4;
const CH_CLOSE: u8 = 255;

fn ws_message(proto: WsProtocol, channel: u8, data: &[u8]) -> Message {
    if proto.base64 {
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push((b'0' + channel) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::Text(s.into())
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::Binary(v.into())
    }
}

/// remotecommand over WebSocket channels.
pub async fn serve_ws<IO, F, Fut>(ws: WebSocketStream<IO>, proto: WsProtocol, wanted: Wanted, what: String, run: F)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(CommandIo) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let (mut sink, mut source) = ws.split();
    let (msg_tx, mut msg_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = msg_rx.recv().await {
            let closing = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let gone = CancellationToken::new();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    let reader = {
        let gone = gone.clone();
        tokio::spawn(async move {
            let mut stdin_tx = Some(stdin_tx);
            let mut dec = ResizeDecoder::default();
            while let Some(Ok(msg)) = source.next().await {
                let (channel, data) = match msg {
                    Message::Binary(b) if !b.is_empty() => (b[0], b.slice(1..)),
                    Message::Text(t) if proto.base64 && !t.is_empty() => {
                        let bytes = t.as_bytes();
                        let Ok(d) = base64::engine::general_purpose::STANDARD.decode(&bytes[1..]) else { continue };
                        (bytes[0].wrapping_sub(b'0'), Bytes::from(d))
                    }
                    Message::Close(_) => break,
                    _ => continue,
                };
                match channel {
                    CH_STDIN => {
                        if let Some(tx) = &stdin_tx {
                            if !data.is_empty() {
                                let _ = tx.send(data).await;
                            }
                        }
                    }
                    CH_RESIZE => {
                        for sz in dec.feed(&data) {
                            let _ = resize_tx.send(sz).await;
                        }
                    }
                    CH_CLOSE if proto.close_signal && data.first() == Some(&CH_STDIN) => stdin_tx = None,
                    _ => {}
                }
            }
            gone.cancel();
        })
    };
    let forward = |channel: u8| {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let out = msg_tx.clone();
        let task = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if out.send(ws_message(proto, channel, &b)).await.is_err() {
                    break;
                }
            }
        });
        (tx, task)
    };
    let (out_tx, out_task) = wanted.stdout.then(|| forward(CH_STDOUT)).unzip();
    let (err_tx, err_task) = (wanted.stderr && !wanted.tty).then(|| forward(CH_STDERR)).unzip();
    let io = CommandIo { stdin: wanted.stdin.then_some(stdin_rx), stdout: out_tx, stderr: err_tx, resize: wanted.tty.then_some(resize_rx), gone: gone.clone() };
    let outcome = run(io).await;
    for t in [out_task, err_task].into_iter().flatten() {
        let _ = t.await;
    }
    let payload = if proto.status { status_json(&outcome, &what) } else { status_text(&outcome) };
    if !payload.is_empty() {
        let _ = msg_tx.send(ws_message(proto, CH_ERROR, &payload)).await;
    }
    let _ = msg_tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
    drop(msg_tx);
    let _ = writer.await;
    // Give the client a moment to answer the close, then drop the connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), gone.cancelled()).await;
    reader.abort();
}

/// A WebSocket whose binary messages carry a byte stream (SPDY tunnelled over WebSocket,
/// "SPDY/3.1+portforward.k8s.io"): returns the local end of that byte stream.
pub fn ws_byte_stream<IO>(ws: WebSocketStream<IO>) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
        let _ = sink.close().await;
    });
    ours
}
