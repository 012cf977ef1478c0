//! `forwarder`: the floor of the relay scenario, to tell what this machine's kernel and runtime cost per message from
//! what a signaling server adds on top.
//!
//! The issue's relay target is stated against "a minimal forwarder without JSON validation, presence or call state"
//! measured on the machine where the targets were set. CPU per message moves with the machine and with the hour
//! (the same binary needed 1.2-2 times the CPU per relayed message on one host of this workplace as on another),
//! so the comparison is only meaningful when that floor is measured here, in the same run as the servers.
//!
//! What it does, and nothing more: it speaks the matchbox dialect the load generator already has (join a room by
//! path, `IdAssigned`, `NewPeer`, `Signal` with a `receiver`), finds `"receiver":"…"` in each text frame by a byte
//! search, and appends the frame, unmasked and otherwise unchanged, to the receiver's output buffer. It validates
//! nothing, rewrites nothing, keeps no presence and no call state. What it shares with a good server is its I/O: one
//! task per connection driven by readiness, reads of up to 64 KiB, the frames queued for a connection written
//! together (one `send` per turn as a rule), and `TCP_NODELAY`. Where it differs: a current-thread runtime with
//! `Rc`/`RefCell` state, where Switchboard runs one multi-thread worker with a locked hub (Switchboard itself measured
//! worse on a current-thread runtime, see docs/benchmarks.md), and a read buffer per connection.
//!
//! It is a measuring instrument, not a server: it trusts its clients (loopback only, a load generator), though it
//! still bounds what it buffers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::rc::Rc;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::ws;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen (loopback only: this is a measuring instrument).
    #[arg(long, default_value = "127.0.0.1:18103")]
    listen: SocketAddr,
}

/// The largest frame taken; anything larger ends the connection.
const MAX_FRAME: usize = 1 << 20;
/// Bytes a connection may have waiting to be written before further frames for it are dropped.
const MAX_PENDING: usize = 16 << 20;
/// Bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 8;

/// Another connection's end of the relay: frames for it, and the wake-up of its task.
struct Peer {
    output: RefCell<Vec<u8>>,
    wake: Notify,
}

struct State {
    peers: HashMap<Box<str>, Rc<Peer>>,
    rooms: HashMap<String, Vec<Box<str>>>,
    next_id: Cell<u64>,
    receiver_key: memchr::memmem::Finder<'static>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            peers: HashMap::new(),
            rooms: HashMap::new(),
            next_id: Cell::new(0),
            receiver_key: memchr::memmem::Finder::new(RECEIVER_KEY),
        }
    }
}

const RECEIVER_KEY: &[u8] = b"\"receiver\":\"";

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.listen.ip().is_loopback(), "the forwarder listens on loopback addresses only");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen).await?;
        println!("forwarder listening on ws://{}", listener.local_addr()?);
        let state = Rc::new(RefCell::new(State::default()));
        loop {
            let (stream, _) = listener.accept().await?;
            let state = state.clone();
            tokio::task::spawn_local(async move {
                // A client that breaks the protocol just loses its connection; the others never notice.
                let _ = connection(stream, state).await;
            });
        }
    })
}

async fn connection(mut stream: TcpStream, state: Rc<RefCell<State>>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (room, prefix) = handshake(&mut stream).await?;
    let mut input = Input::new(prefix);
    let me = Rc::new(Peer { output: RefCell::new(Vec::new()), wake: Notify::new() });
    let id: Box<str> = {
        let mut guard = state.borrow_mut();
        let state = &mut *guard;
        let number = state.next_id.get() + 1;
        state.next_id.set(number);
        let id: Box<str> = format!("f{number}").into();
        push_frame(&me, OP_TEXT, format!("{{\"IdAssigned\":\"{id}\"}}").as_bytes());
        let announce = format!("{{\"NewPeer\":\"{id}\"}}");
        let members = state.rooms.entry(room.clone()).or_default();
        for member in members.iter() {
            if let Some(peer) = state.peers.get(member) {
                if push_frame(peer, OP_TEXT, announce.as_bytes()) {
                    peer.wake.notify_one();
                }
            }
        }
        members.push(id.clone());
        state.peers.insert(id.clone(), me.clone());
        id
    };
    let outcome = relay(&mut stream, &state, &me, &mut input).await;
    let mut state = state.borrow_mut();
    state.peers.remove(&id);
    if let Some(members) = state.rooms.get_mut(&room) {
        members.retain(|member| *member != id);
        if members.is_empty() {
            state.rooms.remove(&room);
        }
    }
    outcome
}

/// Reads the HTTP upgrade request and answers it; returns the request's path and any bytes read past it.
async fn handshake(stream: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut request = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = memchr::memmem::find(&request, b"\r\n\r\n") {
            break at + 4;
        }
        anyhow::ensure!(request.len() < 8192, "upgrade request too long");
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed during the upgrade");
        request.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&request[..end])?;
    let path = head.split(' ').nth(1).ok_or_else(|| anyhow::anyhow!("no request target"))?.to_string();
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
        })
        .ok_or_else(|| anyhow::anyhow!("no Sec-WebSocket-Key"))?;
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    Ok((path, request[end..].to_vec()))
}

/// Relays until the peer closes or breaks the protocol.
async fn relay(stream: &mut TcpStream, state: &RefCell<State>, me: &Peer, input: &mut Input) -> anyhow::Result<()> {
    let mut write: Vec<u8> = Vec::new();
    let mut written = 0;
    if input.filled > 0 && !forward_frames(input, state, me)? {
        return finish(stream, &[], me).await;
    }
    loop {
        if written == write.len() {
            write.clear();
            written = 0;
            // Swap rather than copy: the frames queued for this connection become its write buffer.
            std::mem::swap(&mut write, &mut *me.output.borrow_mut());
        }
        let interest = if written < write.len() { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        tokio::select! {
            ready = stream.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() {
                    for _ in 0..READS_PER_TURN {
                        match read_some(stream, input)? {
                            Read::Data => {
                                if !forward_frames(input, state, me)? {
                                    return finish(stream, &write[written..], me).await;
                                }
                            }
                            Read::Drained => break,
                            Read::Closed => return Ok(()),
                        }
                    }
                }
                if written < write.len() {
                    written += write_some(stream, &write[written..])?;
                }
            }
            () = me.wake.notified() => {}
        }
        if written == write.len() && !me.output.borrow().is_empty() {
            write.clear();
            written = 0;
            std::mem::swap(&mut write, &mut *me.output.borrow_mut());
            written += write_some(stream, &write)?;
        }
    }
}

/// After the client's close frame: sends what is still queued, the close echo last, for at most a second.
async fn finish(stream: &mut TcpStream, unsent: &[u8], me: &Peer) -> anyhow::Result<()> {
    let queued = std::mem::take(&mut *me.output.borrow_mut());
    let send = async {
        stream.write_all(unsent).await?;
        stream.write_all(&queued).await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), send).await;
    Ok(())
}

enum Read {
    Data,
    Drained,
    Closed,
}

/// Bytes read from a connection: `bytes[..filled]`; the rest is room for the next read, zeroed once when the buffer
/// grows, not before every read.
struct Input {
    bytes: Vec<u8>,
    filled: usize,
}

impl Input {
    fn new(prefix: Vec<u8>) -> Self {
        let filled = prefix.len();
        let mut bytes = prefix;
        bytes.resize(filled + READ_CHUNK, 0);
        Self { bytes, filled }
    }

    /// Drops the first `consumed` bytes, keeping the incomplete rest at the front.
    fn consume(&mut self, consumed: usize) {
        self.bytes.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
    }
}

/// One `recv` into the free end of `input`. A short read means the socket is drained: Tokio's readiness is cleared
/// right away, so the next read does not cost a system call that can only say `EAGAIN` (what a good server does too).
fn read_some(stream: &TcpStream, input: &mut Input) -> anyhow::Result<Read> {
    if input.bytes.len() < input.filled + READ_CHUNK {
        input.bytes.resize(input.filled + READ_CHUNK, 0);
    }
    let free = &mut input.bytes[input.filled..];
    let capacity = free.len();
    let mut read = None;
    let outcome = stream.try_io(Interest::READABLE, || {
        let socket = socket2::SockRef::from(stream);
        let n = (&*socket).read(free)?;
        read = Some(n);
        if n > 0 && n < capacity {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match (read, outcome) {
        (Some(0), _) => Ok(Read::Closed),
        (Some(n), _) => {
            input.filled += n;
            Ok(Read::Data)
        }
        (None, Err(error)) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(Read::Drained),
        (None, Err(error)) => Err(error.into()),
        (None, Ok(())) => Ok(Read::Drained),
    }
}

fn write_some(stream: &TcpStream, bytes: &[u8]) -> anyhow::Result<usize> {
    match stream.try_write(bytes) {
        Ok(n) => Ok(n),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// Forwards every complete frame in `input` and keeps the incomplete rest; false once the client sent a close.
fn forward_frames(buffer: &mut Input, state: &RefCell<State>, me: &Peer) -> anyhow::Result<bool> {
    let input = &mut buffer.bytes[..buffer.filled];
    let mut at = 0;
    let mut open = true;
    while let Some((header, length, mask)) = parse_header(&input[at..])? {
        let payload = &mut input[at + header..at + header + length];
        ws::apply_mask(payload, mask);
        match opcode_of(input[at]) {
            0x1 => forward(payload_of(input, at, header, length), state),
            0x8 => {
                push_frame(me, 0x88, &[]);
                open = false;
                at += header + length;
                break;
            }
            0x9 => {
                push_frame(me, 0x8A, payload_of(input, at, header, length));
            }
            0xA => {}
            opcode => anyhow::bail!("opcode {opcode:#x} is not handled by the forwarder"),
        }
        at += header + length;
    }
    buffer.consume(at);
    Ok(open)
}

fn opcode_of(first: u8) -> u8 {
    first & 0x0F
}

fn payload_of(input: &[u8], at: usize, header: usize, length: usize) -> &[u8] {
    &input[at + header..at + header + length]
}

/// A complete masked frame at the start of `bytes`: its header length, payload length and mask.
fn parse_header(bytes: &[u8]) -> anyhow::Result<Option<(usize, usize, [u8; 4])>> {
    let [first, second, ..] = *bytes else { return Ok(None) };
    anyhow::ensure!(first & 0x80 != 0, "fragmented frames are not handled by the forwarder");
    anyhow::ensure!(second & ws::MASKED != 0, "client frames must be masked");
    let Some((length, at)) = ws::length_field(bytes) else { return Ok(None) };
    anyhow::ensure!(length <= MAX_FRAME as u64, "frame of {length} bytes");
    let length = length as usize;
    let Some(mask) = bytes.get(at..at + 4) else { return Ok(None) };
    if bytes.len() < at + 4 + length {
        return Ok(None);
    }
    Ok(Some((at + 4, length, [mask[0], mask[1], mask[2], mask[3]])))
}

/// Appends the text frame to its receiver's output, found by a byte search for `"receiver":"`.
fn forward(payload: &[u8], state: &RefCell<State>) {
    let state = state.borrow();
    let Some(start) = state.receiver_key.find(payload).map(|at| at + RECEIVER_KEY.len()) else { return };
    let Some(length) = memchr::memchr(b'"', &payload[start..]) else { return };
    let Ok(receiver) = std::str::from_utf8(&payload[start..start + length]) else { return };
    let Some(peer) = state.peers.get(receiver) else { return };
    if push_frame(peer, OP_TEXT, payload) {
        peer.wake.notify_one();
    }
}

/// A final text frame's first byte.
const OP_TEXT: u8 = 0x81;

/// Appends a frame (`first`: FIN and opcode) to `peer`'s output; false when it is dropped instead. A connection that
/// stopped reading loses further frames, whoever they come from (a peer's signals, its own pongs), rather than growing
/// its buffer without bound; the load generator counts lost signals.
fn push_frame(peer: &Peer, first: u8, payload: &[u8]) -> bool {
    let mut output = peer.output.borrow_mut();
    if output.len() > MAX_PENDING {
        return false;
    }
    ws::put_header(&mut output, first, 0, payload.len());
    output.extend_from_slice(payload);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = Vec::new();
        ws::put_header(&mut frame, 0x80 | opcode, ws::MASKED, payload.len());
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn forwards_a_signal_unmasked_to_its_receiver_and_keeps_a_partial_frame() {
        let state = RefCell::new(State::default());
        let sender = Rc::new(Peer { output: RefCell::new(Vec::new()), wake: Notify::new() });
        let receiver = Rc::new(Peer { output: RefCell::new(Vec::new()), wake: Notify::new() });
        state.borrow_mut().peers.insert("f2".into(), receiver.clone());
        let signal = br#"{"Signal":{"receiver":"f2","data":{"Offer":"v=0 a long enough SDP to need a 16-bit length; "#;
        let signal = [signal.as_slice(), &[b'x'; 200], b"\"}}}"].concat();
        let mut bytes = masked_frame(0x1, &signal, [1, 2, 3, 4]);
        let second = masked_frame(0x1, br#"{"Signal":{"receiver":"f2","data":"c"}}"#, [9, 8, 7, 6]);
        bytes.extend_from_slice(&second[..5]);
        let mut input = Input::new(bytes);

        assert!(forward_frames(&mut input, &state, &sender).unwrap());
        let output = receiver.output.borrow().clone();
        let length = (signal.len() as u16).to_be_bytes();
        assert_eq!(&output[..4], &[0x81, 126, length[0], length[1]]);
        assert_eq!(&output[4..], signal.as_slice());
        assert_eq!(&input.bytes[..input.filled], &second[..5], "the partial frame waits for its rest");

        input.bytes[input.filled..input.filled + second.len() - 5].copy_from_slice(&second[5..]);
        input.filled += second.len() - 5;
        assert!(forward_frames(&mut input, &state, &sender).unwrap());
        assert_eq!(input.filled, 0);
        assert!(receiver.output.borrow().ends_with(br#"{"Signal":{"receiver":"f2","data":"c"}}"#));
        assert!(sender.output.borrow().is_empty());
    }

    #[test]
    fn answers_ping_and_close_and_refuses_unmasked_frames() {
        let state = RefCell::new(State::default());
        let me = Rc::new(Peer { output: RefCell::new(Vec::new()), wake: Notify::new() });
        let mut bytes = masked_frame(0x9, b"hi", [5, 5, 5, 5]);
        bytes.extend(masked_frame(0x8, &[], [1, 1, 1, 1]));
        assert!(!forward_frames(&mut Input::new(bytes), &state, &me).unwrap());
        assert_eq!(me.output.borrow().as_slice(), &[0x8A, 2, b'h', b'i', 0x88, 0]);

        let unmasked = vec![0x81, 2, b'h', b'i'];
        assert!(forward_frames(&mut Input::new(unmasked), &state, &me).is_err());
    }
}
