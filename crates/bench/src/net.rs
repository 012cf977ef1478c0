//! What every scenario needs from the network: a loopback-only target, spread source addresses, the file limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use tokio::net::{TcpSocket, TcpStream};

/// A WebSocket URL the load may go to: `ws://` with a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as written in the URL, for the `Host` header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH` and refuses anything but loopback: this tool never loads a remote host.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("ws://").context("only ws:// URLs (no TLS)")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        let addr: SocketAddr = match authority.strip_prefix("localhost:") {
            Some(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port.parse().context("bad port")?),
            None => authority.parse().context("the URL must name an IP address (or localhost) and a port")?,
        };
        anyhow::ensure!(addr.ip().is_loopback(), "load goes to loopback addresses only, not {}", addr.ip());
        Ok(Self { addr, authority: authority.to_string(), path })
    }

    /// The same server with another path (and query).
    pub fn with_path(&self, path: String) -> Self {
        Self { path, ..self.clone() }
    }
}

/// Source address for client `i`: spread over 127.0.0.2-127.0.0.254 so that no single source address runs out of
/// ephemeral ports (about 28,000 per source address and destination).
pub fn source_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 253) as u8))
}

/// Opens a TCP connection to `target` from client `i`'s source address, with Nagle off (signaling messages are
/// small and latency-bound).
pub async fn connect(target: SocketAddr, i: usize) -> anyhow::Result<TcpStream> {
    let stream = if target.is_ipv4() {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source_address(i), 0)).context("bind the source address")?;
        socket.connect(target).await
    } else {
        // All of ::1 is one address: nothing to spread over.
        TcpSocket::new_v6()?.connect(target).await
    }
    .with_context(|| format!("connect to {target}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Raises this process's open-file limit to its hard limit and returns the new soft limit (0 if unknown).
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Fails early when `connections` sockets would not fit under the file limit.
pub fn ensure_fd_room(connections: usize) -> anyhow::Result<()> {
    let limit = raise_fd_limit();
    anyhow::ensure!(
        limit == 0 || (connections as u64) < limit.saturating_sub(64),
        "{connections} connections need more file descriptors than the limit of {limit}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/ws");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(Target::parse("ws://127.0.0.1:9").unwrap().path, "/");
        assert_eq!(Target::parse("ws://[::1]:9/peerjs?a=b").unwrap().path, "/peerjs?a=b");
        assert_eq!(Target::parse("ws://127.0.0.1:9?x=1").unwrap().path, "/?x=1");
        assert_eq!(Target::parse("ws://localhost:9/").unwrap().addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(Target::parse("ws://127.1.2.3:9/").unwrap().addr.port(), 9);
    }

    #[test]
    fn other_urls_are_refused() {
        for url in [
            "ws://10.0.0.1:80/",
            "ws://192.168.1.1:80/",
            "ws://8.8.8.8:80/",
            "wss://127.0.0.1:1/",
            "ws://example.org:80/",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn sources_stay_in_loopback_and_skip_the_server_address() {
        for i in 0..1000 {
            let IpAddr::V4(ip) = source_address(i) else { panic!() };
            assert!(ip.is_loopback());
            assert!(ip.octets()[3] >= 2 && ip.octets()[3] <= 254);
        }
    }
}
