//! The STUN/TURN listeners around the sans-IO `switchboard_turn::TurnServer`: UDP worker threads, and TCP on the same
//! port.

pub mod tcp;
pub mod tls;
pub mod udp;

pub use udp::{start, RunningTurn, TurnListener};

/// Binds a relay socket on `relay_ip` for an allocation of the given family, on an even port if asked (the kernel
/// picks the port; for EVEN-PORT, a few tries until it picks an even one).
pub(crate) fn bind_relay(
    relay_ip: std::net::IpAddr,
    ipv6: bool,
    even_port: bool,
) -> Result<(std::net::UdpSocket, std::net::SocketAddr), switchboard_turn::server::RelayError> {
    use switchboard_turn::server::RelayError;
    if ipv6 != relay_ip.is_ipv6() {
        return Err(RelayError::Family);
    }
    for _ in 0..if even_port { 16 } else { 1 } {
        let socket =
            std::net::UdpSocket::bind(std::net::SocketAddr::new(relay_ip, 0)).map_err(|_| RelayError::Exhausted)?;
        let local = socket.local_addr().map_err(|_| RelayError::Exhausted)?;
        if even_port && local.port() % 2 == 1 {
            continue;
        }
        socket.set_nonblocking(true).map_err(|_| RelayError::Exhausted)?;
        return Ok((socket, local));
    }
    Err(RelayError::Exhausted)
}

/// Seconds since the Unix epoch, which date nonces and REST credentials.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
