//! The task that runs one WebSocket connection: reads frames into the hub, writes what the hub queued, pings.
//!
//! Memory per idle connection is the point of this design: the task reads into a buffer shared by all connections of
//! its worker thread (a read completes synchronously, so the buffer is never held across an `.await`), the decoder
//! keeps no buffer between frames, and the write buffer exists only while there is something to write.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_core::{ConnId, Input};
use switchboard_proto::close_code;
use tokio::io::Interest;

use super::deflate;
use super::frame::{encode_header, DecodeError, Decoder, Event, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use super::transport::Transport;
use crate::hub::Hub;
use crate::outbox::{Frame, Outbox};

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Messages above this get `too-large` and are skipped.
    pub soft_limit: usize,
    /// Frames above this fail the connection with 1009.
    pub hard_limit: usize,
    /// Ping interval; silence for two intervals drops the connection.
    pub heartbeat: Duration,
    /// permessage-deflate: in the server's settings, whether it is accepted; in a connection's, whether it was
    /// negotiated.
    pub deflate: bool,
}

/// Bytes moved from the outbox to the socket per batch.
const WRITE_BATCH: usize = 64 * 1024;
/// Reads per readiness event before giving other tasks a turn.
const READS_PER_TURN: usize = 8;
/// How long a closing connection may take to flush before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Write buffers a worker thread keeps for its connections' next bursts, and the largest one it keeps.
const POOLED_WRITE_BUFFERS: usize = 16;
const POOLED_WRITE_CAPACITY: usize = 2 * WRITE_BATCH;
/// A fresh write buffer's size: a burst of a few offers fits without growing it.
const FRESH_WRITE_CAPACITY: usize = 16 * 1024;

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
    /// Idle connections hold no write buffer (see the module comment), so a busy one would otherwise allocate and
    /// grow a buffer for every burst and free it right after: about a tenth of the CPU per relayed message went to
    /// `malloc`, `realloc` and `free`. Buffers are handed back here instead, bounded in number and size.
    static WRITE_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Frames taken from an outbox, encoded after its lock is released (compressing a shared list for the first
    /// time must not hold up the hub, which pushes into the outbox under its own lock).
    static DRAINED: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

fn take_write_buffer() -> Vec<u8> {
    WRITE_BUFFERS.with(|pool| pool.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(FRESH_WRITE_CAPACITY))
}

fn give_back_write_buffer(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > POOLED_WRITE_CAPACITY {
        return;
    }
    buffer.clear();
    WRITE_BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_WRITE_BUFFERS {
            pool.push(buffer);
        }
    });
}

/// Further ahead than any wake-up of a connection: marks its timer as spent.
const UNARMED: Duration = Duration::from_secs(365 * 24 * 3600);

struct Connection {
    conn: ConnId,
    decoder: Decoder,
    /// Encoded frames not yet written, and how much of them is written.
    write: Vec<u8>,
    written: usize,
    /// The close frame is in `write`: once it is written, the connection ends.
    close_queued: bool,
    /// No more reading: the peer closed, or its input failed.
    read_done: bool,
    last_heard: Instant,
    close_deadline: Option<Instant>,
    /// The hub no longer routes frames here (see `detach`).
    detached: bool,
}

/// Runs the connection until it ends. `prefix` holds bytes the HTTP layer read past the upgrade request;
/// `upgrade_token` is the login token of the upgrade URL, if it had one.
pub async fn run(
    hub: Arc<Hub>,
    mut stream: impl Transport,
    prefix: Bytes,
    settings: Settings,
    upgrade_token: Option<String>,
) {
    let (conn, outbox) = hub.register_with_token(upgrade_token.as_deref());
    drop(upgrade_token);
    let mut decoder = Decoder::new(settings.soft_limit, settings.hard_limit);
    if settings.deflate {
        decoder.accept_compressed();
    }
    let mut connection = Connection {
        conn,
        decoder,
        write: Vec::new(),
        written: 0,
        close_queued: false,
        read_done: false,
        last_heard: Instant::now(),
        close_deadline: None,
        detached: false,
    };
    if !prefix.is_empty() {
        let mut bytes = prefix.to_vec();
        connection.decode(&hub, &outbox, &mut bytes);
    }
    // `prefix` is a view into hyper's 8 KiB read buffer and keeps all of it alive: let it go now, not when the
    // connection ends.
    drop(prefix);
    let clean = connection.drive(&mut stream, &hub, &outbox, settings.heartbeat).await;
    connection.detach(&hub);
    if clean {
        linger(&mut stream).await;
    }
}

impl Connection {
    /// Returns true when the connection ended with our close frame written (a graceful close).
    async fn drive(&mut self, stream: &mut impl Transport, hub: &Hub, outbox: &Outbox, heartbeat: Duration) -> bool {
        let mut next_ping = tokio::time::Instant::now() + heartbeat;
        // One timer for the connection's life, moved only when the next wake-up must come earlier. The deadline moves
        // later with every message heard (the silence limit), and re-arming a fresh `sleep_until` on each turn of the
        // loop put two timer-wheel operations and a runtime lookup on every read: 2% of the CPU per relayed message.
        // A wake-up that comes too early finds nothing due and re-arms for the real deadline.
        let sleep = tokio::time::sleep_until(next_ping);
        tokio::pin!(sleep);
        let mut armed = next_ping;
        loop {
            if self.read_done || self.close_queued {
                // Closing: from now on, messages for this user must wait for a resume instead of being queued
                // behind a close frame and lost.
                self.detach(hub);
            }
            if self.close_deadline.is_none() && outbox.close_requested() {
                self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            if self.written == self.write.len() {
                if self.close_queued && !stream.wants_write() {
                    return true;
                }
                if !self.close_queued {
                    self.refill(outbox);
                }
            }
            let want_write = self.written < self.write.len() || stream.wants_write();
            let interest = match (self.read_done, want_write) {
                (false, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, true) => Some(Interest::WRITABLE),
                (true, false) => None,
            };
            // Wake for the next ping, for the moment two silent intervals are up, or for the close deadline.
            let silence_limit = tokio::time::Instant::from_std(self.last_heard + heartbeat * 2);
            let mut timer = next_ping.min(silence_limit);
            if let Some(deadline) = self.close_deadline {
                timer = timer.min(tokio::time::Instant::from_std(deadline));
            }
            if timer < armed {
                sleep.as_mut().reset(timer);
                armed = timer;
            }
            let socket = &*stream;
            tokio::select! {
                ready = async {
                    match interest {
                        Some(interest) => socket.ready(interest).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Ok(ready) = ready else { return false };
                    if ready.is_readable() && !self.read_done && !self.read(stream, hub, outbox) {
                        return false;
                    }
                    if ready.is_writable() && !self.flush(stream) {
                        return false;
                    }
                }
                // New frames or a close request; the top of the loop picks them up.
                () = outbox.ready() => {}
                () = &mut sleep => {
                    let now = Instant::now();
                    if self.close_deadline.is_some_and(|deadline| now >= deadline) {
                        return false;
                    }
                    if now.duration_since(self.last_heard) >= heartbeat * 2 {
                        // The peer is most likely gone: say why if the socket takes it at once, but wait for nothing.
                        if self.written == self.write.len() {
                            let _ = stream.try_write(&close_frame(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                        }
                        return false;
                    }
                    if tokio::time::Instant::now() >= next_ping {
                        let _ = outbox.push(Frame::Ping);
                        next_ping += heartbeat;
                    }
                    // Spent: the top of the loop arms it again for whatever is due next.
                    armed = tokio::time::Instant::now() + UNARMED;
                }
            }
        }
    }

    /// Tells the hub, once, that this connection takes no more frames.
    fn detach(&mut self, hub: &Hub) {
        if !self.detached {
            self.detached = true;
            hub.unregister(self.conn);
        }
    }

    /// Reads what is available; false when the peer is gone.
    fn read(&mut self, stream: &mut impl Transport, hub: &Hub, outbox: &Outbox) -> bool {
        for _ in 0..READS_PER_TURN {
            let result = READ_BUFFER.with_borrow_mut(|buffer| match stream.try_read(buffer) {
                Ok(0) => Err(()),
                Ok(n) => {
                    self.decode(hub, outbox, &mut buffer[..n]);
                    Ok(true)
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
                Err(_) => Err(()),
            });
            match result {
                Ok(true) => {
                    self.last_heard = Instant::now();
                    if self.read_done {
                        return true;
                    }
                }
                Ok(false) => return true,
                Err(()) => return false,
            }
        }
        true
    }

    /// Decodes `bytes` and feeds the messages to the hub, locking it once per read.
    fn decode(&mut self, hub: &Hub, outbox: &Outbox, bytes: &mut [u8]) {
        let conn = self.conn;
        let mut locked = None;
        let mut peer_close: Option<Option<u16>> = None;
        let result = self.decoder.feed(bytes, |event| {
            if peer_close.is_some() {
                return;
            }
            let input = match event {
                Event::Text(text) => Input::Text(conn, text),
                Event::Binary => Input::Binary(conn),
                Event::TooLarge(len) => Input::TooLarge(conn, len),
                Event::Ping(payload) => {
                    let _ = outbox.push(Frame::Pong(Bytes::copy_from_slice(payload)));
                    return;
                }
                Event::Pong => return,
                Event::Close(code) => {
                    peer_close = Some(code);
                    return;
                }
                // Inflating happens outside the hub's lock (taken again for the text that follows).
                Event::Inflating => {
                    locked = None;
                    return;
                }
            };
            locked.get_or_insert_with(|| hub.lock()).input(input);
        });
        drop(locked);
        if let Err(error) = result {
            self.fail(outbox, error);
        } else if let Some(code) = peer_close {
            // Echo the peer's status code, as RFC 6455 section 5.5.1 asks.
            outbox.close(code.unwrap_or(1000), "");
            self.read_done = true;
        }
    }

    fn fail(&mut self, outbox: &Outbox, error: DecodeError) {
        let reason = match error {
            DecodeError::Protocol(_) => "protocol error",
            DecodeError::InvalidUtf8 => "invalid utf-8",
            DecodeError::TooBig(_) => "frame too big",
            DecodeError::InvalidCompressed => "invalid compressed data",
        };
        outbox.close(error.close_code(), reason);
        self.read_done = true;
    }

    /// Moves queued frames into the write buffer.
    fn refill(&mut self, outbox: &Outbox) {
        self.write.clear();
        self.written = 0;
        if self.write.capacity() == 0 {
            self.write = take_write_buffer();
        }
        let write = &mut self.write;
        let close = if self.decoder.accepts_compressed() {
            // Compressing a shared list for the first time must not happen under the outbox's lock (see DRAINED).
            DRAINED.with_borrow_mut(|drained| {
                let close = outbox.drain(WRITE_BATCH, |frame| drained.push(frame));
                for frame in drained.drain(..) {
                    match &frame {
                        Frame::Text(text) if deflate::worth_compressing(text) => {
                            deflate::encode_compressed(text, write)
                        }
                        _ => encode_plain(&frame, write),
                    }
                }
                close
            })
        } else {
            outbox.drain(WRITE_BATCH, |frame| encode_plain(&frame, write))
        };
        if let Some((code, reason)) = close {
            self.write.extend_from_slice(&close_frame(code, reason));
            self.close_queued = true;
        }
        if self.write.is_empty() {
            // Idle connections keep no write buffer.
            give_back_write_buffer(std::mem::take(&mut self.write));
        }
    }

    /// Writes what the socket takes; false on a write error.
    fn flush(&mut self, stream: &mut impl Transport) -> bool {
        match stream.flush_pending() {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
        while self.written < self.write.len() {
            match stream.try_write(&self.write[self.written..]) {
                Ok(n) => self.written += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Appends `frame` uncompressed.
fn encode_plain(frame: &Frame, write: &mut Vec<u8>) {
    match frame {
        Frame::Text(text) => {
            let (header, used) = encode_header(OP_TEXT, text.len());
            write.extend_from_slice(&header[..used]);
            text.for_each_piece(|bytes, _| write.extend_from_slice(bytes));
        }
        Frame::Pong(bytes) => {
            let (header, used) = encode_header(OP_PONG, bytes.len());
            write.extend_from_slice(&header[..used]);
            write.extend_from_slice(bytes);
        }
        Frame::Ping => write.extend_from_slice(&encode_header(OP_PING, 0).0[..2]),
    }
}

/// A close frame with a status code and reason (at most 123 bytes, as the reasons here are).
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let (header, used) = encode_header(OP_CLOSE, 2 + reason.len());
    let mut frame = Vec::with_capacity(used + 2 + reason.len());
    frame.extend_from_slice(&header[..used]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// After our close frame: half-close, then give the peer a moment to read it and close its side, so that the kernel
/// does not answer its late bytes with a reset that could destroy the close frame in flight.
async fn linger(stream: &mut impl Transport) {
    stream.close_write();
    let stream = stream.socket();
    let drain = async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            let done = READ_BUFFER.with_borrow_mut(|buffer| match stream.try_read(buffer) {
                Ok(0) => true,
                Ok(_) => false,
                Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
            });
            if done {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
