//! Small helpers shared by every layer.
pub mod atomic;
pub mod digest;
pub mod duration;
pub mod keyed_lock;
pub mod mountinfo;
pub mod names;
pub mod net_dev;
pub mod netns;
pub mod openat2;
pub mod quantity;
pub mod sd_notify;
pub mod self_exe;
pub mod time;
pub mod tls;
