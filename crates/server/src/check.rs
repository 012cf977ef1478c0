//! `switchboard check`: verifies from a client's side that the STUN/TURN service works with the address users are
//! told to use. The most common TURN deployment mistake is a relay address that clients cannot reach (a server behind
//! 1:1 NAT without `--turn-external-ip`); a Binding request alone does not catch it, so the check relays real data.
//!
//! Steps: Binding from two sockets (learning where the server sees them), Allocate with credentials minted like the
//! server's, CreatePermission for the second socket, a Send indication through the relay to it, and its reply back
//! through the relay. Run it from outside the server's network to test what users get.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use switchboard_turn::client::{ClientError, TurnClient};
use switchboard_turn::Credentials;

use crate::config::Config;

/// Arguments of `switchboard check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The STUN/TURN server to check, HOST:PORT [default: the host and port users are given (--turn-host,
    /// --turn-external-ip, or the listen address)].
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,

    /// Seconds to wait for each step.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub timeout: u64,
}

/// Runs the check, printing one line per step; an error names the failed step and the likely cause.
pub fn run(args: CheckArgs, config: &Config) -> anyhow::Result<()> {
    let turn = config.turn.as_ref().context("the built-in TURN server is off (--turn off): nothing to check")?;
    let server = match &args.server {
        Some(server) => server.clone(),
        None => {
            let listen = turn.listen.unwrap_or_else(|| SocketAddr::new(config.http.ip(), 3478));
            let host = turn
                .host
                .clone()
                .or_else(|| turn.external_ip.map(|ip| ip.to_string()))
                .unwrap_or_else(|| listen.ip().to_string());
            let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
            format!("{host}:{}", listen.port())
        }
    };
    let server = server
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {server}"))?
        .next()
        .with_context(|| format!("{server} resolves to no address"))?;
    let (username, password) = credentials(turn)?;
    let timeout = Duration::from_secs(args.timeout.clamp(1, 60));
    println!("checking STUN/TURN at {server} (UDP) as {username}");

    let unspecified: IpAddr =
        if server.is_ipv4() { [0, 0, 0, 0].into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    let bind = || UdpSocket::bind(SocketAddr::new(unspecified, 0)).context("cannot open a UDP socket");
    let mut client = TurnClient::new(bind()?, server, &username, &password);
    client.set_deadline(timeout);
    let mut peer = TurnClient::new(bind()?, server, &username, &password);
    peer.set_deadline(timeout);

    let mapped = client.binding().map_err(|e| step_failed("STUN Binding", e))?;
    let peer_mapped = peer.binding().map_err(|e| step_failed("STUN Binding (second socket)", e))?;
    println!("ok  STUN Binding: the server sees this host as {mapped}");

    let allocated = client.allocate().map_err(|e| step_failed("TURN Allocate", e))?;
    println!("ok  TURN Allocate: relayed address {} for {} s", allocated.relayed, allocated.lifetime);
    if is_private(allocated.relayed.ip()) && !is_private(mapped.ip()) {
        println!(
            "warn the relayed address {} is private while this host reached the server from {}: behind 1:1 NAT, \
             set --turn-external-ip to the public address",
            allocated.relayed.ip(),
            mapped.ip()
        );
    }

    client.create_permission(peer_mapped.ip()).map_err(|e| {
        if matches!(e, ClientError::Refused { code: 403, .. }) {
            anyhow::anyhow!(
                "TURN CreatePermission for {} was refused (403): that address is in the server's denied peer ranges \
                 (private, loopback...). Run the check from another network, or allow it with --turn-allow-peer",
                peer_mapped.ip()
            )
        } else {
            step_failed("TURN CreatePermission", e)
        }
    })?;
    println!("ok  TURN CreatePermission for {}", peer_mapped.ip());

    let probe = b"switchboard check";
    client.send_indication(peer_mapped, probe).map_err(|e| step_failed("TURN Send indication", e))?;
    let from = receive(peer.socket(), probe, timeout).with_context(|| {
        format!(
            "data sent through the relay did not arrive at {peer_mapped}: the relay ({}) cannot reach this host",
            allocated.relayed
        )
    })?;
    println!("ok  relay -> peer: data arrived from {from}");
    if from != allocated.relayed {
        println!(
            "warn data came from {from}, not from the advertised relayed address {}: clients would send to an \
             address the relay does not use (check --turn-external-ip and --turn-relay-ip)",
            allocated.relayed
        );
    }

    peer.socket().send_to(b"switchboard check reply", allocated.relayed).context("cannot answer through the relay")?;
    receive_data_indication(&client, timeout).with_context(|| {
        format!(
            "data sent to the relayed address {} did not come back through the server: the relay port is not \
             reachable (firewall, or a wrong --turn-external-ip)",
            allocated.relayed
        )
    })?;
    println!("ok  peer -> relay -> client: data came back through the server");
    let _ = client.refresh(0);
    println!("STUN and TURN work at {server}");
    Ok(())
}

/// Credentials the check authenticates with: the first static user, else ones minted with the first REST secret.
fn credentials(turn: &crate::config::TurnSettings) -> anyhow::Result<(String, String)> {
    if let Some((name, password)) = turn.users.first() {
        return Ok((name.clone(), password.clone()));
    }
    anyhow::ensure!(
        !turn.secrets.is_empty(),
        "no TURN credentials to check with: the server's secret is random per process unless turn-secrets is \
         configured; give the same --turn-secret (or a --turn-user) as the server"
    );
    let credentials = Credentials::new(turn.secrets.clone(), Default::default());
    let now = crate::turn::unix_now();
    let minted = credentials.mint("switchboard-check", now, 600).context("cannot mint TURN credentials")?;
    Ok((minted.username, minted.password))
}

fn step_failed(step: &str, error: ClientError) -> anyhow::Error {
    let hint = match &error {
        ClientError::Timeout(_) => ": no answer (is the server running, and UDP open in the firewall?)",
        ClientError::Refused { code: 401, .. } => ": the credentials were not accepted (same secret as the server?)",
        _ => "",
    };
    anyhow::anyhow!("{step} failed: {error}{hint}")
}

fn receive(socket: &UdpSocket, expected: &[u8], timeout: Duration) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "timed out");
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buffer) {
            Ok((len, from)) if &buffer[..len] == expected => return Ok(from),
            Ok(_) => {}
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

fn receive_data_indication(client: &TurnClient, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "timed out");
        client.socket().set_read_timeout(Some(left))?;
        match client.socket().recv_from(&mut buffer) {
            Ok((len, from)) if from == client.server() => {
                let Ok(message) = switchboard_stun::Message::parse(&buffer[..len]) else { continue };
                if message.method() == switchboard_stun::Method::DATA
                    && message.data() == Some(&b"switchboard check reply"[..])
                {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || (v6.segments()[0] & 0xFE00) == 0xFC00 || (v6.segments()[0] & 0xFFC0) == 0xFE80
        }
    }
}
