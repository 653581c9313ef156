//! /proc/net/dev: per-interface counters, of the host or of a network namespace.
use std::path::Path;

/// One interface's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interface lines of /proc/net/dev (after its two header lines): a name, a colon, eight
/// receive and eight transmit columns.
pub fn parse(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.len() >= 16).then(|| InterfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// /proc/net/dev as seen inside the network namespace pinned at `netns`, from a short-lived
/// thread that joins it (setns changes only the calling thread, so the daemon's stay put).
pub fn read_in_netns(netns: &Path) -> Option<String> {
    let path = netns.to_path_buf();
    std::thread::spawn(move || -> Option<String> {
        let f = std::fs::File::open(&path).ok()?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        std::fs::read_to_string("/proc/thread-self/net/dev").ok()
    })
    .join()
    .ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_lines() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
eth0:    5000      40    1    2    0     0          0         0     7000      50    3    4    0     0       0          0\n";
        let i = parse(dev);
        assert_eq!(i.len(), 2);
        assert_eq!(
            i[1],
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 7000,
                tx_packets: 50,
                tx_errors: 3,
                tx_dropped: 4
            }
        );
    }
}
