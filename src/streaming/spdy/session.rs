//! One SPDY/3.1 session over a byte stream: a reader task that routes frames to streams and
//! a writer task that serialises every outgoing frame, so stream handles can be used from
//! any task. The server side answers each new stream with SYN_REPLY at once and hands it to
//! the application; the client side opens streams and waits for their reply.
//!
//! Flow control: the Go SPDY implementation that kubectl and crictl use (spdystream) neither
//! sends nor honours WINDOW_UPDATE, so this end does not hold data back for windows either;
//! back-pressure comes from TCP and from the bounded per-stream queues.
use super::frame::{rst, Frame, FrameCodec, FrameError, Headers, FLAG_FIN};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Largest DATA frame this end sends.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// Data frames buffered per stream before the reader waits for the application.
const STREAM_QUEUE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the SPDY session is closed")]
    Closed,
    #[error("stream {0} was reset by the peer")]
    Reset(u32),
    #[error("stream {0} is already closed for writing")]
    WriteClosed(u32),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

enum WriterMsg {
    Frame(Frame),
    /// Send GOAWAY, flush, and shut the write side down.
    Shutdown,
}

#[derive(Default)]
struct StreamFlags {
    reset: AtomicBool,
    local_closed: AtomicBool,
}

struct Entry {
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<()>>,
    flags: Arc<StreamFlags>,
}

#[derive(Default)]
struct Shared {
    streams: HashMap<u32, Entry>,
    next_local: u32,
    last_remote: u32,
}

/// A stream of the session: the peer's data arrives on `data` (closed at the peer's FIN
/// or reset); `writer` sends.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// The sending half of a stream; cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<WriterMsg>,
    flags: Arc<StreamFlags>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    pub async fn write(&self, data: &[u8]) -> Result<(), SessionError> {
        if self.flags.reset.load(Ordering::Acquire) {
            return Err(SessionError::Reset(self.id));
        }
        if self.flags.local_closed.load(Ordering::Acquire) {
            return Err(SessionError::WriteClosed(self.id));
        }
        for chunk in data.chunks(MAX_DATA_FRAME) {
            let frame = Frame::Data { stream: self.id, fin: false, data: Bytes::copy_from_slice(chunk) };
            self.out.send(WriterMsg::Frame(frame)).await.map_err(|_| SessionError::Closed)?;
        }
        Ok(())
    }

    /// Half-close: FIN, once.
    pub async fn close(&self) {
        if self.flags.local_closed.swap(true, Ordering::AcqRel) || self.flags.reset.load(Ordering::Acquire) {
            return;
        }
        let _ = self.out.send(WriterMsg::Frame(Frame::Data { stream: self.id, fin: true, data: Bytes::new() })).await;
    }

    /// Abort the stream in both directions.
    pub async fn reset(&self, status: u32) {
        if self.flags.reset.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.out.send(WriterMsg::Frame(Frame::RstStream { stream: self.id, status })).await;
    }

    pub fn is_reset(&self) -> bool {
        self.flags.reset.load(Ordering::Acquire)
    }
}

/// A running session.
#[derive(Clone)]
pub struct Session {
    role: Role,
    out: mpsc::Sender<WriterMsg>,
    shared: Arc<Mutex<Shared>>,
    closed: CancellationToken,
    reader: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

/// How long a shut-down session waits for the peer to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

impl Session {
    /// Start the reader and writer tasks; new streams from the peer arrive on the receiver.
    pub fn start<IO>(io: IO, role: Role) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(64);
        let shared = Arc::new(Mutex::new(Shared { next_local: if role == Role::Client { 1 } else { 2 }, ..Default::default() }));
        let closed = CancellationToken::new();
        let session = Session { role, out: out_tx, shared, closed, reader: Arc::new(Mutex::new(None)) };
        tokio::spawn(write_loop(FramedWrite::new(wr, FrameCodec::new()), out_rx));
        let reader = tokio::spawn(session.clone().read_loop(FramedRead::new(rd, FrameCodec::new()), in_tx));
        if let Ok(mut r) = session.reader.lock() {
            *r = Some(reader.abort_handle());
        }
        (session, in_rx)
    }

    /// Cancelled once the peer's side of the connection has ended.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Open a stream (client side) and wait for the peer's SYN_REPLY.
    pub async fn open(&self, headers: Headers, fin: bool) -> Result<Stream, SessionError> {
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let flags = Arc::new(StreamFlags::default());
        if fin {
            flags.local_closed.store(true, Ordering::Release);
        }
        let id = {
            let mut sh = self.shared.lock().map_err(|_| SessionError::Closed)?;
            let id = sh.next_local;
            sh.next_local += 2;
            sh.streams.insert(id, Entry { data: Some(data_tx), reply: Some(reply_tx), flags: flags.clone() });
            id
        };
        let syn = Frame::SynStream { stream: id, associated: 0, priority: 0, flags: if fin { FLAG_FIN } else { 0 }, headers: headers.clone() };
        self.out.send(WriterMsg::Frame(syn)).await.map_err(|_| SessionError::Closed)?;
        tokio::select! {
            r = reply_rx => r.map_err(|_| SessionError::Reset(id))?,
            _ = self.closed.cancelled() => return Err(SessionError::Closed),
        }
        Ok(Stream { id, headers, data: data_rx, writer: StreamWriter { id, out: self.out.clone(), flags } })
    }

    /// Say GOAWAY, flush what is queued and shut the connection's write side; then give the
    /// peer a moment to close its side before the connection is dropped.
    pub async fn shutdown(&self) {
        let _ = self.out.send(WriterMsg::Shutdown).await;
        let _ = tokio::time::timeout(LINGER, self.closed.cancelled()).await;
        if let Some(r) = self.reader.lock().ok().and_then(|mut r| r.take()) {
            r.abort();
        }
        self.closed.cancel();
    }

    fn peer_initiated(&self, id: u32) -> bool {
        // Client-initiated streams and pings are odd.
        (id % 2 == 1) == (self.role == Role::Server)
    }

    async fn send(&self, f: Frame) {
        let _ = self.out.send(WriterMsg::Frame(f)).await;
    }

    async fn read_loop<R: AsyncRead + Send + Unpin + 'static>(self, mut frames: FramedRead<R, FrameCodec>, incoming: mpsc::Sender<Stream>) {
        while let Some(next) = frames.next().await {
            let frame = match next {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!("SPDY session: {e}");
                    self.send(Frame::GoAway { last_good: self.last_remote(), status: 1 }).await;
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream, flags, headers, .. } => self.on_syn_stream(stream, flags, headers, &incoming).await,
                Frame::SynReply { stream, .. } => {
                    if let Some(e) = self.entry_mut(stream, |e| e.reply.take()).flatten() {
                        let _ = e.send(());
                    }
                }
                Frame::Data { stream, fin, data } => {
                    let tx = self.entry_mut(stream, |e| if fin { e.data.take() } else { e.data.clone() }).flatten();
                    if let Some(tx) = tx {
                        if !data.is_empty() {
                            let _ = tx.send(data).await;
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    if let Ok(mut sh) = self.shared.lock() {
                        if let Some(e) = sh.streams.remove(&stream) {
                            e.flags.reset.store(true, Ordering::Release);
                        }
                    }
                }
                Frame::Ping { id } => {
                    if self.peer_initiated(id) {
                        self.send(Frame::Ping { id }).await;
                    }
                }
                // GOAWAY: the peer opens nothing new; streams already open go on.
                Frame::GoAway { .. } | Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Headers { .. } | Frame::Unknown { .. } => {}
            }
        }
        if let Ok(mut sh) = self.shared.lock() {
            for (_, e) in sh.streams.drain() {
                e.flags.reset.store(true, Ordering::Release);
            }
        }
        self.closed.cancel();
    }

    fn last_remote(&self) -> u32 {
        self.shared.lock().map(|s| s.last_remote).unwrap_or(0)
    }

    fn entry_mut<T>(&self, id: u32, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut sh = self.shared.lock().ok()?;
        sh.streams.get_mut(&id).map(f)
    }

    async fn on_syn_stream(&self, id: u32, flags: u8, headers: Headers, incoming: &mpsc::Sender<Stream>) {
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let stream_flags = Arc::new(StreamFlags::default());
        let refused = {
            let Ok(mut sh) = self.shared.lock() else { return };
            if !self.peer_initiated(id) || id <= sh.last_remote {
                Some(rst::PROTOCOL_ERROR)
            } else {
                sh.last_remote = id;
                let data = if flags & FLAG_FIN != 0 { None } else { Some(data_tx) };
                sh.streams.insert(id, Entry { data, reply: None, flags: stream_flags.clone() });
                None
            }
        };
        if let Some(status) = refused {
            self.send(Frame::RstStream { stream: id, status }).await;
            return;
        }
        if self.role == Role::Server {
            self.send(Frame::SynReply { stream: id, fin: false, headers: vec![] }).await;
        }
        let stream = Stream { id, headers, data: data_rx, writer: StreamWriter { id, out: self.out.clone(), flags: stream_flags } };
        if incoming.send(stream).await.is_err() {
            if let Ok(mut sh) = self.shared.lock() {
                sh.streams.remove(&id);
            }
            self.send(Frame::RstStream { stream: id, status: rst::REFUSED_STREAM }).await;
        }
    }
}

async fn write_loop<W: AsyncWrite + Send + Unpin + 'static>(mut sink: FramedWrite<W, FrameCodec>, mut rx: mpsc::Receiver<WriterMsg>) {
    let mut last_good = 0;
    'outer: while let Some(msg) = rx.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Frame(f) => {
                    if let Frame::SynReply { stream, .. } = &f {
                        last_good = *stream;
                    }
                    if let Err(e) = sink.feed(f).await {
                        tracing::debug!("SPDY write: {e}");
                        break 'outer;
                    }
                }
                WriterMsg::Shutdown => {
                    let _ = sink.feed(Frame::GoAway { last_good, status: 0 }).await;
                    let _ = sink.flush().await;
                    let _ = sink.get_mut().shutdown().await;
                    break 'outer;
                }
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    // Anyone still sending finds the channel closed.
    rx.close();
}
