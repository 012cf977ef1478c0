//! A small blocking STUN/TURN client over UDP, for tools rather than browsers: the load generator's TURN scenario
//! and `switchboard check`. It does the long-term credential dance (401 with REALM and NONCE, then signed requests;
//! 438 refreshes the nonce), retransmits requests like RFC 8489 section 6.2.1 with a bounded total wait, and offers
//! the TURN requests a relay test needs. Unlike the rest of this crate it does IO, on a socket the caller provides.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchboard_stun::{attr, long_term_key_md5, Class, Integrity, Message, MessageWriter, Method, TransactionId};

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No response within the retransmission schedule.
    #[error("no response from the STUN/TURN server within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error response.
    #[error("the server refused the request: {code} {reason}")]
    Refused {
        /// STUN error code (e.g. 401, 403, 486).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// A success response lacked what it must carry, or failed its integrity check.
    #[error("malformed or unauthentic response: {0}")]
    BadResponse(&'static str),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a successful Allocate returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    /// The relayed transport address peers send to.
    pub relayed: SocketAddr,
    /// The client's address as the server saw it.
    pub mapped: Option<SocketAddr>,
    /// Granted lifetime in seconds.
    pub lifetime: u32,
}

/// A TURN client on one UDP socket (one 5-tuple, so at most one allocation).
pub struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    /// First retransmission timeout; doubles each time.
    rto: Duration,
    /// Total wait for one request.
    deadline: Duration,
    counter: u64,
    random: std::collections::hash_map::RandomState,
    out: Vec<u8>,
    input: Vec<u8>,
}

impl TurnClient {
    /// A client of `server` on `socket` (bound by the caller, e.g. to a chosen source address).
    pub fn new(socket: UdpSocket, server: SocketAddr, username: &str, password: &str) -> Self {
        Self {
            socket,
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
            key: None,
            rto: Duration::from_millis(250),
            deadline: Duration::from_secs(4),
            counter: 0,
            random: std::collections::hash_map::RandomState::new(),
            out: Vec::with_capacity(512),
            input: vec![0; 2048],
        }
    }

    /// Changes the total wait per request (default 4 s).
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// The client's socket (to send ChannelData and receive relayed data once set up).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// A STUN Binding request: the client's address as the server sees it. Needs no credentials.
    pub fn binding(&mut self) -> Result<SocketAddr, ClientError> {
        let response = self.transact(Method::BINDING, false, |_| {})?;
        let message = Message::parse(&self.input[..response]).map_err(|_| ClientError::BadResponse("binding"))?;
        message
            .xor_address(attr::XOR_MAPPED_ADDRESS)
            .ok()
            .flatten()
            .ok_or(ClientError::BadResponse("no XOR-MAPPED-ADDRESS"))
    }

    /// Allocates a UDP relay (RFC 8656 section 7.1).
    pub fn allocate(&mut self) -> Result<Allocated, ClientError> {
        let response = self.transact(Method::ALLOCATE, true, |writer| {
            writer.requested_transport(attr::TRANSPORT_UDP);
        })?;
        let message = Message::parse(&self.input[..response]).map_err(|_| ClientError::BadResponse("allocate"))?;
        let relayed = message
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .ok()
            .flatten()
            .ok_or(ClientError::BadResponse("no XOR-RELAYED-ADDRESS"))?;
        let mapped = message.xor_address(attr::XOR_MAPPED_ADDRESS).ok().flatten();
        let lifetime = message.lifetime().ok().flatten().unwrap_or(0);
        Ok(Allocated { relayed, mapped, lifetime })
    }

    /// Refreshes the allocation; 0 deletes it. Returns the granted lifetime.
    pub fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        let response = self.transact(Method::REFRESH, true, |writer| {
            writer.lifetime(lifetime);
        })?;
        let message = Message::parse(&self.input[..response]).map_err(|_| ClientError::BadResponse("refresh"))?;
        Ok(message.lifetime().ok().flatten().unwrap_or(0))
    }

    /// Installs a permission for `peer`'s IP address.
    pub fn create_permission(&mut self, peer: IpAddr) -> Result<(), ClientError> {
        self.transact(Method::CREATE_PERMISSION, true, |writer| {
            writer.xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::new(peer, 0));
        })?;
        Ok(())
    }

    /// Binds `channel` (0x4000..=0x4FFF) to `peer`, which also installs a permission for its IP.
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), ClientError> {
        self.transact(Method::CHANNEL_BIND, true, |writer| {
            writer.channel_number(channel);
            writer.xor_address(attr::XOR_PEER_ADDRESS, peer);
        })?;
        Ok(())
    }

    /// Sends `data` to `peer` in a Send indication (needs a permission; no response).
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), ClientError> {
        let tid = self.next_tid();
        let mut writer = MessageWriter::new(&mut self.out, Method::SEND, Class::Indication, tid);
        writer.xor_address(attr::XOR_PEER_ADDRESS, peer);
        writer.attr(attr::DATA, data);
        writer.fingerprint();
        let bytes = writer.finish().map_err(|_| ClientError::BadResponse("data too long"))?;
        self.socket.send_to(bytes, self.server)?;
        Ok(())
    }

    fn next_tid(&mut self) -> TransactionId {
        self.counter += 1;
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.counter);
        let high = hasher.finish();
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&high.to_be_bytes());
        tid[8..].copy_from_slice(&(self.counter as u32).to_be_bytes());
        TransactionId(tid)
    }

    /// Sends a request until a response with its transaction id arrives; answers a 401/438 challenge once by signing
    /// with the realm and nonce it carries. Returns the length of the success response in `self.input`.
    fn transact(
        &mut self,
        method: Method,
        authenticated: bool,
        attributes: impl Fn(&mut MessageWriter<'_>),
    ) -> Result<usize, ClientError> {
        // Two challenges at most: the first 401 teaches realm and nonce; a 438 later renews the nonce.
        for _ in 0..3 {
            let tid = self.next_tid();
            let mut writer = MessageWriter::new(&mut self.out, method, Class::Request, tid);
            attributes(&mut writer);
            if authenticated {
                if let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) {
                    writer.text(attr::USERNAME, &self.username);
                    writer.text(attr::REALM, realm);
                    writer.text(attr::NONCE, nonce);
                    writer.integrity(key);
                }
            }
            writer.fingerprint();
            let len = writer.finish().map_err(|_| ClientError::BadResponse("request too long"))?.len();
            let response = self.exchange(tid, len)?;
            let message =
                Message::parse(&self.input[..response]).map_err(|_| ClientError::BadResponse("unparsable"))?;
            match message.class() {
                Class::Success => {
                    if authenticated {
                        let key = self.key.ok_or(ClientError::BadResponse("success without a challenge"))?;
                        if !matches!(message.check_integrity(&key), Integrity::Valid { .. }) {
                            return Err(ClientError::BadResponse("MESSAGE-INTEGRITY does not verify"));
                        }
                    }
                    return Ok(response);
                }
                Class::Error => {
                    let (code, reason) = message.error_code().ok().flatten().unwrap_or((0, ""));
                    let challenge = code == 401 && self.key.is_none() || code == 438;
                    if !(authenticated && challenge) {
                        return Err(ClientError::Refused { code, reason: reason.to_owned() });
                    }
                    let realm = message.realm().ok().flatten().map(str::to_owned);
                    let nonce = message.nonce().ok().flatten().map(str::to_owned);
                    let (Some(realm), Some(nonce)) = (realm.or_else(|| self.realm.clone()), nonce) else {
                        return Err(ClientError::Refused { code, reason: reason.to_owned() });
                    };
                    self.key = Some(long_term_key_md5(&self.username, &realm, &self.password));
                    self.realm = Some(realm);
                    self.nonce = Some(nonce);
                }
                _ => return Err(ClientError::BadResponse("not a response")),
            }
        }
        Err(ClientError::Refused { code: 401, reason: "credentials not accepted".into() })
    }

    /// Sends `self.out[..len]` and waits for the response to `tid`, retransmitting on the RTO schedule.
    fn exchange(&mut self, tid: TransactionId, len: usize) -> Result<usize, ClientError> {
        let start = Instant::now();
        let mut rto = self.rto;
        loop {
            self.socket.send_to(&self.out[..len], self.server)?;
            let resend_at = Instant::now() + rto;
            loop {
                let now = Instant::now();
                let wait = resend_at.min(start + self.deadline).saturating_duration_since(now);
                if wait.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(wait))?;
                match self.socket.recv_from(&mut self.input) {
                    Ok((n, from)) if from == self.server => {
                        let Ok(message) = Message::parse(&self.input[..n]) else { continue };
                        if message.transaction_id() == tid {
                            return Ok(n);
                        }
                    }
                    Ok(_) => {}
                    Err(error)
                        if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            if start.elapsed() >= self.deadline {
                return Err(ClientError::Timeout(self.deadline));
            }
            rto *= 2;
        }
    }
}
