//! Resident memory and CPU time of a process, from `/proc`.

use std::time::Duration;

/// A reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// The system (kernel) part of `cpu`: on loopback mostly TCP, which a server's code decides only through how many
    /// system calls it makes and how much it sends.
    pub system: Duration,
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`.
pub fn read(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| fields.get(i).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
    let (user_ticks, system_ticks) = (field(11), field(12));
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    Ok(ProcStats {
        rss_bytes: rss_kib * 1024,
        cpu: Duration::from_millis((user_ticks + system_ticks) * 10),
        system: Duration::from_millis(system_ticks * 10),
    })
}

/// The sum of several processes' readings (the nodes of a cluster and its Redis); `None` for no process.
pub fn read_all(pids: &[u32]) -> anyhow::Result<Option<ProcStats>> {
    let mut total: Option<ProcStats> = None;
    for &pid in pids {
        let one = read(pid)?;
        let sum = total.get_or_insert(ProcStats { rss_bytes: 0, cpu: Duration::ZERO, system: Duration::ZERO });
        sum.rss_bytes += one.rss_bytes;
        sum.cpu += one.cpu;
        sum.system += one.system;
    }
    Ok(total)
}

/// This process's own reading.
pub fn own() -> anyhow::Result<ProcStats> {
    read(std::process::id())
}

/// Datagrams the kernel dropped because a socket's receive buffer was full, summed over the UDP sockets that process
/// `pid` holds (the `drops` column of `/proc/net/udp` and `udp6`, counted since each socket was opened). Tells a
/// server's losses from the load generator's own.
pub fn udp_drops(pid: u32) -> anyhow::Result<u64> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        if let Some(inode) = target.to_str().and_then(socket_inode) {
            inodes.insert(inode);
        }
    }
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        // A kernel without IPv6 has no udp6 table.
        if let Ok(text) = std::fs::read_to_string(table) {
            drops += drops_of(&text, &inodes);
        }
    }
    Ok(drops)
}

/// This process's own UDP drops.
pub fn own_udp_drops() -> anyhow::Result<u64> {
    udp_drops(std::process::id())
}

/// The inode of a `/proc/PID/fd` link to a socket, `socket:[INODE]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Sums the `drops` column (the last) of a `/proc/net/udp` table over the rows whose inode (the tenth column) is in
/// `inodes`.
fn drops_of(table: &str, inodes: &std::collections::HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let mut columns = row.split_whitespace();
            let inode: u64 = columns.nth(9)?.parse().ok()?;
            let drops: u64 = columns.last()?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1061: 0100007F:87C8 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 10068333 2 0000000000000000 736
 1234: 0100007F:CB66 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 10068351 2 0000000000000000 231
 2000: 0200007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 42 2 0000000000000000 5
";

    #[test]
    fn drops_are_summed_over_the_given_sockets_only() {
        let inodes = [10068333, 42].into_iter().collect();
        assert_eq!(drops_of(TABLE, &inodes), 741);
        assert_eq!(drops_of(TABLE, &Default::default()), 0);
    }

    #[test]
    fn only_socket_links_name_an_inode() {
        assert_eq!(socket_inode("socket:[10068333]"), Some(10068333));
        assert_eq!(socket_inode("pipe:[12]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn datagrams_dropped_at_a_full_socket_of_this_process_are_counted() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // With the smallest buffer the kernel allows, a burst cannot all fit: the rest is dropped and counted.
        socket2::SockRef::from(&socket).set_recv_buffer_size(1).unwrap();
        let before = own_udp_drops().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = socket.local_addr().unwrap();
        for _ in 0..200 {
            sender.send_to(&[0u8; 1000], target).unwrap();
        }
        assert!(own_udp_drops().unwrap() >= before + 100);
    }
}
