//! Server side of RFC 6455 framing, sans-IO.
//!
//! Why not tungstenite: it keeps a read buffer (128 KiB by default) and a write buffer that grows to the largest
//! frame ever sent for the whole life of every connection. Switchboard's users mostly sit idle, and a presence
//! snapshot for a busy server is hundreds of kilobytes, so that would cost far more than the whole rest of a
//! connection. This decoder holds no buffer while idle: complete frames are decoded in place from the caller's read
//! buffer (shared per worker thread), only a frame that straddles two reads is copied, and that copy is released as
//! soon as the frame completes. Messages over the soft limit are skipped as they stream by, never buffered.

/// Opcodes (RFC 6455 section 5.2).
mod opcode {
    /// A later fragment of a message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (or its first fragment).
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    /// Closing handshake.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// A worker thread's buffer for inflated messages is given back when a message made it larger than this.
const MAX_KEPT_INFLATE_BUFFER: usize = 512 * 1024;

thread_local! {
    /// Inflated text of the compressed message being delivered (one per worker thread, like the read buffer).
    static INFLATED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
const MAX_HEADER: usize = 14;
/// Control frames carry at most 125 bytes (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message.
    Text(&'a str),
    /// A complete binary message (the caller rejects it; its content is not kept).
    Binary,
    /// A message over the soft limit was skipped; its length in bytes.
    TooLarge(usize),
    /// A ping with its payload, to be echoed in a pong.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// The peer started the closing handshake, with its status code if any.
    Close(Option<u16>),
    /// A compressed message is about to be inflated (its `Text` follows): a caller holding a lock across events
    /// should let it go now, so that one client's inflating never holds up others.
    Inflating,
}

/// Why the connection must be failed; maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Framing violation (close 1002).
    #[error("websocket protocol violation: {0}")]
    Protocol(&'static str),
    /// A text message that is not UTF-8 (close 1007).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A frame or message over the hard limit (close 1009).
    #[error("frame of {0} bytes is over the hard limit")]
    TooBig(u64),
    /// A compressed message that does not inflate (close 1007).
    #[error("compressed message is not valid DEFLATE data")]
    InvalidCompressed,
}

impl DecodeError {
    /// The close code to fail the connection with.
    pub fn close_code(self) -> u16 {
        use switchboard_proto::close_code;
        match self {
            Self::Protocol(_) => close_code::PROTOCOL_ERROR,
            Self::InvalidUtf8 | Self::InvalidCompressed => close_code::INVALID_PAYLOAD,
            Self::TooBig(_) => close_code::MESSAGE_TOO_BIG,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    /// RSV1: the message is compressed (permessage-deflate; first frame of a data message only).
    compressed: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
}

#[derive(Debug, Default)]
enum State {
    /// Waiting for (the rest of) a header; `header[..filled]` holds the bytes seen so far.
    #[default]
    Header,
    /// Inside a frame's payload, `done` bytes of it seen.
    Payload { header: Header, done: u64 },
}

/// Where a completed frame's payload is.
enum Payload<'a> {
    /// Here, in full: the frame was whole in one read, or is a control frame, or is empty.
    Direct(&'a mut [u8]),
    /// In `Decoder::message`, with the earlier fragments of its message.
    Assembled,
}

impl<'a> Payload<'a> {
    /// The bytes of a control frame, which never sits in the message buffer.
    fn direct(self) -> &'a [u8] {
        match self {
            Payload::Direct(bytes) => bytes,
            Payload::Assembled => &[],
        }
    }
}

/// Incremental frame decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    soft_limit: usize,
    hard_limit: u64,
    state: State,
    header: [u8; MAX_HEADER],
    filled: usize,
    /// Payload bytes of a data message that spans reads or frames. Empty (no allocation) between messages.
    message: Vec<u8>,
    /// Opcode of the data message in progress (its first frame), if any.
    message_opcode: Option<u8>,
    /// Total length of the data message in progress.
    message_len: u64,
    /// The message in progress is over the soft limit (or binary) and its bytes are skipped as they arrive.
    message_skipped: bool,
    /// The message in progress is compressed.
    message_compressed: bool,
    /// permessage-deflate was negotiated: messages may be compressed.
    deflate: bool,
    /// Payload of a control frame that spans reads.
    control: Vec<u8>,
}

impl Decoder {
    /// `soft_limit`: messages longer than this are skipped and reported as [`Event::TooLarge`].
    /// `hard_limit`: frames or messages longer than this fail the connection.
    pub fn new(soft_limit: usize, hard_limit: usize) -> Self {
        Self {
            soft_limit,
            hard_limit: hard_limit as u64,
            state: State::Header,
            header: [0; MAX_HEADER],
            filled: 0,
            message: Vec::new(),
            message_opcode: None,
            message_len: 0,
            message_skipped: false,
            message_compressed: false,
            deflate: false,
            control: Vec::new(),
        }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated).
    pub fn accept_compressed(&mut self) {
        self.deflate = true;
    }

    /// Whether permessage-deflate was negotiated.
    pub fn accepts_compressed(&self) -> bool {
        self.deflate
    }

    #[cfg(test)]
    fn holds_memory(&self) -> bool {
        self.message.capacity() > 0 || self.control.capacity() > 0
    }

    /// Decodes everything in `input` (bytes just read; unmasked in place) and calls `on_event` for each event.
    pub fn feed(&mut self, mut input: &mut [u8], mut on_event: impl FnMut(Event<'_>)) -> Result<(), DecodeError> {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let take = (MAX_HEADER - self.filled).min(input.len());
                    self.header[self.filled..self.filled + take].copy_from_slice(&input[..take]);
                    let available = self.filled + take;
                    match parse_header(&self.header[..available])? {
                        None => {
                            self.filled = available;
                            input = &mut input[take..];
                        }
                        Some((header, header_len)) => {
                            // Only the part of `take` that belongs to the header is consumed.
                            let consumed = header_len - self.filled;
                            self.filled = 0;
                            input = &mut input[consumed..];
                            self.start_frame(&header)?;
                            if header.len == 0 {
                                self.complete_frame(header, Payload::Direct(&mut []), &mut on_event)?;
                            } else {
                                self.state = State::Payload { header, done: 0 };
                            }
                        }
                    }
                }
                State::Payload { header, done } => {
                    let remaining = header.len - done;
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len());
                    let (chunk, rest) = std::mem::take(&mut input).split_at_mut(take);
                    input = rest;
                    let done_now = done + take as u64;
                    let complete = done_now == header.len;
                    self.state = State::Payload { header, done: done_now };
                    let control = header.opcode >= opcode::CLOSE;
                    if !control && self.message_skipped {
                        if complete {
                            self.complete_frame(header, Payload::Direct(&mut []), &mut on_event)?;
                        }
                        continue;
                    }
                    unmask(chunk, header.mask, done);
                    let unfragmented = control || (header.fin && header.opcode != opcode::CONTINUATION);
                    if unfragmented && done == 0 && complete {
                        // The whole frame is in this read: decode it in place, no copy.
                        self.complete_frame(header, Payload::Direct(chunk), &mut on_event)?;
                        continue;
                    }
                    let buffer = if control { &mut self.control } else { &mut self.message };
                    if buffer.is_empty() {
                        let expected = if control { header.len } else { header.len.min(self.soft_limit as u64) };
                        buffer.reserve(usize::try_from(expected).unwrap_or(0));
                    }
                    buffer.extend_from_slice(chunk);
                    if complete {
                        if control {
                            let mut payload = std::mem::take(&mut self.control);
                            self.complete_frame(header, Payload::Direct(&mut payload), &mut on_event)?;
                        } else {
                            self.complete_frame(header, Payload::Assembled, &mut on_event)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a new frame against the message in progress.
    fn start_frame(&mut self, header: &Header) -> Result<(), DecodeError> {
        if header.compressed {
            if !self.deflate {
                return Err(DecodeError::Protocol("reserved bits set without an extension"));
            }
            if !matches!(header.opcode, opcode::TEXT | opcode::BINARY) {
                return Err(DecodeError::Protocol("compressed bit on a control or continuation frame"));
            }
        }
        match header.opcode {
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !header.fin || header.len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(DecodeError::Protocol("fragmented or oversized control frame"));
                }
                Ok(())
            }
            opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => {
                let continuation = header.opcode == opcode::CONTINUATION;
                match (continuation, self.message_opcode) {
                    (true, None) => return Err(DecodeError::Protocol("continuation frame without a message")),
                    (false, Some(_)) => return Err(DecodeError::Protocol("new message inside a fragmented one")),
                    (false, None) => {
                        self.message_opcode = Some(header.opcode);
                        self.message_len = 0;
                        self.message_skipped = header.opcode == opcode::BINARY;
                        self.message_compressed = header.compressed;
                        self.message = Vec::new();
                    }
                    (true, Some(_)) => {}
                }
                self.message_len = self.message_len.saturating_add(header.len);
                if header.len > self.hard_limit || self.message_len > self.hard_limit {
                    return Err(DecodeError::TooBig(self.message_len));
                }
                if self.message_len > self.soft_limit as u64 {
                    // Oversized text is dropped as it streams by, like all binary content.
                    self.message_skipped = true;
                    self.message = Vec::new();
                }
                Ok(())
            }
            _ => Err(DecodeError::Protocol("unknown opcode")),
        }
    }

    /// A frame is complete.
    fn complete_frame(
        &mut self,
        header: Header,
        payload: Payload<'_>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        self.state = State::Header;

        match header.opcode {
            opcode::PING => on_event(Event::Ping(payload.direct())),
            opcode::PONG => on_event(Event::Pong),
            opcode::CLOSE => on_event(Event::Close(parse_close(payload.direct())?)),
            _ => {
                if !header.fin {
                    return Ok(());
                }
                // The message is complete: take its state, which also releases its buffer.
                let opcode = self.message_opcode.take();
                let skipped = std::mem::take(&mut self.message_skipped);
                let mut assembled = std::mem::take(&mut self.message);
                if skipped {
                    if opcode == Some(opcode::BINARY) {
                        on_event(Event::Binary);
                    } else {
                        on_event(Event::TooLarge(usize::try_from(self.message_len).unwrap_or(usize::MAX)));
                    }
                    return Ok(());
                }
                // An unfragmented frame arrives directly; the last fragment of a fragmented message (even an empty
                // one) completes what was assembled.
                let bytes: &[u8] = match payload {
                    Payload::Direct(bytes) if assembled.is_empty() => bytes,
                    Payload::Direct(bytes) => {
                        assembled.extend_from_slice(bytes);
                        &assembled
                    }
                    Payload::Assembled => &assembled,
                };
                if std::mem::take(&mut self.message_compressed) {
                    on_event(Event::Inflating);
                    return INFLATED.with_borrow_mut(|inflated| {
                        let result = match super::deflate::inflate(bytes, self.soft_limit, inflated) {
                            Ok(()) => match simdutf8::basic::from_utf8(inflated) {
                                Ok(text) => {
                                    on_event(Event::Text(text));
                                    Ok(())
                                }
                                Err(_) => Err(DecodeError::InvalidUtf8),
                            },
                            Err(super::deflate::InflateError::TooLarge(len)) => {
                                on_event(Event::TooLarge(len));
                                Ok(())
                            }
                            Err(super::deflate::InflateError::Corrupt) => Err(DecodeError::InvalidCompressed),
                        };
                        if inflated.capacity() > MAX_KEPT_INFLATE_BUFFER {
                            *inflated = Vec::new();
                        }
                        result
                    });
                }
                // simdutf8: validating a relayed offer with std's from_utf8 was 2.5% of the server's CPU per message,
                // with simdutf8 1%.
                let text = simdutf8::basic::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
                on_event(Event::Text(text));
            }
        }
        Ok(())
    }
}

/// The status code of a close frame's payload, checked against RFC 6455 section 7.4.
fn parse_close(payload: &[u8]) -> Result<Option<u16>, DecodeError> {
    match payload {
        [] => Ok(None),
        [_] => Err(DecodeError::Protocol("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            // 1004-1006 and 1015 are reserved for reporting, never sent; below 1000 and 1016-2999 are unassigned.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(DecodeError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(DecodeError::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// Parses a header from `bytes`; `None` when more bytes are needed.
fn parse_header(bytes: &[u8]) -> Result<Option<(Header, usize)>, DecodeError> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    // RSV1 is permessage-deflate's, checked against the negotiation by the caller; RSV2 and RSV3 have no extension.
    if first & 0x30 != 0 {
        return Err(DecodeError::Protocol("reserved bits set without an extension"));
    }
    if second & 0x80 == 0 {
        return Err(DecodeError::Protocol("client frames must be masked"));
    }
    let (len, len_bytes) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(eight) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(eight);
                (u64::from_be_bytes(raw), 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let Some(mask_bytes) = rest.get(len_bytes..len_bytes + 4) else {
        return Ok(None);
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(mask_bytes);
    let header = Header { fin: first & 0x80 != 0, compressed: first & 0x40 != 0, opcode: first & 0x0F, mask, len };
    Ok(Some((header, 2 + len_bytes + 4)))
}

/// XORs `data`, which starts at byte `offset` of a frame's payload, with the frame's mask.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let start = (offset % 4) as usize;
    let rotated = [mask[start], mask[(start + 1) % 4], mask[(start + 2) % 4], mask[(start + 3) % 4]];
    // 32 bytes per step against a 32-byte key, which the compiler turns into vector XORs: the four-byte loop before it
    // was 2% of the server's CPU per relayed message (every client frame is masked, SDP and all).
    let mut wide_key = [0u8; 32];
    for (i, byte) in wide_key.iter_mut().enumerate() {
        *byte = rotated[i % 4];
    }
    let mut blocks = data.chunks_exact_mut(32);
    for block in &mut blocks {
        for (byte, mask_byte) in block.iter_mut().zip(&wide_key) {
            *byte ^= mask_byte;
        }
    }
    // A block is a multiple of four bytes, so the rest starts at key byte 0 again.
    for (byte, mask_byte) in blocks.into_remainder().iter_mut().zip(rotated.iter().cycle()) {
        *byte ^= mask_byte;
    }
}

/// Writes an unmasked server frame header for `len` payload bytes; returns the buffer and its used length.
pub fn encode_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// Opcodes for [`encode_header`].
pub use opcode::{
    CLOSE as OP_CLOSE, CONTINUATION as OP_CONTINUATION, PING as OP_PING, PONG as OP_PONG, TEXT as OP_TEXT,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[derive(Debug, PartialEq)]
    enum Owned {
        Text(String),
        Binary,
        TooLarge(usize),
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
        Inflating,
    }

    fn decode_in_pieces(decoder: &mut Decoder, bytes: &[u8], piece: usize) -> Result<Vec<Owned>, DecodeError> {
        let mut events = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            let mut chunk = chunk.to_vec();
            decoder.feed(&mut chunk, |event| {
                events.push(match event {
                    Event::Text(text) => Owned::Text(text.to_owned()),
                    Event::Binary => Owned::Binary,
                    Event::TooLarge(n) => Owned::TooLarge(n),
                    Event::Ping(p) => Owned::Ping(p.to_vec()),
                    Event::Pong => Owned::Pong,
                    Event::Close(code) => Owned::Close(code),
                    Event::Inflating => Owned::Inflating,
                })
            })?;
        }
        Ok(events)
    }

    /// Unmasking in 32-byte blocks gives what XOR byte by byte gives, at every offset into the frame and length.
    #[test]
    fn unmask_matches_bytewise_xor_at_every_offset() {
        let mask = [0x12, 0x9c, 0x00, 0xff];
        for offset in 0..9u64 {
            for len in 0..100usize {
                let original: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
                let mut data = original.clone();
                unmask(&mut data, mask, offset);
                for (i, (byte, was)) in data.iter().zip(&original).enumerate() {
                    assert_eq!(*byte, was ^ mask[(offset as usize + i) % 4], "offset {offset} len {len} byte {i}");
                }
            }
        }
    }

    /// `text` compressed as a permessage-deflate client does: raw DEFLATE, sync flush, its last four bytes removed.
    fn deflated(text: &[u8]) -> Vec<u8> {
        use flate2::{Compress, Compression, FlushCompress};
        let mut compress = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(text.len() + 1024);
        compress.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    /// A client frame with RSV1 set.
    fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = frame(fin, opcode, payload);
        bytes[0] |= 0x40;
        bytes
    }

    #[test]
    fn inflates_compressed_messages_in_any_split() {
        let long = "{\"type\":\"offer\",\"sdp\":\"".to_string()
            + &"a=candidate:1 1 udp 2122260223 10.0.0.1 ".repeat(200)
            + "\"}";
        let packed = deflated(long.as_bytes());
        let mut stream = compressed_frame(true, opcode::TEXT, &packed);
        stream.extend(frame(true, opcode::TEXT, b"{\"plain\":1}"));
        // Fragmented: RSV1 on the first frame only, a ping between the fragments.
        let (first, rest) = packed.split_at(packed.len() / 3);
        stream.extend(compressed_frame(false, opcode::TEXT, first));
        stream.extend(frame(true, opcode::PING, b"p"));
        stream.extend(frame(true, opcode::CONTINUATION, rest));
        // Every inflation is announced first, so that the connection can let go of the hub's lock.
        let expected = vec![
            Owned::Inflating,
            Owned::Text(long.clone()),
            Owned::Text("{\"plain\":1}".into()),
            Owned::Ping(b"p".to_vec()),
            Owned::Inflating,
            Owned::Text(long.clone()),
        ];
        for piece in [1, 5, 64, 1000, stream.len()] {
            let mut decoder = Decoder::new(100_000, 1 << 20);
            decoder.accept_compressed();
            assert_eq!(decode_in_pieces(&mut decoder, &stream, piece).unwrap(), expected, "piece size {piece}");
            assert!(!decoder.holds_memory());
        }
    }

    #[test]
    fn compressed_messages_are_refused_unless_negotiated_and_checked_when_they_are() {
        let packed = deflated(b"{\"type\":\"ping\"}");
        let mut plain = Decoder::new(1000, 1 << 20);
        assert_eq!(
            decode_in_pieces(&mut plain, &compressed_frame(true, opcode::TEXT, &packed), 100),
            Err(DecodeError::Protocol("reserved bits set without an extension"))
        );
        let negotiated = || {
            let mut decoder = Decoder::new(1000, 1 << 20);
            decoder.accept_compressed();
            decoder
        };
        let mut continuation = frame(false, opcode::TEXT, &packed[..2]);
        continuation.extend(compressed_frame(true, opcode::CONTINUATION, &packed[2..]));
        assert_eq!(
            decode_in_pieces(&mut negotiated(), &continuation, 100),
            Err(DecodeError::Protocol("compressed bit on a control or continuation frame"))
        );
        assert!(decode_in_pieces(&mut negotiated(), &compressed_frame(true, opcode::PING, b""), 100).is_err());
        assert_eq!(
            decode_in_pieces(&mut negotiated(), &compressed_frame(true, opcode::TEXT, &[0xff, 0xfe, 0xfd]), 100),
            Err(DecodeError::InvalidCompressed)
        );
        // Cut short inside a stored block.
        assert_eq!(
            decode_in_pieces(
                &mut negotiated(),
                &compressed_frame(true, opcode::TEXT, &[0x00, 0x10, 0x00, 0xef, 0xff, b'{']),
                100
            ),
            Err(DecodeError::InvalidCompressed)
        );
        assert_eq!(
            decode_in_pieces(&mut negotiated(), &compressed_frame(true, opcode::TEXT, &deflated(&[0xc3, 0x28])), 100),
            Err(DecodeError::InvalidUtf8)
        );
        // A small frame that inflates past the message limit is skipped, like a long one, and the next one is read.
        let mut bomb = compressed_frame(true, opcode::TEXT, &deflated(&[b' '; 5000]));
        bomb.extend(compressed_frame(true, opcode::TEXT, &packed));
        let events = decode_in_pieces(&mut negotiated(), &bomb, 100).unwrap();
        assert!(matches!(events[1], Owned::TooLarge(n) if n > 1000), "{events:?}");
        assert_eq!(events[3], Owned::Text("{\"type\":\"ping\"}".into()));
        // RSV2 and RSV3 belong to no extension.
        let mut rsv2 = frame(true, opcode::TEXT, b"{}");
        rsv2[0] |= 0x20;
        assert!(decode_in_pieces(&mut negotiated(), &rsv2, 100).is_err());
    }

    #[test]
    fn decodes_any_split_of_a_stream() {
        let long = "x".repeat(70_000);
        let mut stream = frame(true, opcode::TEXT, br#"{"type":"ping"}"#);
        stream.extend(frame(false, opcode::TEXT, "héllo ".as_bytes()));
        stream.extend(frame(true, opcode::PING, b"hb"));
        stream.extend(frame(true, opcode::CONTINUATION, "wörld".as_bytes()));
        stream.extend(frame(true, opcode::TEXT, long.as_bytes()));
        stream.extend(frame(false, opcode::TEXT, b"{\"a\":"));
        stream.extend(frame(true, opcode::CONTINUATION, b"1}"));
        stream.extend(frame(false, opcode::TEXT, b"frag"));
        stream.extend(frame(true, opcode::CONTINUATION, b""));
        stream.extend(frame(true, opcode::TEXT, b""));
        stream.extend(frame(true, opcode::BINARY, b"\x00\x01"));
        stream.extend(frame(true, opcode::PONG, b""));
        stream.extend(frame(true, opcode::CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
        let expected = vec![
            Owned::Text(r#"{"type":"ping"}"#.into()),
            Owned::Ping(b"hb".to_vec()),
            Owned::Text("héllo wörld".into()),
            Owned::Text(long.clone()),
            Owned::Text("{\"a\":1}".into()),
            Owned::Text("frag".into()),
            Owned::Text(String::new()),
            Owned::Binary,
            Owned::Pong,
            Owned::Close(Some(1000)),
        ];
        for piece in [1, 2, 3, 7, 13, 100, 4096, stream.len()] {
            let mut decoder = Decoder::new(100_000, 1 << 20);
            assert_eq!(decode_in_pieces(&mut decoder, &stream, piece).unwrap(), expected, "piece size {piece}");
            assert!(!decoder.holds_memory(), "idle decoder keeps no buffer (piece size {piece})");
        }
    }

    #[test]
    fn skips_messages_over_the_soft_limit_and_recovers() {
        let mut stream = frame(true, opcode::TEXT, &[b'a'; 300]);
        stream.extend(frame(false, opcode::TEXT, &[b'b'; 60]));
        stream.extend(frame(true, opcode::CONTINUATION, &[b'c'; 60]));
        stream.extend(frame(true, opcode::TEXT, b"ok"));
        for piece in [1, 5, 64, stream.len()] {
            let mut decoder = Decoder::new(100, 1000);
            let events = decode_in_pieces(&mut decoder, &stream, piece).unwrap();
            assert_eq!(events, vec![Owned::TooLarge(300), Owned::TooLarge(120), Owned::Text("ok".into())]);
        }
    }

    #[test]
    fn fails_on_protocol_violations() {
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (frame(true, opcode::TEXT, &[0xff, 0xfe]), DecodeError::InvalidUtf8),
            (frame(true, opcode::TEXT, &[b'a'; 2000]), DecodeError::TooBig(2000)),
            (frame(true, opcode::CONTINUATION, b"x"), DecodeError::Protocol("continuation frame without a message")),
            (frame(false, opcode::PING, b"x"), DecodeError::Protocol("fragmented or oversized control frame")),
            (frame(true, 0x3, b"x"), DecodeError::Protocol("unknown opcode")),
            (vec![0x81, 0x01, b'x'], DecodeError::Protocol("client frames must be masked")),
            (frame(true, opcode::CLOSE, &1005u16.to_be_bytes()), DecodeError::Protocol("invalid close code")),
            (frame(true, opcode::CLOSE, &999u16.to_be_bytes()), DecodeError::Protocol("invalid close code")),
            (frame(true, opcode::CLOSE, &[0x03, 0xE8, 0xFF]), DecodeError::InvalidUtf8),
            (vec![0xC1, 0x80, 0, 0, 0, 0], DecodeError::Protocol("reserved bits set without an extension")),
        ];
        for (bytes, error) in cases {
            let mut decoder = Decoder::new(100, 1000);
            assert_eq!(decode_in_pieces(&mut decoder, &bytes, bytes.len()), Err(error));
        }
        let mut interleaved = frame(false, opcode::TEXT, b"a");
        interleaved.extend(frame(true, opcode::TEXT, b"b"));
        let mut decoder = Decoder::new(100, 1000);
        assert!(matches!(decode_in_pieces(&mut decoder, &interleaved, 3), Err(DecodeError::Protocol(_))));
        let huge_header = [0x81u8, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4];
        let mut decoder = Decoder::new(100, 1000);
        assert!(matches!(decode_in_pieces(&mut decoder, &huge_header, 14), Err(DecodeError::TooBig(_))));
    }

    #[test]
    fn encodes_headers_of_every_length_class() {
        assert_eq!(encode_header(OP_TEXT, 5), ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        let (header, used) = encode_header(OP_TEXT, 300);
        assert_eq!(&header[..used], &[0x81, 126, 1, 44]);
        let (header, used) = encode_header(OP_TEXT, 70_000);
        assert_eq!(&header[..used], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    proptest::proptest! {
        /// Any sequence of text messages, fragmented any way (empty fragments included) and interleaved with pings,
        /// decodes to the same messages however the byte stream is split, and leaves no buffer behind.
        #[test]
        fn fragmented_streams_decode_whatever_the_split(
            messages in proptest::collection::vec(
                (proptest::collection::vec("[a-zé{}\":]{0,40}", 1..5), proptest::bool::ANY), 1..8),
            cuts in proptest::collection::vec(1usize..300, 1..20),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (fragments, ping) in &messages {
                for (i, fragment) in fragments.iter().enumerate() {
                    let opcode = if i == 0 { opcode::TEXT } else { opcode::CONTINUATION };
                    stream.extend(frame(i + 1 == fragments.len(), opcode, fragment.as_bytes()));
                    if *ping && i == 0 && fragments.len() > 1 {
                        stream.extend(frame(true, opcode::PING, b"p"));
                        expected.push(Owned::Ping(b"p".to_vec()));
                    }
                }
                expected.push(Owned::Text(fragments.concat()));
            }
            let mut decoder = Decoder::new(10_000, 100_000);
            let mut events = Vec::new();
            let mut rest: &[u8] = &stream;
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                let (piece, tail) = rest.split_at(n);
                rest = tail;
                events.extend(decode_in_pieces(&mut decoder, piece, n).unwrap());
            }
            proptest::prop_assert_eq!(events, expected);
            proptest::prop_assert!(!decoder.holds_memory());
        }
    }
}
