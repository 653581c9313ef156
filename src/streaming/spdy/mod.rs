//! SPDY/3.1, the subset Kubernetes streaming uses: framing with compressed headers, and a
//! session that multiplexes streams over one connection.
pub mod frame;
pub mod session;

pub use frame::{header, Frame, FrameCodec, Headers};
pub use session::{Role, Session, SessionError, Stream, StreamWriter};
