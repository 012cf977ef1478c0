//! A lean WebSocket client for load generation (RFC 6455, client side; it can take compressed messages from the
//! server, permessage-deflate, see `inflate.rs`, but sends its own uncompressed).
//!
//! The load generator shares the machine's cores with the server it measures, so every cycle it spends is taken from
//! the server. This client decodes frames in place in its read buffer and hands them out as slices, renders (and
//! masks) outgoing frames straight into its write buffer, and sends many frames in one `write` call. A connection
//! holds a read buffer only while it has bytes to decode; between reads the buffer waits, warm, in its thread's
//! spares, so thousands of idle clients cost no buffer memory. No allocation per message once the buffers have grown.

use std::ops::Range;

use anyhow::Context;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead as _, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::{self, Target};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The read buffer a connection takes when bytes arrive (it holds none while it has nothing undecoded); it grows for
/// larger frames (a `welcome` listing 10,000 users is ~400 KB uncompressed). One size for all: buffers are shared
/// through the thread's spares, and a smaller first size had busy connections hop between sizes, copying.
const READ_CHUNK: usize = 64 * 1024;
// The handshake reads the response head into the first buffer.
const _: () = assert!(READ_CHUNK >= MAX_HEAD);
/// Largest message accepted from a server.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest HTTP response head accepted during the handshake.
const MAX_HEAD: usize = 16 * 1024;

/// Whether a connection offers permessage-deflate, and how it inflates (`storm --deflate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// No offer: the server sends plain text.
    Off,
    /// Offered; frames seen before by this thread are not inflated again (see `inflate.rs`).
    Shared,
    /// Offered; every message inflated by itself, as a browser does.
    Each,
}

/// The offer: no compression state kept between messages either way, as a server with many clients wants.
const DEFLATE_OFFER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// What [`WsConn::next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text or binary message; read it with [`WsConn::payload`] before the next [`WsConn::fill`].
    Message(Payload),
    /// The server closed the connection, with its close code if it gave one.
    Close(Option<u16>),
}

/// Where a message's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    range: Range<usize>,
    /// Reassembled from fragments (in `WsConn::fragments`) rather than in the read buffer.
    reassembled: bool,
}

/// What a scenario's hot loop needs from a client connection, so that the lean client can be compared with
/// tokio-tungstenite under the same load (`relay --client`).
#[allow(async_fn_in_trait)] // used with static dispatch only
pub trait Transport {
    /// Appends a text frame; `fill` appends its `len` payload bytes to the vector it is given.
    fn queue_text_with(&mut self, len: usize, fill: impl FnOnce(&mut Vec<u8>));
    /// Appends a close frame.
    fn queue_close(&mut self);
    /// Writes everything queued.
    async fn flush(&mut self) -> anyhow::Result<()>;
    /// Waits for more input; cancel-safe.
    async fn fill(&mut self) -> anyhow::Result<()>;
    /// The next complete message already read, if any.
    fn next(&mut self) -> anyhow::Result<Option<Incoming>>;
    /// The bytes of the message the last [`Transport::next`] returned.
    fn payload(&self, payload: &Payload) -> &[u8];

    fn queue_text(&mut self, text: &[u8]) {
        self.queue_text_with(text.len(), |out| out.extend_from_slice(text));
    }
}

/// Read buffers not in use, kept per thread: full-sized ones, and a few grown for large frames.
struct SpareBuffers {
    buffers: Vec<Vec<u8>>,
}

/// Spare buffers kept per thread; beyond this, a buffer given back is freed.
const MAX_SPARES: usize = 64;

impl SpareBuffers {
    /// A buffer of `len` to `at_most` bytes: the spare given back last if it fits, else the smallest that does, or
    /// a new one of `len`.
    fn take(&mut self, len: usize, at_most: usize) -> Vec<u8> {
        // The one given back last, if it fits: connections that return their buffer whenever they have read
        // everything take one per read, and a scan of every spare each time would cost more than the read.
        if let Some(buffer) = self.buffers.pop_if(|b| (len..=at_most).contains(&b.len())) {
            return buffer;
        }
        let fitting = self
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| (len..=at_most).contains(&b.len()))
            .min_by_key(|(_, b)| b.len());
        match fitting.map(|(i, _)| i) {
            // A spare's stale bytes are never read: a connection reads only what it received into it.
            Some(i) => self.buffers.swap_remove(i),
            None => vec![0; len],
        }
    }

    /// Keeps `buffer` as a spare. When the spares are full, the largest of them and `buffer` is the one freed, so
    /// that small buffers stay available for connections going back to one.
    fn put(&mut self, buffer: Vec<u8>) {
        if self.buffers.len() < MAX_SPARES {
            self.buffers.push(buffer);
            return;
        }
        let largest = self.buffers.iter().enumerate().max_by_key(|(_, b)| b.len()).map(|(i, b)| (i, b.len()));
        if let Some((i, _)) = largest.filter(|&(_, len)| len > buffer.len()) {
            self.buffers[i] = buffer;
        }
    }
}

thread_local! {
    static SPARE_BUFFERS: std::cell::RefCell<SpareBuffers> =
        const { std::cell::RefCell::new(SpareBuffers { buffers: Vec::new() }) };
}

/// Large buffers for inflated text kept per thread (see [`WsConn::next`]).
const MAX_TEXT_BUFFERS: usize = 4;

thread_local! {
    static TEXT_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn spares_take(len: usize, at_most: usize) -> Vec<u8> {
    SPARE_BUFFERS.with_borrow_mut(|spares| spares.take(len, at_most))
}

fn spares_put(buffer: Vec<u8>) {
    SPARE_BUFFERS.with_borrow_mut(|spares| spares.put(buffer));
}

/// One client connection.
pub struct WsConn {
    stream: TcpStream,
    read: Vec<u8>,
    /// Undecoded bytes are `read[start..end]`.
    start: usize,
    end: usize,
    write: Vec<u8>,
    fragments: Vec<u8>,
    fragmented: bool,
    mask_state: u32,
    /// permessage-deflate was negotiated, and how this connection inflates.
    compression: Compression,
    /// The compressed message being received.
    inflating: Option<crate::inflate::MessageInflater>,
    /// Bytes read from the socket since the handshake.
    pub bytes_read: u64,
}

impl WsConn {
    /// Connects from client `i`'s source address and performs the opening handshake.
    pub async fn connect(target: &Target, i: usize) -> anyhow::Result<Self> {
        Self::connect_with(target, i, Compression::Off).await
    }

    /// [`WsConn::connect`], offering permessage-deflate unless `compression` is off.
    pub async fn connect_with(target: &Target, i: usize, compression: Compression) -> anyhow::Result<Self> {
        let stream = net::connect(target.addr, i).await?;
        let mut conn = Self {
            stream,
            read: spares_take(READ_CHUNK, READ_CHUNK),
            start: 0,
            end: 0,
            // Grown on demand: most clients write a login and little else, and 10,000 write buffers of 64 KiB each
            // cost a freshly faulted page apiece.
            write: Vec::new(),
            fragments: Vec::new(),
            fragmented: false,
            // Masking keys need not be secret here (the peer is our own loopback server), only varied.
            mask_state: 0x9E37_79B9 ^ (i as u32).wrapping_mul(0x85EB_CA6B) | 1,
            compression,
            inflating: None,
            bytes_read: 0,
        };
        conn.handshake(target).await?;
        Ok(conn)
    }

    async fn handshake(&mut self, target: &Target) -> anyhow::Result<()> {
        let mut key_bytes = [0u8; 16];
        for chunk in key_bytes.chunks_mut(4) {
            chunk.copy_from_slice(&self.next_mask().to_le_bytes());
        }
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let offer = match self.compression {
            Compression::Off => String::new(),
            Compression::Shared | Compression::Each => format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n"),
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            target.path, target.authority
        );
        self.stream.write_all(request.as_bytes()).await.context("send the upgrade request")?;
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&self.read[..self.end], b"\r\n\r\n") {
                break at + 4;
            }
            anyhow::ensure!(self.end < MAX_HEAD, "the upgrade response head is too large");
            let n = self.stream.read(&mut self.read[self.end..]).await.context("read the upgrade response")?;
            anyhow::ensure!(n > 0, "the server closed the connection during the handshake");
            self.end += n;
        };
        let head = String::from_utf8_lossy(&self.read[..head_end]);
        let status = head.lines().next().unwrap_or_default();
        anyhow::ensure!(
            status.split_whitespace().nth(1) == Some("101"),
            "the server refused the WebSocket upgrade: {status}"
        );
        let accept = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("sec-websocket-accept").then(|| value.trim().to_string())
        });
        anyhow::ensure!(accept.as_deref() == Some(accept_key(&key).as_str()), "wrong Sec-WebSocket-Accept");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions").then(|| value.trim().to_ascii_lowercase())
        });
        match extensions {
            // Messages are inflated one by one, which holds only if the server keeps no context between them.
            Some(value) if value.starts_with("permessage-deflate") => anyhow::ensure!(
                self.compression != Compression::Off && value.contains("server_no_context_takeover"),
                "the server accepted permessage-deflate as {value:?}, not as offered"
            ),
            Some(value) => anyhow::bail!("the server accepted an extension not offered: {value:?}"),
            None => self.compression = Compression::Off,
        }
        self.start = head_end;
        Ok(())
    }

    fn next_mask(&mut self) -> u32 {
        // xorshift32: cheap, never zero.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x
    }

    /// Appends a masked text frame to the write buffer; `fill` appends the `len` payload bytes to it.
    pub fn queue_text_with(&mut self, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        self.queue_frame(OP_TEXT, len, fill);
    }

    /// Appends a masked text frame holding `payload`.
    pub fn queue_text(&mut self, payload: &[u8]) {
        self.queue_frame(OP_TEXT, payload.len(), |out| out.extend_from_slice(payload));
    }

    /// Appends a close frame (normal closure).
    pub fn queue_close(&mut self) {
        self.queue_frame(OP_CLOSE, 2, |out| out.extend_from_slice(&1000u16.to_be_bytes()));
    }

    fn queue_frame(&mut self, opcode: u8, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        let mask = self.next_mask().to_ne_bytes();
        put_header(&mut self.write, 0x80 | opcode, MASKED, len);
        self.write.extend_from_slice(&mask);
        let at = self.write.len();
        // Appended rather than written over zeroes: zeroing a 3 KB offer before copying it in was a few percent of
        // the tool's CPU. The header announced `len` bytes, so whatever `fill` did, exactly that many follow.
        fill(&mut self.write);
        self.write.resize(at + len, 0);
        apply_mask(&mut self.write[at..], mask);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await.context("write to the server")?;
            self.write.clear();
        }
        Ok(())
    }

    /// Waits for more bytes from the server. Cancel-safe: it waits for readiness, then reads without waiting, so it
    /// can race in a `select!`.
    ///
    /// A connection with nothing undecoded gives its read buffer back to this thread's spares before it waits, and
    /// takes one when bytes arrive: 10,000 idle storm clients then hold no buffers at all, where holding 16 KiB each
    /// touched 160 MB of fresh pages (a third of the tool's page faults, which took about a tenth of its CPU), and
    /// the spares a thread reuses stay warm. A [`Payload`] from [`WsConn::next`] is invalid after a fill.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !self.read.is_empty() {
                spares_put(std::mem::take(&mut self.read));
            }
        } else if self.end == self.read.len() {
            if self.start > 0 {
                self.read.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                anyhow::ensure!(self.read.len() < MAX_MESSAGE + 14, "a frame over {MAX_MESSAGE} bytes");
                // Straight to the size of the frame being read when its header says it, instead of doubling.
                let frame = frame_len(&self.read[..self.end])?.unwrap_or(0);
                let grown = if frame > self.read.len() { frame } else { self.read.len() * 2 };
                let grown = grown.min(MAX_MESSAGE + 14);
                self.switch_buffer(grown, grown.saturating_mul(2));
            }
        }
        // One poll function, always with this task's waker: wait for readiness (`poll_read_ready`, which keeps one
        // waker per stream, where `readable()` queues a waiter under a lock, and a relay client races two fills per
        // message), take a buffer, read. Tokio's `poll_read` takes a short read as proof that the socket is drained
        // and clears readiness; `try_read` would leave it set, and the next fill would pay a `recv` that finds nothing
        // (twice the `recv` calls per relayed message).
        let n = std::future::poll_fn(|cx| {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            if self.read.is_empty() {
                self.read = spares_take(READ_CHUNK, READ_CHUNK);
            }
            let mut unfilled = tokio::io::ReadBuf::new(&mut self.read[self.end..]);
            match std::pin::Pin::new(&mut self.stream).poll_read(cx, &mut unfilled) {
                std::task::Poll::Ready(result) => std::task::Poll::Ready(result.map(|()| unfilled.filled().len())),
                std::task::Poll::Pending => {
                    // Stale readiness (or this task's budget spent): nothing read, so no buffer held while waiting.
                    if self.end == 0 {
                        spares_put(std::mem::take(&mut self.read));
                    }
                    std::task::Poll::Pending
                }
            }
        })
        .await
        .context("read from the server")?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.end += n;
        self.bytes_read += n as u64;
        Ok(())
    }

    /// Moves the undecoded bytes to the front of a spare buffer of `len` to `at_most` bytes and gives the current
    /// buffer to the spares.
    fn switch_buffer(&mut self, len: usize, at_most: usize) {
        let mut next = spares_take(len, at_most);
        let pending = self.end - self.start;
        next[..pending].copy_from_slice(&self.read[self.start..self.end]);
        spares_put(std::mem::replace(&mut self.read, next));
        self.start = 0;
        self.end = pending;
    }

    /// The next complete message already read, if any. Answers pings by queueing pongs (written on the next
    /// [`WsConn::flush`]).
    pub fn next(&mut self) -> anyhow::Result<Option<Incoming>> {
        if self.fragmented {
            if self.fragments.capacity() > READ_CHUNK {
                // An inflated `welcome`: thousands of idle clients must not each keep one, and the next client of
                // this thread to get one takes warm pages instead of faulting in fresh ones.
                let mut buffer = std::mem::take(&mut self.fragments);
                buffer.clear();
                TEXT_BUFFERS.with_borrow_mut(|spares| {
                    if spares.len() < MAX_TEXT_BUFFERS {
                        spares.push(buffer);
                    }
                });
            } else {
                self.fragments.clear();
            }
            self.fragmented = false;
        }
        loop {
            let Some(FrameHeader { fin, rsv1, opcode, payload: range }) =
                parse_header(&self.read[self.start..self.end])?
            else {
                return Ok(None);
            };
            let range = self.start + range.start..self.start + range.end;
            self.start = range.end;
            let data = matches!(opcode, OP_TEXT | OP_BINARY | OP_CONTINUATION);
            if data && (rsv1 || self.inflating.is_some()) {
                let first = opcode != OP_CONTINUATION;
                anyhow::ensure!(rsv1 == first, "RSV1 on a frame other than the first of a message");
                anyhow::ensure!(self.compression != Compression::Off, "a compressed frame without permessage-deflate");
                anyhow::ensure!(!first || self.inflating.is_none(), "a new message inside a fragmented one");
                if first && self.fragments.capacity() <= READ_CHUNK {
                    if let Some(buffer) = TEXT_BUFFERS.with_borrow_mut(Vec::pop) {
                        self.fragments = buffer;
                    }
                }
                let share = self.compression == Compression::Shared;
                let inflater = self.inflating.get_or_insert_with(|| crate::inflate::MessageInflater::new(share));
                inflater.frame(&self.read[range], fin, &mut self.fragments, MAX_MESSAGE)?;
                if fin {
                    self.inflating = None;
                    self.fragmented = true;
                    return Ok(Some(Incoming::Message(Payload { range: 0..self.fragments.len(), reassembled: true })));
                }
                continue;
            }
            match opcode {
                OP_TEXT | OP_BINARY if fin && self.fragments.is_empty() => {
                    return Ok(Some(Incoming::Message(Payload { range, reassembled: false })));
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    anyhow::ensure!(
                        self.fragments.len() + range.len() <= MAX_MESSAGE,
                        "a fragmented message over {MAX_MESSAGE} bytes"
                    );
                    self.fragments.extend_from_slice(&self.read[range]);
                    if fin {
                        self.fragmented = true;
                        let range = 0..self.fragments.len();
                        return Ok(Some(Incoming::Message(Payload { range, reassembled: true })));
                    }
                }
                OP_PING => {
                    let body = self.read[range].to_vec();
                    self.queue_frame(OP_PONG, body.len(), |out| out.extend_from_slice(&body));
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code = self.read[range].get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                    return Ok(Some(Incoming::Close(code)));
                }
                other => anyhow::bail!("unknown opcode {other:#x} from the server"),
            }
        }
    }

    /// The bytes of a message returned by the last [`WsConn::next`] (not valid after a [`WsConn::fill`], which may
    /// give the buffer back).
    pub fn payload(&self, payload: &Payload) -> &[u8] {
        if payload.reassembled {
            &self.fragments[payload.range.clone()]
        } else {
            &self.read[payload.range.clone()]
        }
    }

    /// Reads until a text message for which `pick` returns `Some`, skipping others; fails on close.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(&[u8]) -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
        loop {
            while let Some(incoming) = self.next()? {
                match incoming {
                    Incoming::Message(p) => {
                        if let Some(found) = pick(self.payload(&p))? {
                            return Ok(found);
                        }
                    }
                    Incoming::Close(code) => anyhow::bail!("the server closed the connection ({code:?})"),
                }
            }
            self.flush().await?;
            self.fill().await?;
        }
    }
}

impl Transport for WsConn {
    fn queue_text_with(&mut self, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        WsConn::queue_text_with(self, len, fill);
    }
    fn queue_close(&mut self) {
        WsConn::queue_close(self);
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        WsConn::flush(self).await
    }
    async fn fill(&mut self) -> anyhow::Result<()> {
        WsConn::fill(self).await
    }
    fn next(&mut self) -> anyhow::Result<Option<Incoming>> {
        WsConn::next(self)
    }
    fn payload(&self, payload: &Payload) -> &[u8] {
        WsConn::payload(self, payload)
    }
}

/// The same connection driven by tokio-tungstenite after the lean client's handshake: one allocation per message
/// each way, its own buffering. Kept to measure the lean client against (`relay --client tungstenite`).
pub struct TungConn {
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    outgoing: Vec<tokio_tungstenite::tungstenite::Message>,
    incoming: std::collections::VecDeque<tokio_tungstenite::tungstenite::Message>,
    current: Option<tokio_tungstenite::tungstenite::Message>,
}

impl TungConn {
    /// Takes over a connection that has done its handshake (and maybe its login).
    pub async fn from_lean(conn: WsConn) -> anyhow::Result<Self> {
        anyhow::ensure!(conn.write.is_empty() && conn.fragments.is_empty(), "the connection has unfinished business");
        let leftover = conn.read[conn.start..conn.end].to_vec();
        let ws = tokio_tungstenite::WebSocketStream::from_partially_read(
            conn.stream,
            leftover,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        Ok(Self { ws, outgoing: Vec::new(), incoming: Default::default(), current: None })
    }
}

impl Transport for TungConn {
    fn queue_text_with(&mut self, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut text = Vec::with_capacity(len);
        fill(&mut text);
        text.resize(len, 0);
        // Scenarios only render UTF-8 (JSON); anything else would be a bug here, sent as binary to stand out.
        let message = match String::from_utf8(text) {
            Ok(text) => tokio_tungstenite::tungstenite::Message::text(text),
            Err(e) => tokio_tungstenite::tungstenite::Message::binary(e.into_bytes()),
        };
        self.outgoing.push(message);
    }
    fn queue_close(&mut self) {
        self.outgoing.push(tokio_tungstenite::tungstenite::Message::Close(None));
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        use futures_util::SinkExt;
        for message in self.outgoing.drain(..) {
            self.ws.feed(message).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }
    async fn fill(&mut self) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        match self.ws.next().await {
            Some(message) => self.incoming.push_back(message?),
            None => anyhow::bail!("the server closed the connection"),
        }
        Ok(())
    }
    fn next(&mut self) -> anyhow::Result<Option<Incoming>> {
        use tokio_tungstenite::tungstenite::Message;
        while let Some(message) = self.incoming.pop_front() {
            match message {
                Message::Text(_) | Message::Binary(_) => {
                    let len = match &message {
                        Message::Text(t) => t.len(),
                        Message::Binary(b) => b.len(),
                        _ => 0,
                    };
                    self.current = Some(message);
                    return Ok(Some(Incoming::Message(Payload { range: 0..len, reassembled: false })));
                }
                Message::Close(frame) => return Ok(Some(Incoming::Close(frame.map(|f| f.code.into())))),
                // tungstenite answers pings by itself.
                _ => {}
            }
        }
        Ok(None)
    }
    fn payload(&self, payload: &Payload) -> &[u8] {
        use tokio_tungstenite::tungstenite::Message;
        match &self.current {
            Some(Message::Text(t)) => &t.as_bytes()[payload.range.clone()],
            Some(Message::Binary(b)) => &b[payload.range.clone()],
            _ => &[],
        }
    }
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2).
fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A server frame's header.
#[derive(Debug, PartialEq, Eq)]
struct FrameHeader {
    fin: bool,
    /// A compressed message's first frame (permessage-deflate).
    rsv1: bool,
    opcode: u8,
    /// Where the payload is in the buffer given to [`parse_header`].
    payload: Range<usize>,
}

/// Decodes a server frame header at the start of `buf`, or `None` while the frame is incomplete.
fn parse_header(buf: &[u8]) -> anyhow::Result<Option<FrameHeader>> {
    let Some((payload_at, len)) = header(buf)? else { return Ok(None) };
    let end = payload_at + len;
    if buf.len() < end {
        return Ok(None);
    }
    anyhow::ensure!(buf[0] & 0x30 == 0, "RSV2 or RSV3 set by the server");
    Ok(Some(FrameHeader {
        fin: buf[0] & 0x80 != 0,
        rsv1: buf[0] & 0x40 != 0,
        opcode: buf[0] & 0x0F,
        payload: payload_at..end,
    }))
}

/// The whole length (header and payload) of the frame at the start of `buf`, once its header is complete.
fn frame_len(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    Ok(header(buf)?.map(|(payload_at, len)| payload_at + len))
}

/// Where the payload of the frame at the start of `buf` begins, and its length; `None` while the header is incomplete.
fn header(buf: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    let [_, b1, ..] = *buf else { return Ok(None) };
    anyhow::ensure!(b1 & MASKED == 0, "the server sent a masked frame");
    let Some((len, at)) = length_field(buf) else { return Ok(None) };
    anyhow::ensure!(len <= MAX_MESSAGE as u64, "a frame of {len} bytes");
    Ok(Some((at, len as usize)))
}

/// The mask bit of a frame's second byte: set on every frame a client sends, never on a server's.
pub(crate) const MASKED: u8 = 0x80;

/// The payload length of the frame at the start of `buf`, and where its length field ends (where the mask of a
/// client's frame, or the payload, starts); `None` while the field is incomplete.
pub(crate) fn length_field(buf: &[u8]) -> Option<(u64, usize)> {
    let [_, b1, ..] = *buf else { return None };
    match b1 & 0x7F {
        126 => buf.get(2..4).map(|b| (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)),
        127 => buf.get(2..10).map(|b| {
            let mut wide = [0u8; 8];
            wide.copy_from_slice(b);
            (u64::from_be_bytes(wide), 10)
        }),
        n => Some((u64::from(n), 2)),
    }
}

/// Appends a frame header: `first` (FIN, RSV and opcode), then the payload length `len` in its shortest form, with
/// `mask_bit` ([`MASKED`] for a client's frame, whose mask the caller appends next; 0 for a server's).
pub(crate) fn put_header(out: &mut Vec<u8>, first: u8, mask_bit: u8, len: usize) {
    out.push(first);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// XORs `payload` with the 4-byte `mask`, eight bytes at a time.
pub(crate) fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn masking_twice_restores_and_matches_bytewise_xor() {
        let original: Vec<u8> = (0..=255u8).cycle().take(1003).collect();
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut masked = original.clone();
        apply_mask(&mut masked, mask);
        for (i, (m, o)) in masked.iter().zip(&original).enumerate() {
            assert_eq!(*m, o ^ mask[i % 4]);
        }
        apply_mask(&mut masked, mask);
        assert_eq!(masked, original);
    }

    /// Frames larger than the read buffer, written in pieces, arrive whole and in order; the buffer grown for a large
    /// frame, like any, goes back to the thread's spares once everything in it is read.
    #[tokio::test]
    async fn large_frames_in_pieces_arrive_whole_and_the_buffer_is_given_back_after() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = crate::net::Target::parse(&format!("ws://{}/ws", listener.local_addr().unwrap())).unwrap();
        let sizes = [5, 200_000, 70_000, 3, READ_CHUNK - 4, 1_000_000, 9_000, 9_000, 9_000, 9_000];
        let frame = |len: usize| {
            let mut frame = Vec::new();
            put_header(&mut frame, 0x81, 0, len);
            frame.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            frame
        };
        let stream: Vec<u8> = sizes.iter().flat_map(|&len| frame(len)).collect();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                socket.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            for piece in stream.chunks(7_919) {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
            }
            socket
        });
        let mut conn = WsConn::connect(&target, 0).await.unwrap();
        let (mut received, mut largest) = (Vec::new(), 0);
        loop {
            while let Some(incoming) = conn.next().unwrap() {
                let Incoming::Message(payload) = incoming else { panic!("a close") };
                let bytes = conn.payload(&payload);
                assert!(bytes.iter().enumerate().all(|(i, &b)| b == b'a' + (i % 26) as u8));
                received.push(bytes.len());
            }
            if received.len() >= sizes.len() {
                break;
            }
            tokio::time::timeout(std::time::Duration::from_secs(10), conn.fill()).await.unwrap().unwrap();
            largest = largest.max(conn.read.len());
        }
        assert_eq!(received, sizes);
        assert!(largest >= 1_000_010, "grown to the largest frame");
        let _server = server.await.unwrap();
        assert!(conn.next().unwrap().is_none());
        // All read: the next fill gives the buffer back to the thread's spares while it waits for bytes (here bytes
        // that never come), and the spares keep it.
        let spares_before = SPARE_BUFFERS.with_borrow(|spares| spares.buffers.len());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), conn.fill()).await;
        assert!(conn.read.is_empty(), "given back: {}", conn.read.len());
        assert_eq!(SPARE_BUFFERS.with_borrow(|spares| spares.buffers.len()), spares_before + 1);
    }

    /// Spares full of buffers grown for large frames still hand out small buffers: the largest spare is the one let
    /// go, and a take never gets a buffer beyond the size asked for.
    #[test]
    fn spares_keep_small_buffers_available() {
        let mut spares = SpareBuffers { buffers: Vec::new() };
        for i in 0..MAX_SPARES {
            spares.put(vec![0; 200_000 + i]);
        }
        assert_eq!(spares.take(READ_CHUNK, READ_CHUNK).len(), READ_CHUNK, "no spare fits: a new one");
        spares.put(vec![0; READ_CHUNK]);
        assert_eq!(spares.buffers.len(), MAX_SPARES);
        assert!(spares.buffers.iter().all(|b| b.len() < 200_000 + MAX_SPARES - 1), "the largest was let go");
        assert_eq!(spares.take(READ_CHUNK, READ_CHUNK).len(), READ_CHUNK);
        spares.put(vec![0; 1_000]);
        assert_eq!(
            spares.take(150_000, 300_000).len(),
            200_000,
            "the last given back does not fit: the smallest that does"
        );
        spares.put(vec![0; 250_000]);
        assert_eq!(spares.take(150_000, 300_000).len(), 250_000, "the last given back fits: that one");
        while spares.buffers.len() < MAX_SPARES {
            spares.put(vec![0; 1_000]);
        }
        spares.put(vec![0; 500_000]);
        assert!(spares.buffers.iter().all(|b| b.len() < 500_000), "full: a larger buffer is not kept");
    }

    #[test]
    fn headers_of_each_length_form() {
        assert_eq!(parse_header(&[0x81]).unwrap(), None);
        assert_eq!(parse_header(&[0x81, 3, b'a', b'b']).unwrap(), None);
        assert_eq!(
            parse_header(&[0x81, 3, b'a', b'b', b'c']).unwrap(),
            Some(FrameHeader { fin: true, rsv1: false, opcode: 1, payload: 2..5 })
        );
        let mut medium = vec![0x01, 126, 1, 0];
        medium.resize(4 + 256, b'x');
        assert_eq!(
            parse_header(&medium).unwrap(),
            Some(FrameHeader { fin: false, rsv1: false, opcode: 1, payload: 4..260 })
        );
        let mut long = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(parse_header(&long).unwrap(), None);
        long.resize(10 + 65536, 0);
        assert_eq!(
            parse_header(&long).unwrap(),
            Some(FrameHeader { fin: true, rsv1: false, opcode: 2, payload: 10..65546 })
        );
        assert!(parse_header(&[0x81, 0x83, 0, 0, 0, 0]).is_err(), "masked server frame");
    }
}
