//! STUN/TURN over TCP (RFC 8656 section 3.1, framing per RFC 8489 6.2.2): one task per connection, owning the
//! connection's allocation and its relay socket, so nothing is shared on the packet path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::stream_frame_len;
use switchboard_turn::server::{Action, FiveTuple, RelayError, RelayId, Relays, Shared, Transport, TurnServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::unix_now;

/// Largest framed message accepted from a client (a ChannelData header plus the largest UDP payload).
const MAX_FRAME: usize = 4 + 65_535 + 3;
/// A connection that holds no allocation is closed after this long without traffic.
const IDLE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(60);

/// Accepts TURN-over-TCP connections until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, relay_ip: IpAddr) {
    let Ok(server) = listener.local_addr() else { return };
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                let tuple = FiveTuple { client, server, transport: Transport::Tcp };
                tokio::spawn(connection(stream, tuple, shared.clone(), relay_ip));
            }
            Err(error) => {
                tracing::warn!(%error, "TURN TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The one relay socket a stream connection can have (one 5-tuple, one allocation).
struct OneRelay {
    relay_ip: IpAddr,
    next: u64,
    socket: Option<(RelayId, UdpSocket)>,
}

impl Relays for OneRelay {
    fn open(&mut self, ipv6: bool, even_port: bool) -> Result<(RelayId, SocketAddr), RelayError> {
        let (socket, local) = super::bind_relay(self.relay_ip, ipv6, even_port)?;
        self.next += 1;
        let id = RelayId(self.next);
        self.socket = Some((id, socket));
        Ok((id, local))
    }

    fn close(&mut self, relay: RelayId) {
        if self.socket.as_ref().is_some_and(|(id, _)| *id == relay) {
            self.socket = None;
        }
    }
}

/// Serves one client stream (TCP, or TLS decrypted around it).
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tuple: FiveTuple,
    shared: Arc<Shared>,
    relay_ip: IpAddr,
) {
    let mut turn = TurnServer::new(shared);
    let mut relays = OneRelay { relay_ip, next: 0, socket: None };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input: Vec<u8> = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);
    let mut from_peer = vec![0u8; 65_536];
    let mut last_heard = Instant::now();
    loop {
        let deadline = match turn.poll_timeout() {
            Some(expiry) => tokio::time::Instant::from_std(expiry),
            None => tokio::time::Instant::from_std(last_heard + IDLE_WITHOUT_ALLOCATION),
        };
        let peer = async {
            match &relays.socket {
                Some((id, socket)) => (*id, socket.recv_from(&mut from_peer).await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => last_heard = Instant::now(),
                }
                // Every complete message in the buffer; a partial one waits for more bytes.
                loop {
                    let len = match stream_frame_len(&input) {
                        Ok(Some(len)) if len <= input.len() => len,
                        Ok(Some(len)) if len <= MAX_FRAME => break,
                        Ok(None) => break,
                        // Not STUN, not ChannelData, or absurdly long: the stream cannot be resynchronised.
                        _ => return turn.close_all(&mut relays),
                    };
                    let action = turn.handle_client(Instant::now(), unix_now(), tuple, &input[..len], &mut relays, &mut out);
                    match action {
                        Action::Nothing => {}
                        Action::ToClient(_) => {
                            if writer.write_all(&out).await.is_err() {
                                return turn.close_all(&mut relays);
                            }
                        }
                        Action::ToPeer { peer, range, .. } => {
                            if let Some((_, socket)) = &relays.socket {
                                let _ = socket.try_send_to(&input[range], peer);
                            }
                        }
                    }
                    input.drain(..len);
                }
            }
            (relay, received) = peer => {
                if let Ok((len, peer)) = received {
                    if let Action::ToClient(_) = turn.handle_peer(Instant::now(), relay, peer, &from_peer[..len], &mut out) {
                        if writer.write_all(&out).await.is_err() {
                            break;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                turn.handle_timeout(Instant::now(), &mut relays);
                if turn.allocation_count() == 0 && last_heard.elapsed() >= IDLE_WITHOUT_ALLOCATION {
                    break;
                }
            }
        }
    }
    turn.close_all(&mut relays);
}
