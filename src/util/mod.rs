//! Small helpers shared by every layer.
pub mod atomic;
pub mod digest;
pub mod keyed_lock;
pub mod net_dev;
pub mod netns;
pub mod openat2;
pub mod tls;
