//! A scheduling hint for the writer thread. The writer runs in short bursts between fsyncs;
//! on a busy machine, a thread woken when its fsync completes can wait for the next scheduler
//! tick (4 ms at 250 Hz) before it runs again, and every commit pays that. Since Linux 6.12
//! (EEVDF) a thread may ask for a shorter slice (`sched_attr.sched_runtime` for SCHED_OTHER),
//! which lets it preempt on wake-up instead; the writer asks for the shortest, 100 µs. Its
//! policy and nice value are kept; older kernels ignore the field. Nothing else is changed.

/// `struct sched_attr` of sched_setattr(2).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const SHORT_SLICE_NS: u64 = 100_000;
const SCHED_OTHER: u32 = 0;

/// Asks for short slices for the calling thread if it runs under SCHED_OTHER.
pub(crate) fn prefer_short_slices() {
    let size = std::mem::size_of::<SchedAttr>() as u32;
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` bytes into `attr`, a repr(C) struct of that
    // size; pid 0 is the calling thread.
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0) };
    if got != 0 || attr.policy != SCHED_OTHER {
        return;
    }
    attr.size = size;
    attr.flags = 0;
    attr.runtime = SHORT_SLICE_NS;
    // SAFETY: sched_setattr reads `size` bytes from `attr`; pid 0 is the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if set != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cluster store: no short scheduling slices for the writer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> SchedAttr {
        let mut attr = SchedAttr::default();
        // SAFETY: as in prefer_short_slices.
        let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, std::mem::size_of::<SchedAttr>() as u32, 0) };
        assert_eq!(got, 0);
        attr
    }

    #[test]
    fn the_hint_keeps_the_threads_policy_and_nice_value() {
        std::thread::spawn(|| {
            let before = current();
            prefer_short_slices();
            let after = current();
            assert_eq!((after.policy, after.nice), (before.policy, before.nice));
        })
        .join()
        .unwrap();
    }
}
