//! STUN/TURN over TCP (RFC 8656 section 3.1, framing per RFC 8489 6.2.2): one task per connection, owning the
//! connection's allocation and its relay socket, so nothing is shared on the packet path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::stream_frame_len;
use switchboard_turn::server::{Action, FiveTuple, RelayError, RelayId, Relays, Shared, Transport, TurnServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Semaphore};

use super::unix_now;

/// Largest framed message accepted from a client: the largest STUN message (20-byte header, 65,532 bytes of
/// attributes) or ChannelData (4-byte header, 65,535 bytes, padding).
const MAX_FRAME: usize = 20 + 65_532 + 4;
/// A connection that holds no allocation is closed after this long without a complete message.
const IDLE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(60);
/// A client that does not take what the server writes for this long is dropped, so that it cannot pin the task (and
/// its allocation) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// Datagrams from peers land here; shared by every connection of the thread (see `serve_stream`).
    static PEER_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65_536]);
}

/// What every stream connection shares: the TURN state, the relay address, the connection limit and the stop switch.
#[derive(Clone)]
pub struct StreamContext {
    /// Settings, credentials, policy, quotas.
    pub shared: Arc<Shared>,
    /// Where relay sockets bind.
    pub relay_ip: IpAddr,
    /// Connections (TCP and TLS together) allowed at once; more are closed at accept.
    pub permits: Arc<Semaphore>,
    /// Connections open per client address (the HTTP listener's `max-connections-per-ip`, counted separately), so
    /// that one address cannot take every stream slot.
    pub admission: Arc<crate::limits::Admission>,
    /// Set on shutdown: every connection ends and frees its allocation.
    pub stopped: watch::Receiver<bool>,
}

impl StreamContext {
    /// Admits a connection from `client`, or refuses it (the caller drops the stream unread): past its address's
    /// open connections or past the total.
    pub fn admit(&self, client: SocketAddr) -> Option<crate::limits::ConnectionPermit> {
        self.admission.admit_connection(&self.permits, client.ip())
    }
}

/// Accepts TURN-over-TCP connections until the task is aborted.
pub async fn serve(listener: TcpListener, context: StreamContext) {
    let Ok(server) = listener.local_addr() else { return };
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let Some(admitted) = context.admit(client) else { continue };
                let _ = stream.set_nodelay(true);
                let tuple = FiveTuple { client, server, transport: Transport::Tcp };
                let context = context.clone();
                tokio::spawn(async move {
                    connection(stream, tuple, context).await;
                    drop(admitted);
                });
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
        let socket = UdpSocket::from_std(socket).map_err(|_| RelayError::Exhausted)?;
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
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, tuple: FiveTuple, context: StreamContext) {
    let StreamContext { shared, relay_ip, mut stopped, .. } = context;
    let mut turn = TurnServer::new(shared);
    let mut relays = OneRelay { relay_ip, next: 0, socket: None };
    serve_stream(stream, tuple, &mut turn, &mut relays, &mut stopped).await;
    turn.close_all(&mut relays);
}

async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tuple: FiveTuple,
    turn: &mut TurnServer,
    relays: &mut OneRelay,
    stopped: &mut watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input: Vec<u8> = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);

    let mut last_message = Instant::now();
    loop {
        if *stopped.borrow() {
            return;
        }
        let deadline = match (turn.allocation_count(), turn.poll_timeout()) {
            (0, _) | (_, None) => last_message + IDLE_WITHOUT_ALLOCATION,
            (_, Some(expiry)) => expiry,
        };
        let peer = async {
            match &relays.socket {
                Some((id, socket)) => (*id, socket.readable().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut input) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                // Every complete message in the buffer; a partial one waits for more bytes. Consumed bytes are
                // removed once per read, not once per message.
                let mut consumed = 0;
                loop {
                    let rest = &input[consumed..];
                    let len = match stream_frame_len(rest) {
                        Ok(Some(len)) if len <= rest.len() => len,
                        Ok(Some(len)) if len <= MAX_FRAME => break,
                        Ok(None) => break,
                        // Not STUN, not ChannelData, or absurdly long: the stream cannot be resynchronised.
                        _ => return,
                    };
                    last_message = Instant::now();
                    let frame = &input[consumed..consumed + len];
                    match turn.handle_client(Instant::now(), unix_now(), tuple, frame, relays, &mut out) {
                        Action::Nothing => {}
                        Action::ToClient(_) => {
                            if !write(&mut writer, &out).await {
                                return;
                            }
                        }
                        Action::ToPeer { peer, range, .. } => {
                            if let Some((_, socket)) = &relays.socket {
                                let _ = socket.try_send_to(&frame[range], peer);
                            }
                        }
                    }
                    consumed += len;
                }
                input.drain(..consumed);
            }
            (relay, ready) = peer => {
                let Some((_, socket)) = &relays.socket else { continue };
                if ready.is_err() {
                    continue;
                }
                // Read into the worker thread's buffer, synchronously: a connection keeps no 64 KiB buffer of its own.
                let action = PEER_BUFFER.with_borrow_mut(|buffer| match socket.try_recv_from(buffer) {
                    Ok((len, peer)) => turn.handle_peer(Instant::now(), relay, peer, &buffer[..len], &mut out),
                    Err(_) => Action::Nothing,
                });
                if action != Action::Nothing && !write(&mut writer, &out).await {
                    return;
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                turn.handle_timeout(Instant::now(), relays);
                if turn.allocation_count() == 0 && last_message.elapsed() >= IDLE_WITHOUT_ALLOCATION {
                    return;
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// Writes `bytes`, giving up on a client that does not read; false when the connection should end.
async fn write<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await, Ok(Ok(())))
}
