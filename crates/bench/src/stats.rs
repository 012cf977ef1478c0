//! Latency histograms, percentiles, CPU accounting and the result table shared by the scenarios.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::proc_stats::{self, ProcStats};

/// Latencies up to a minute, in microseconds, three significant digits.
#[allow(clippy::expect_used)] // constant bounds, valid for hdrhistogram
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A histogram many tasks record into. Tasks that record per message batch their samples locally ([`Recorder`]) so
/// the lock is taken once per few hundred samples; a task with one sample to give (a storm client) adds it directly.
#[derive(Debug)]
pub struct SharedHistogram(Mutex<Histogram<u64>>);

impl SharedHistogram {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(new_histogram())))
    }

    pub fn add(&self, samples: &[u64]) {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for &us in samples {
            h.saturating_record(us.max(1));
        }
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A task's batch of samples for a [`SharedHistogram`].
pub struct Recorder {
    batch: Vec<u64>,
    shared: Arc<SharedHistogram>,
}

impl Recorder {
    const BATCH: usize = 512;

    pub fn new(shared: Arc<SharedHistogram>) -> Self {
        Self { batch: Vec::with_capacity(Self::BATCH), shared }
    }

    pub fn record(&mut self, us: u64) {
        self.batch.push(us);
        if self.batch.len() == Self::BATCH {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        self.shared.add(&self.batch);
        self.batch.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self { count: 0, mean: 0.0, p50: 0, p99: 0, p999: 0, max: 0 };
        }
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"count": self.count, "mean_us": self.mean, "p50_us": self.p50, "p99_us": self.p99,
               "p999_us": self.p999, "max_us": self.max})
    }

    /// `p50 0.21 ms, p99 1.30 ms, p99.9 2.10 ms, max 3.00 ms`
    pub fn human(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// CPU and memory of the server (if its PID is known) and of this tool, read at the start and end of a measured
/// interval.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The measured server's processes (several in `cluster`: both nodes and Redis); their figures are summed.
    servers: Vec<u32>,
    server_before: Option<ProcStats>,
    own_before: ProcStats,
}

/// What [`Usage::finish`] measured.
#[derive(Debug, Clone, Copy)]
pub struct UsageDelta {
    pub server_cpu: Option<Duration>,
    /// The kernel's part of `server_cpu`.
    pub server_system: Option<Duration>,
    pub server_rss_bytes: Option<u64>,
    pub own_cpu: Duration,
    pub wall: Duration,
}

impl Usage {
    pub fn start(servers: impl IntoIterator<Item = u32>) -> anyhow::Result<Self> {
        let servers: Vec<u32> = servers.into_iter().collect();
        Ok(Self { server_before: proc_stats::read_all(&servers)?, servers, own_before: proc_stats::own()? })
    }

    pub fn finish(&self, wall: Duration) -> anyhow::Result<UsageDelta> {
        let server_after = proc_stats::read_all(&self.servers)?;
        let own_after = proc_stats::own()?;
        Ok(UsageDelta {
            server_cpu: self.server_before.zip(server_after).map(|(b, a)| a.cpu.saturating_sub(b.cpu)),
            server_system: self.server_before.zip(server_after).map(|(b, a)| a.system.saturating_sub(b.system)),
            server_rss_bytes: server_after.map(|a| a.rss_bytes),
            own_cpu: own_after.cpu.saturating_sub(self.own_before.cpu),
            wall,
        })
    }
}

impl UsageDelta {
    /// Server CPU microseconds per unit of work (message, login, flow).
    pub fn server_us_per(&self, units: u64) -> Option<f64> {
        self.server_cpu.filter(|_| units > 0).map(|cpu| cpu.as_secs_f64() * 1e6 / units as f64)
    }

    /// The kernel's part of [`Self::server_us_per`].
    pub fn server_kernel_us_per(&self, units: u64) -> Option<f64> {
        self.server_system.filter(|_| units > 0).map(|cpu| cpu.as_secs_f64() * 1e6 / units as f64)
    }

    /// Cores this tool kept busy on average (1.0 = one core saturated).
    pub fn own_cores(&self) -> f64 {
        self.own_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn server_cores(&self) -> Option<f64> {
        self.server_cpu.map(|cpu| cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9))
    }

    /// Appends the usage rows to a table.
    pub fn rows(&self, units: u64, unit: &str, table: &mut Table) {
        if let (Some(cpu), Some(cores)) = (self.server_cpu, self.server_cores()) {
            table.row("server CPU", format!("{:.2} s ({cores:.2} cores)", cpu.as_secs_f64()));
        }
        if let (Some(per), Some(kernel)) = (self.server_us_per(units), self.server_kernel_us_per(units)) {
            table.row(format!("server CPU per {unit}"), format!("{per:.1} us (kernel {kernel:.1} us)"));
        }
        if let Some(rss) = self.server_rss_bytes {
            table.row("server RSS", format!("{:.1} MiB", rss as f64 / 1_048_576.0));
        }
        table.row(
            "load generator CPU",
            format!("{:.2} s ({:.2} cores{})", self.own_cpu.as_secs_f64(), self.own_cores(), self.saturation_note()),
        );
    }

    fn saturation_note(&self) -> &'static str {
        if self.own_cores() > 0.9 {
            "; the load generator may be the bottleneck"
        } else {
            ""
        }
    }

    pub fn json(&self, units: u64) -> Value {
        json!({
            "server_cpu_seconds": self.server_cpu.map(|c| c.as_secs_f64()),
            "server_cpu_us_per_unit": self.server_us_per(units),
            "server_kernel_us_per_unit": self.server_kernel_us_per(units),
            "server_rss_bytes": self.server_rss_bytes,
            "bench_cpu_seconds": self.own_cpu.as_secs_f64(),
            "bench_cores": self.own_cores(),
        })
    }
}

/// A two-column result table for people.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push((label.into(), value.into()));
    }

    pub fn render(&self, title: &str) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = format!("{title}\n");
        for (label, value) in &self.rows {
            out.push_str(&format!("  {label:<width$}  {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let shared = SharedHistogram::new();
        {
            let mut r = Recorder::new(shared.clone());
            // 1..=1000 us, one each: p50 ~500, p99 ~990, p99.9 ~999, max 1000.
            for us in 1..=1000 {
                r.record(us);
            }
        }
        let s = shared.summary();
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50), "{s:?}");
        assert!((989..=991).contains(&s.p99), "{s:?}");
        assert!((998..=1000).contains(&s.p999), "{s:?}");
        assert_eq!(s.max, 1000);
        assert!((s.mean - 500.5).abs() < 1.0);
    }

    #[test]
    fn empty_and_huge_values() {
        assert_eq!(SharedHistogram::new().summary().count, 0);
        let shared = SharedHistogram::new();
        let mut r = Recorder::new(shared.clone());
        r.record(0);
        r.record(u64::MAX);
        r.flush();
        let s = shared.summary();
        assert_eq!(s.count, 2, "clamped, not dropped");
        assert!(s.max >= 59_000_000);
    }

    #[test]
    fn table_aligns_values() {
        let mut t = Table::default();
        t.row("a", "1");
        t.row("longer", "2");
        assert_eq!(t.render("x"), "x\n  a       1\n  longer  2\n");
    }
}

/// Options every signaling scenario takes (`relay`, `cluster`, `storm`, `calls`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Server process id, to read its CPU time and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up after this long, whatever happens.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
    /// User names start with this prefix, followed by the client's (or pair's) number [default: unique per run].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}
