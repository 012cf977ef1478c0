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
