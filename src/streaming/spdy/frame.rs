//! SPDY/3.1 framing (draft-mbelshe-httpbis-spdy-00 and the SPDY/3.1 revision): the frame
//! types, their wire layout, and the zlib-compressed name/value header blocks. Both ends of
//! a connection keep one compression context per direction for its whole life, primed with
//! the dictionary the draft defines.
use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_util::codec::{Decoder, Encoder};

/// The protocol version carried in every control frame.
pub const VERSION: u16 = 3;
/// The header compression dictionary of SPDY/3 (section 2.6.10.1 of the draft).
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");
/// Largest frame payload the 24-bit length field allows.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Largest decompressed header block accepted from a peer.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Most header pairs accepted in one block.
const MAX_HEADER_PAIRS: u32 = 1000;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// Header names (lower case) and values, in order; repeated names are repeated pairs.
pub type Headers = Vec<(String, String)>;

/// The first value of a header, by case-insensitive name.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// (flags, id, value) entries.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame of a type this end does not know: the draft says to ignore it.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("malformed {kind} frame: {why}")]
    Malformed { kind: &'static str, why: String },
    #[error("header block: {0}")]
    Headers(String),
    #[error("frame payload of {0} bytes is over the 24-bit limit")]
    TooLarge(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn malformed(kind: &'static str, why: impl Into<String>) -> FrameError {
    FrameError::Malformed { kind, why: why.into() }
}

/// Encodes and decodes frames on one connection, holding both header compression contexts.
pub struct FrameCodec {
    deflate: Compress,
    inflate: Decompress,
    inflate_primed: bool,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Priming a fresh stream with a dictionary cannot fail.
        let _ = deflate.set_dictionary(DICTIONARY);
        FrameCodec { deflate, inflate: Decompress::new(true), inflate_primed: false }
    }

    fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut plain = Vec::with_capacity(64);
        // Values of a repeated name are joined with NUL, as the draft requires one pair per name.
        let mut merged: Vec<(String, String)> = Vec::new();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            match merged.iter_mut().find(|(n, _)| *n == k) {
                Some((_, existing)) => {
                    existing.push('\0');
                    existing.push_str(v);
                }
                None => merged.push((k, v.clone())),
            }
        }
        plain.put_u32(merged.len() as u32);
        for (k, v) in &merged {
            plain.put_u32(k.len() as u32);
            plain.put_slice(k.as_bytes());
            plain.put_u32(v.len() as u32);
            plain.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.deflate.total_in();
            self.deflate.compress_vec(input, &mut out, FlushCompress::Sync).map_err(|e| FrameError::Headers(format!("compressing: {e}")))?;
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used..];
            // A sync flush is complete when all input is taken and output space was left over.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }

    fn decompress_headers(&mut self, mut input: &[u8]) -> Result<Headers, FrameError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.inflate.total_in();
            let res = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match res {
                Ok(Status::StreamEnd) => return Err(FrameError::Headers("the compression stream ended".into())),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() && !self.inflate_primed => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| FrameError::Headers(format!("dictionary: {e}")))?;
                    self.inflate_primed = true;
                    continue;
                }
                Err(e) => return Err(FrameError::Headers(format!("decompressing: {e}"))),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::Headers(format!("over {MAX_HEADER_BLOCK} bytes")));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() < out.capacity() {
                return Err(FrameError::Headers("truncated compressed data".into()));
            }
        }
        parse_header_block(&out)
    }

    fn encode_frame(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let (kind, flags, payload): (u16, u8, Vec<u8>) = match frame {
            Frame::Data { stream, fin, data } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(FrameError::TooLarge(data.len()));
                }
                dst.reserve(8 + data.len());
                dst.put_u32(stream & 0x7fff_ffff);
                dst.put_u8(if fin { FLAG_FIN } else { 0 });
                put_u24(dst, data.len());
                dst.put_slice(&data);
                return Ok(());
            }
            Frame::SynStream { stream, associated, priority, flags, headers } => {
                let mut p = Vec::new();
                p.put_u32(stream & 0x7fff_ffff);
                p.put_u32(associated & 0x7fff_ffff);
                p.put_u8((priority & 0x7) << 5);
                p.put_u8(0);
                p.extend_from_slice(&self.compress_headers(&headers)?);
                (TYPE_SYN_STREAM, flags, p)
            }
            Frame::SynReply { stream, fin, headers } => {
                let mut p = Vec::new();
                p.put_u32(stream & 0x7fff_ffff);
                p.extend_from_slice(&self.compress_headers(&headers)?);
                (TYPE_SYN_REPLY, if fin { FLAG_FIN } else { 0 }, p)
            }
            Frame::Headers { stream, fin, headers } => {
                let mut p = Vec::new();
                p.put_u32(stream & 0x7fff_ffff);
                p.extend_from_slice(&self.compress_headers(&headers)?);
                (TYPE_HEADERS, if fin { FLAG_FIN } else { 0 }, p)
            }
            Frame::RstStream { stream, status } => {
                let mut p = Vec::new();
                p.put_u32(stream & 0x7fff_ffff);
                p.put_u32(status);
                (TYPE_RST_STREAM, 0, p)
            }
            Frame::Settings { flags, entries } => {
                let mut p = Vec::new();
                p.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    p.put_u32(((f as u32) << 24) | (id & 0x00ff_ffff));
                    p.put_u32(value);
                }
                (TYPE_SETTINGS, flags, p)
            }
            Frame::Ping { id } => (TYPE_PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => {
                let mut p = Vec::new();
                p.put_u32(last_good & 0x7fff_ffff);
                p.put_u32(status);
                (TYPE_GOAWAY, 0, p)
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut p = Vec::new();
                p.put_u32(stream & 0x7fff_ffff);
                p.put_u32(delta & 0x7fff_ffff);
                (TYPE_WINDOW_UPDATE, 0, p)
            }
            Frame::Unknown { kind } => (kind, 0, Vec::new()),
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(payload.len()));
        }
        dst.reserve(8 + payload.len());
        dst.put_u16(0x8000 | VERSION);
        dst.put_u16(kind);
        dst.put_u8(flags);
        put_u24(dst, payload.len());
        dst.put_slice(&payload);
        Ok(())
    }

    fn decode_control(&mut self, kind: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let need = |p: &Bytes, n: usize, k: &'static str| {
            if p.len() < n {
                Err(malformed(k, format!("{} bytes, need at least {n}", p.len())))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            TYPE_SYN_STREAM => {
                need(&p, 10, "SYN_STREAM")?;
                let stream = p.get_u32() & 0x7fff_ffff;
                let associated = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                if stream == 0 {
                    return Err(malformed("SYN_STREAM", "stream id 0"));
                }
                let headers = self.decompress_headers(&p)?;
                Frame::SynStream { stream, associated, priority, flags, headers }
            }
            TYPE_SYN_REPLY => {
                need(&p, 4, "SYN_REPLY")?;
                let stream = p.get_u32() & 0x7fff_ffff;
                let headers = self.decompress_headers(&p)?;
                Frame::SynReply { stream, fin: flags & FLAG_FIN != 0, headers }
            }
            TYPE_HEADERS => {
                need(&p, 4, "HEADERS")?;
                let stream = p.get_u32() & 0x7fff_ffff;
                let headers = self.decompress_headers(&p)?;
                Frame::Headers { stream, fin: flags & FLAG_FIN != 0, headers }
            }
            TYPE_RST_STREAM => {
                need(&p, 8, "RST_STREAM")?;
                Frame::RstStream { stream: p.get_u32() & 0x7fff_ffff, status: p.get_u32() }
            }
            TYPE_SETTINGS => {
                need(&p, 4, "SETTINGS")?;
                let n = p.get_u32() as usize;
                if p.len() != n.saturating_mul(8) {
                    return Err(malformed("SETTINGS", format!("{n} entries in {} bytes", p.len())));
                }
                let entries = (0..n)
                    .map(|_| {
                        let head = p.get_u32();
                        ((head >> 24) as u8, head & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                // SPDY/3 added the status; accept the older 4-byte form too.
                need(&p, 4, "GOAWAY")?;
                let last_good = p.get_u32() & 0x7fff_ffff;
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            TYPE_WINDOW_UPDATE => {
                need(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate { stream: p.get_u32() & 0x7fff_ffff, delta: p.get_u32() & 0x7fff_ffff }
            }
            other => Frame::Unknown { kind: other },
        })
    }
}

fn put_u24(dst: &mut BytesMut, n: usize) {
    dst.put_u8((n >> 16) as u8);
    dst.put_u8((n >> 8) as u8);
    dst.put_u8(n as u8);
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    let bad = |why: &str| FrameError::Headers(why.to_string());
    if b.len() < 4 {
        return Err(bad("no pair count"));
    }
    let n = b.get_u32();
    if n > MAX_HEADER_PAIRS {
        return Err(FrameError::Headers(format!("{n} pairs is over the limit of {MAX_HEADER_PAIRS}")));
    }
    let mut out = Vec::with_capacity(n as usize);
    let take = |b: &mut &[u8]| -> Result<String, FrameError> {
        if b.len() < 4 {
            return Err(bad("truncated length"));
        }
        let len = b.get_u32() as usize;
        if b.len() < len {
            return Err(bad("truncated string"));
        }
        let s = String::from_utf8(b[..len].to_vec()).map_err(|_| bad("not UTF-8"))?;
        b.advance(len);
        Ok(s)
    };
    for _ in 0..n {
        let name = take(&mut b)?;
        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        let value = take(&mut b)?;
        for v in value.split('\0') {
            out.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    Ok(out)
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 8 {
            return Ok(None);
        }
        let len = ((src[5] as usize) << 16) | ((src[6] as usize) << 8) | src[7] as usize;
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(8 + len).freeze();
        let first = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { stream: first & 0x7fff_ffff, fin: flags & FLAG_FIN != 0, data: frame }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        self.decode_control((first & 0xffff) as u16, flags, frame).map(Some)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_frame(frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn dictionary_is_the_drafts() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
    }

    #[test]
    fn frames_round_trip_with_one_compression_context_per_direction() {
        let mut a = FrameCodec::new();
        let mut b = FrameCodec::new();
        let frames = vec![
            Frame::SynStream { stream: 1, associated: 0, priority: 3, flags: 0, headers: h(&[("streamtype", "error")]) },
            Frame::SynStream { stream: 3, associated: 0, priority: 0, flags: FLAG_FIN, headers: h(&[("streamtype", "stdout"), ("port", "80")]) },
            Frame::SynReply { stream: 1, fin: false, headers: vec![] },
            Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"hello") },
            Frame::Data { stream: 3, fin: true, data: Bytes::new() },
            Frame::RstStream { stream: 5, status: rst::CANCEL },
            Frame::Settings { flags: 0, entries: vec![(0, 7, 65536)] },
            Frame::Ping { id: 2 },
            Frame::GoAway { last_good: 3, status: 0 },
            Frame::Headers { stream: 1, fin: false, headers: h(&[("x", "1")]) },
            Frame::WindowUpdate { stream: 0, delta: 1000 },
        ];
        let mut wire = BytesMut::new();
        for f in frames.clone() {
            a.encode(f, &mut wire).unwrap();
        }
        // Fed one byte at a time, the decoder must still get every frame.
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(f) = b.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn repeated_header_names_travel_nul_joined() {
        let mut a = FrameCodec::new();
        let mut b = FrameCodec::new();
        let mut wire = BytesMut::new();
        a.encode(Frame::SynReply { stream: 1, fin: false, headers: h(&[("A", "1"), ("a", "2")]) }, &mut wire).unwrap();
        let f = b.decode(&mut wire).unwrap().unwrap();
        assert_eq!(f, Frame::SynReply { stream: 1, fin: false, headers: h(&[("a", "1"), ("a", "2")]) });
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let mut c = FrameCodec::new();
        // Wrong version.
        let mut b = BytesMut::from(&[0x80, 0x02, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(c.decode(&mut b), Err(FrameError::Version(2))));
        // SYN_STREAM with garbage for a header block.
        let mut c = FrameCodec::new();
        let mut b = BytesMut::from(&[0x80, 0x03, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4][..]);
        assert!(c.decode(&mut b).is_err());
        // Short RST_STREAM.
        let mut c = FrameCodec::new();
        let mut b = BytesMut::from(&[0x80, 0x03, 0, 3, 0, 0, 0, 2, 0, 0][..]);
        assert!(c.decode(&mut b).is_err());
        // SETTINGS whose count does not match its length.
        let mut c = FrameCodec::new();
        let mut b = BytesMut::from(&[0x80, 0x03, 0, 4, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(c.decode(&mut b).is_err());
        // Unknown control types are passed up to be ignored.
        let mut c = FrameCodec::new();
        let mut b = BytesMut::from(&[0x80, 0x03, 0, 0x42, 0, 0, 0, 1, 9][..]);
        assert_eq!(c.decode(&mut b).unwrap(), Some(Frame::Unknown { kind: 0x42 }));
    }

    #[test]
    fn header_block_pair_limits() {
        let mut block = Vec::new();
        block.put_u32(5000);
        assert!(parse_header_block(&block).is_err());
        let mut block = Vec::new();
        block.put_u32(1);
        block.put_u32(100);
        block.put_slice(b"short");
        assert!(parse_header_block(&block).is_err());
    }
}
