//! `/readyz`: whether this process can serve, as a registry of named checks.
//!
//! Each input to readiness is a [`ReadinessCheck`] registered under a name ("http", "turn", "cluster" for
//! a backend's reachability). A check is asynchronous, so it may probe something (the TURN check sends a STUN
//! Binding request to the server's own port) or just read a state that another task maintains (a closure, or a
//! [`Flag`]). `/readyz` runs every check concurrently, each bounded by [`CHECK_TIMEOUT`], and is not ready if any
//! fails, or once shutdown has begun.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use switchboard_stun::{Class, Message, MessageWriter, Method, TransactionId};

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a check returns: `Err` says, for the operator, what is wrong.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One input to readiness.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Ok when this part can serve.
    fn check(&self) -> CheckFuture<'_>;
}

/// Any `Fn() -> Result<(), String>` is a check that reads a state synchronously.
impl<F> ReadinessCheck for F
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    fn check(&self) -> CheckFuture<'_> {
        let result = self();
        Box::pin(std::future::ready(result))
    }
}

/// A state that another task sets: up or down, with the reason it gives when down. Clones share the state.
#[derive(Debug, Clone)]
pub struct Flag(Arc<(AtomicBool, &'static str)>);

impl Flag {
    /// A flag, initially `up` or not.
    pub fn new(up: bool, down_reason: &'static str) -> Self {
        Self(Arc::new((AtomicBool::new(up), down_reason)))
    }

    /// Sets the state.
    pub fn set(&self, up: bool) {
        self.0 .0.store(up, Ordering::Relaxed);
    }
}

impl ReadinessCheck for Flag {
    fn check(&self) -> CheckFuture<'_> {
        let (up, down_reason) = &*self.0;
        let result = if up.load(Ordering::Relaxed) { Ok(()) } else { Err((*down_reason).to_owned()) };
        Box::pin(std::future::ready(result))
    }
}

/// The outcome of every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Shutdown has begun.
    pub shutting_down: bool,
    /// Each check by name, in registration order.
    pub checks: Vec<(String, Result<(), String>)>,
}

impl Report {
    /// Ready: every check passed and no shutdown.
    pub fn ready(&self) -> bool {
        !self.shutting_down && self.checks.iter().all(|(_, result)| result.is_ok())
    }

    /// The names of what is not ready (`shutdown` when shutting down).
    pub fn not_ready(&self) -> Vec<&str> {
        let shutdown = self.shutting_down.then_some("shutdown");
        shutdown
            .into_iter()
            .chain(self.checks.iter().filter(|(_, result)| result.is_err()).map(|(name, _)| name.as_str()))
            .collect()
    }
}

/// The registry of checks.
#[derive(Default)]
pub struct Readiness {
    checks: RwLock<Vec<(String, Arc<dyn ReadinessCheck>)>>,
    shutting_down: AtomicBool,
}

impl Readiness {
    /// Adds a check under `name` (a second one under the same name replaces the first).
    pub fn register(&self, name: impl Into<String>, check: impl ReadinessCheck) {
        let name = name.into();
        let mut checks = self.checks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        checks.retain(|(existing, _)| *existing != name);
        checks.push((name, Arc::new(check)));
    }

    /// From now on, not ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Runs every check concurrently, each within [`CHECK_TIMEOUT`].
    pub async fn report(&self) -> Report {
        let checks: Vec<(String, Arc<dyn ReadinessCheck>)> =
            self.checks.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let running: Vec<_> = checks
            .into_iter()
            .map(|(name, check)| {
                let task = tokio::spawn(async move {
                    match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                        Ok(result) => result,
                        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                    }
                });
                (name, task)
            })
            .collect();
        let mut report = Report { shutting_down: self.shutting_down(), checks: Vec::with_capacity(running.len()) };
        for (name, task) in running {
            let result = task.await.unwrap_or_else(|_| Err("the check failed".to_owned()));
            report.checks.push((name, result));
        }
        report
    }
}

/// Checks the STUN/TURN UDP listener by asking it for a Binding, as a client would. A listener on an unspecified
/// address is asked on loopback.
pub struct StunProbe {
    target: SocketAddr,
}

impl StunProbe {
    /// A probe of the listener bound to `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self { target: SocketAddr::new(ip, listen.port()) }
    }

    async fn probe(&self) -> Result<(), String> {
        let local: SocketAddr =
            if self.target.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket =
            tokio::net::UdpSocket::bind(local).await.map_err(|e| format!("cannot open a probe socket: {e}"))?;
        let tid = TransactionId(rand::random());
        let mut request = Vec::new();
        MessageWriter::new(&mut request, Method::BINDING, Class::Request, tid)
            .finish()
            .map_err(|_| "cannot encode a Binding request".to_owned())?;
        let mut buffer = [0u8; 512];
        // UDP may lose a datagram even on loopback under load: ask a few times within the check's time.
        for _ in 0..3 {
            socket.send_to(&request, self.target).await.map_err(|e| format!("cannot reach {}: {e}", self.target))?;
            let answer = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buffer)).await;
            if let Ok(Ok((len, from))) = answer {
                let answered = from == self.target
                    && Message::parse(&buffer[..len])
                        .is_ok_and(|message| message.transaction_id() == tid && message.class() == Class::Success);
                if answered {
                    return Ok(());
                }
            }
        }
        Err(format!("no answer to a STUN Binding request from {}", self.target))
    }
}

impl ReadinessCheck for StunProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self.probe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_check_or_a_shutdown_makes_it_not_ready() {
        let readiness = Readiness::default();
        let backend = Flag::new(true, "the backend is unreachable");
        readiness.register("http", || Ok(()));
        readiness.register("backend", backend.clone());
        let report = readiness.report().await;
        assert!(report.ready(), "{report:?}");
        backend.set(false);
        let report = readiness.report().await;
        assert!(!report.ready());
        assert_eq!(report.not_ready(), vec!["backend"]);
        assert_eq!(report.checks[1].1, Err("the backend is unreachable".to_owned()));
        backend.set(true);
        readiness.begin_shutdown();
        let report = readiness.report().await;
        assert_eq!(report.not_ready(), vec!["shutdown"]);
    }

    #[tokio::test]
    async fn a_stun_probe_of_a_silent_port_fails() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let probe = StunProbe::new(silent.local_addr().unwrap());
        let result = probe.check().await;
        assert!(result.is_err(), "{result:?}");
    }
}
