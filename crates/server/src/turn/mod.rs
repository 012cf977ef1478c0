//! The STUN/TURN listeners around the sans-IO `switchboard_turn::TurnServer`: UDP worker threads, and TCP on the same
//! port.

pub mod tcp;
pub mod tls;
pub mod udp;

pub use udp::{start, RunningTurn, TurnListener};

/// Receive buffer asked for each relay socket, in bytes.
const RELAY_RECV_BUFFER: usize = 1 << 20;

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
        // A peer's burst (a video keyframe) must not overflow the default buffer while the worker is busy. A buffer is
        // a limit, not memory taken up front.
        let socket = switchboard_udp::bind_with_recv_buffer(std::net::SocketAddr::new(relay_ip, 0), RELAY_RECV_BUFFER)
            .map_err(|_| RelayError::Exhausted)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel grants for a requested receive buffer: capped at `rmem_max`, then doubled for bookkeeping.
    fn granted(requested: usize) -> usize {
        let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(requested);
        2 * requested.min(rmem_max)
    }

    #[test]
    fn relay_sockets_ask_for_a_receive_buffer_larger_than_the_default() {
        for even_port in [false, true] {
            let (socket, local) = bind_relay("127.0.0.1".parse().unwrap(), false, even_port).unwrap();
            assert!(local.ip().is_loopback());
            assert!(!even_port || local.port() % 2 == 0);
            let buffer = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
            assert_eq!(buffer, granted(RELAY_RECV_BUFFER), "even port: {even_port}");
        }
    }

    #[test]
    fn a_relay_of_the_other_family_is_refused() {
        assert!(matches!(
            bind_relay("127.0.0.1".parse().unwrap(), true, false),
            Err(switchboard_turn::server::RelayError::Family)
        ));
    }
}
