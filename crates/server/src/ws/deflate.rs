//! WebSocket compression, `permessage-deflate` (RFC 7692), shaped for a server that sends the same lists to many.
//!
//! Browsers offer it on every connection. What we do with it:
//! - **Negotiation**: accepted with `server_no_context_takeover; client_no_context_takeover`, so that no connection
//!   keeps compression state between messages: an idle connection costs nothing more, and one inflater per worker
//!   thread serves all its connections.
//! - **Sending**: only frames with [`Shared`] pieces are compressed, and each shared piece is compressed once for every
//!   connection (cached in the piece). A frame's own bytes (a `welcome`'s fields around the lists) go as DEFLATE
//!   *stored* blocks, which cost a copy, so a `welcome` for a 10,000-user lobby costs each connection a few hundred
//!   bytes of work while its 130 KB of names shrink to about 20 KB once. Frames without shared pieces (relayed SDP,
//!   candidates, acks) go uncompressed, as RFC 7692 allows per message: compressing each would cost several times
//!   what relaying it does.
//! - Each piece of a compressed message ends on a DEFLATE block boundary and goes in its own WebSocket frame, so a
//!   client that sees a frame it has seen before (every reader of a shared list does) may reuse what inflating it gave.
//! - **Receiving**: compressed messages are inflated after their frames are assembled, bounded by the message size
//!   limit whatever the compression ratio.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper::header::{HeaderMap, SEC_WEBSOCKET_EXTENSIONS};
use switchboard_core::OutFrame;

/// The `Sec-WebSocket-Extensions` answer when an offer is accepted.
pub const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The answer to an offer that asked for our window size: RFC 7692 7.1.2.1 accepts it by echoing it.
pub const ACCEPTED_WITH_WINDOW: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// The empty stored block a sync flush ends with; RFC 7692 removes it from the end of every message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Shared pieces shorter than this are sent as stored blocks: compressing them gains nothing worth a frame.
const COMPRESS_MIN_BYTES: usize = 256;

/// The `Sec-WebSocket-Extensions` answer to the first offer of `permessage-deflate` we can accept, if any.
///
/// An offer is declined when it has a parameter we do not know, a parameter twice, or asks us for a window under
/// 2^15 bytes (`server_max_window_bits`, which our compressor cannot honour); a later offer may still be accepted.
pub fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(acceptable_offer)
}

/// A window size parameter: a decimal number from 8 to 15, written without sign or leading zero.
fn window_bits(value: Option<&str>) -> Option<u8> {
    let value = value?;
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) || value.starts_with('0') {
        return None;
    }
    value.parse::<u8>().ok().filter(|bits| (8..=15).contains(bits))
}

fn acceptable_offer(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next().is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate")) {
        return None;
    }
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let (slot, ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            // We always compress with a 32 KiB window: a smaller limit cannot be honoured.
            "server_max_window_bits" => (2, window_bits(value) == Some(15)),
            // Any window the client compresses with inflates with ours.
            "client_max_window_bits" => (3, value.is_none() || window_bits(value).is_some()),
            _ => return None,
        };
        if !ok || std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(if seen[2] { ACCEPTED_WITH_WINDOW } else { ACCEPTED })
}

thread_local! {
    /// One compressor and one inflater per worker thread: with no context takeover they are reset per use.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `bytes` compressed into DEFLATE blocks that end on a byte boundary with an empty stored block (a sync flush), so
/// that any bytes may follow.
fn compress_segment(bytes: &[u8]) -> Bytes {
    COMPRESSOR.with_borrow_mut(|slot| {
        // The default level: a shared list is compressed once for all its readers, and on lists of names it gives
        // 5.5x in about 1 ms per 130 KB here (zlib-rs' level 1 gives 3.2x).
        let compress = slot.get_or_insert_with(|| Compress::new(Compression::default(), false));
        compress.reset();
        let mut out = Vec::with_capacity(bytes.len() / 4 + 64);
        loop {
            let consumed = usize::try_from(compress.total_in()).unwrap_or(usize::MAX).min(bytes.len());
            if compress.compress_vec(&bytes[consumed..], &mut out, FlushCompress::Sync).is_err() {
                // Not reachable with a fresh stream; stored blocks are always right.
                return stored_segment(bytes);
            }
            // The flush is complete once all input is in and the output did not fill the room it had.
            if compress.total_in() >= bytes.len() as u64 && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(1024));
        }
        if !out.ends_with(&SYNC_TAIL) {
            // A sync flush always ends so; anything else would make the message undecodable.
            return stored_segment(bytes);
        }
        Bytes::from(out)
    })
}

/// `bytes` as stored (uncompressed) DEFLATE blocks.
fn stored_segment(bytes: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(bytes.len() + 5 * (bytes.len() / 65535 + 1));
    append_stored(&mut out, bytes);
    Bytes::from(out)
}

fn append_stored(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.chunks(65535) {
        let len = chunk.len() as u16;
        // BFINAL 0, BTYPE 00, padded to the byte; then LEN and its complement, little-endian.
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Whether `frame` is sent compressed: it has a shared piece worth compressing once for everyone.
pub fn worth_compressing(frame: &OutFrame) -> bool {
    let mut worth = false;
    frame.for_each_piece(|bytes, shared| worth |= shared.is_some() && bytes.len() >= COMPRESS_MIN_BYTES);
    worth
}

/// Appends `frame` as a compressed message: one WebSocket frame per segment, the first with RSV1 set.
pub fn encode_compressed(frame: &OutFrame, out: &mut Vec<u8>) {
    let mut message = MessageWriter { out, frames: 0, own: Vec::new() };
    frame.for_each_piece(|bytes, shared| match shared {
        Some(shared) if bytes.len() >= COMPRESS_MIN_BYTES => {
            message.flush_own(false);
            let segment = shared.encoded(compress_segment);
            message.frame_header(segment.len(), false);
            message.out.extend_from_slice(segment);
        }
        _ => message.own.extend_from_slice(bytes),
    });
    message.finish();
}

/// Writes the segments of one compressed message as WebSocket frames, holding back the last so it can be ended.
struct MessageWriter<'a> {
    out: &'a mut Vec<u8>,
    frames: usize,
    /// Own bytes not yet written (they become one stored segment).
    own: Vec<u8>,
}

impl MessageWriter<'_> {
    fn flush_own(&mut self, last: bool) {
        if self.own.is_empty() && !last {
            return;
        }
        // Stored blocks, then an empty stored block that ends every segment, as a sync flush ends the compressed
        // ones, so that a client can tell from a frame's last bytes (00 00 ff ff) that the next frame starts on a
        // block boundary. On the last frame RFC 7692 7.2.1 removes that block's last four bytes: one 0x00 is left.
        let tail = if last { 1 } else { 1 + SYNC_TAIL.len() };
        let blocks = self.own.len().div_ceil(65535);
        self.frame_header(self.own.len() + 5 * blocks + tail, last);
        append_stored(self.out, &self.own);
        self.own.clear();
        self.out.push(0);
        if !last {
            self.out.extend_from_slice(&SYNC_TAIL);
        }
    }

    /// The header of the message's next WebSocket frame, whose payload of `len` bytes the caller appends.
    fn frame_header(&mut self, len: usize, last: bool) {
        let opcode = if self.frames == 0 { super::frame::OP_TEXT } else { super::frame::OP_CONTINUATION };
        let (mut header, used) = super::frame::encode_header(opcode, len);
        if !last {
            header[0] &= !0x80;
        }
        if self.frames == 0 {
            header[0] |= 0x40;
        }
        self.out.extend_from_slice(&header[..used]);
        self.frames += 1;
    }

    /// Ends the message with its last frame: the own bytes left, or, when a shared segment came last, one byte.
    /// That byte is the start of an empty stored block whose remaining four bytes (00 00 ff ff) the receiver appends
    /// (RFC 7692 7.2.1: such a block ends every message and its last four bytes are removed). The shared segment's
    /// frame thereby stays exactly the cached bytes.
    fn finish(mut self) {
        self.flush_own(true);
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The text is longer than the limit (the length is as far as inflating went).
    #[error("compressed message inflates to more than {0} bytes")]
    TooLarge(usize),
    /// Not a valid DEFLATE stream.
    #[error("compressed message is not valid DEFLATE data")]
    Corrupt,
}

/// A final empty block (BFINAL 1, fixed Huffman codes, end of block): fed after a message, it ends the stream only
/// if the message ended on a block boundary, as every complete message does.
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// Output room given to the inflater per call, at most.
const INFLATE_CHUNK: usize = 64 * 1024;

/// Inflates into at most `room` new bytes at the end of `out`. flate2's `decompress_vec` zero-fills a vector's whole
/// spare capacity on every call, which for a buffer kept at its largest costs more than inflating a small message.
fn decompress_into(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    room: usize,
    flush: FlushDecompress,
) -> Result<Status, InflateError> {
    let len = out.len();
    out.resize(len + room, 0);
    let before = inflater.total_out();
    let status = inflater.decompress(input, &mut out[len..], flush);
    let produced = usize::try_from(inflater.total_out() - before).unwrap_or(usize::MAX).min(room);
    out.truncate(len + produced);
    status.map_err(|_| InflateError::Corrupt)
}

/// Inflates one message's payload into `out` (cleared first), at most `limit` bytes of it.
///
/// The cost is bounded by the input and the limit: zlib-rs inflates at hundreds of MB/s whatever the blocks (with
/// miniz_oxide, 61 KB of empty blocks took 190 ms), output stops at the limit, and the output room starts near the
/// expected size, so a small message costs about a microsecond, not three zero-filled 16 KiB buffers.
pub fn inflate(payload: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    out.clear();
    INFLATER.with_borrow_mut(|slot| {
        let inflater = slot.get_or_insert_with(|| Decompress::new(false));
        inflater.reset(false);
        let mut room = payload.len().saturating_mul(4).clamp(256, INFLATE_CHUNK);
        for mut input in [payload, &SYNC_TAIL[..]] {
            loop {
                let (in_before, out_before) = (inflater.total_in(), out.len());
                let status = decompress_into(inflater, input, out, room, FlushDecompress::Sync)?;
                let used = usize::try_from(inflater.total_in() - in_before).unwrap_or(usize::MAX).min(input.len());
                input = &input[used..];
                if out.len() > limit {
                    return Err(InflateError::TooLarge(out.len()));
                }
                if status == Status::StreamEnd {
                    // The sender ended with a final block (RFC 7692 7.2.3.5 allows it): nothing after it counts.
                    return Ok(());
                }
                let filled = out.len() - out_before == room;
                if input.is_empty() && !filled {
                    break;
                }
                if used == 0 && out.len() == out_before {
                    return Err(InflateError::Corrupt);
                }
                if filled {
                    room = (room * 2).min(INFLATE_CHUNK);
                }
            }
        }
        // A message cut inside a block (a stored block longer than what came) would otherwise pass as complete.
        let out_before = out.len();
        let status = decompress_into(inflater, &FINAL_EMPTY_BLOCK, out, 64, FlushDecompress::Finish)?;
        if status != Status::StreamEnd || out.len() != out_before {
            out.truncate(out_before);
            return Err(InflateError::Corrupt);
        }
        Ok(())
    })
}

/// Compressed frames carry shared pieces: used by tests to build frames as the hub does.
#[cfg(test)]
pub(crate) fn shared_frame(pieces: Vec<(Vec<u8>, bool)>) -> OutFrame {
    use switchboard_core::Piece;
    OutFrame::Pieces(
        pieces
            .into_iter()
            .map(|(bytes, shared)| {
                if shared {
                    Piece::Shared(switchboard_core::Shared::new(bytes))
                } else {
                    Piece::Own(Bytes::from(bytes))
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use switchboard_core::Shared;

    fn offer(values: &[&str]) -> bool {
        answer(values).is_some()
    }

    fn answer(values: &[&str]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(value).unwrap());
        }
        negotiate(&headers)
    }

    #[test]
    fn accepts_what_browsers_offer_and_declines_what_we_cannot_honour() {
        assert!(offer(&["permessage-deflate; client_max_window_bits"]));
        assert!(offer(&["permessage-deflate"]));
        assert!(offer(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]));
        assert!(offer(&["permessage-deflate; client_max_window_bits=10; server_max_window_bits=15"]));
        assert!(!offer(&[]));
        assert!(!offer(&["x-webkit-deflate-frame"]));
        assert!(!offer(&["permessage-deflate; server_max_window_bits=10"]));
        assert!(!offer(&["permessage-deflate; client_max_window_bits=16"]));
        assert!(!offer(&["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]));
        assert!(!offer(&["permessage-deflate; something_else"]));
        assert!(!offer(&["permessage-deflate; server_no_context_takeover=1"]));
        // A later acceptable offer, in the same header or another.
        assert!(offer(&["permessage-deflate; server_max_window_bits=9, permessage-deflate"]));
        assert!(offer(&["foo", "permessage-deflate; client_max_window_bits=\"12\""]));
        for odd in ["+15", "08", "015", "", "1 5"] {
            assert!(!offer(&[&format!("permessage-deflate; client_max_window_bits={odd}")]), "{odd:?}");
        }
        // An offered window of our size is accepted by echoing it (RFC 7692 7.1.2.1).
        assert_eq!(answer(&["permessage-deflate; server_max_window_bits=15"]), Some(ACCEPTED_WITH_WINDOW));
        assert_eq!(answer(&["permessage-deflate; client_max_window_bits"]), Some(ACCEPTED));
    }

    /// Splits encoded server frames into (first byte, payload) pairs.
    fn frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let (len, header) = match wire[1] {
                126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
                127 => (u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            out.push((wire[0], wire[header..header + len].to_vec()));
            wire = &wire[header + len..];
        }
        out
    }

    /// Inflates a message as a client does: payloads joined, the sync tail appended, one fresh inflater.
    fn client_inflate(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut joined: Vec<u8> = frames.iter().flat_map(|(_, payload)| payload.clone()).collect();
        joined.extend_from_slice(&SYNC_TAIL);
        let mut inflater = Decompress::new(false);
        let mut out = Vec::with_capacity(1 << 20);
        inflater.decompress_vec(&joined, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(inflater.total_in() as usize, joined.len());
        out
    }

    fn names(n: usize) -> Vec<u8> {
        let names: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
        let mut list = serde_json::to_vec(&names).unwrap();
        list.pop();
        list
    }

    #[test]
    fn a_welcome_is_stored_own_bytes_around_compressed_shared_lists() {
        let list = names(5000);
        let cases = [
            vec![
                (b"{\"type\":\"welcome\",\"idle\":".to_vec(), false),
                (list.clone(), true),
                (b",\"me\"]}".to_vec(), false),
            ],
            // Ending with a shared list, starting with one, two in a row, a short shared piece.
            vec![(b"{\"a\":".to_vec(), false), (list.clone(), true)],
            vec![(list.clone(), true), (b"]".to_vec(), false)],
            vec![(list.clone(), true), (list.clone(), true)],
            vec![(b"x".to_vec(), true), (list.clone(), true), (vec![b'y'; 70_000], false)],
        ];
        for pieces in cases {
            let frame = shared_frame(pieces);
            assert!(worth_compressing(&frame));
            let mut wire = Vec::new();
            encode_compressed(&frame, &mut wire);
            let frames = frames(&wire);
            // RSV1 on the first frame only, FIN on the last only, opcodes text then continuation.
            for (i, (first, payload)) in frames.iter().enumerate() {
                // Every frame but the last ends on a block boundary that a client can see.
                assert_eq!(payload.ends_with(&SYNC_TAIL), i < frames.len() - 1, "end of frame {i}");
                assert_eq!(first & 0x40 != 0, i == 0, "RSV1 of frame {i}");
                assert_eq!(first & 0x80 != 0, i == frames.len() - 1, "FIN of frame {i}");
                assert_eq!(first & 0x0f, if i == 0 { 1 } else { 0 }, "opcode of frame {i}");
            }
            assert_eq!(client_inflate(&frames), frame.to_bytes());
            // Our own inflater reads what we send.
            let joined: Vec<u8> = frames.iter().flat_map(|(_, payload)| payload.clone()).collect();
            let mut out = Vec::new();
            inflate(&joined, 1 << 20, &mut out).unwrap();
            assert_eq!(out, frame.to_bytes());
        }
    }

    #[test]
    fn a_shared_list_is_compressed_once_and_several_times_smaller() {
        let list = Shared::new(names(10_000));
        let frame = OutFrame::Shared(list.clone());
        let mut first = Vec::new();
        encode_compressed(&frame, &mut first);
        let encoded = list.encoded(|_| unreachable!("compressed by the first frame")).clone();
        assert!(encoded.len() * 4 < list.bytes().len(), "{} of {}", encoded.len(), list.bytes().len());
        let mut second = Vec::new();
        encode_compressed(&frame, &mut second);
        assert_eq!(first, second);
        // The segment's frame carries the cached bytes as they are: a client can recognise it.
        assert!(frames(&first).iter().any(|(_, payload)| payload[..] == encoded[..]));
    }

    #[test]
    fn small_or_unshared_frames_are_not_compressed() {
        assert!(!worth_compressing(&OutFrame::from(vec![b'x'; 10_000])));
        assert!(!worth_compressing(&OutFrame::Shared(Shared::new(vec![b'x'; 100]))));
        assert!(worth_compressing(&OutFrame::Shared(Shared::new(vec![b'x'; 300]))));
    }

    fn deflate_all(text: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(text.len() + 1024);
        compress.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&SYNC_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn inflate_is_bounded_whatever_the_ratio() {
        let bomb = deflate_all(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 20_000);
        let mut out = Vec::new();
        match inflate(&bomb, 65536, &mut out) {
            Err(InflateError::TooLarge(n)) => assert!(n <= 65536 + 256 * 1024, "{n}"),
            other => panic!("{other:?}"),
        }
        assert!(out.capacity() <= 65536 + 256 * 1024 + 4096);
        let text = b"{\"type\":\"ping\"}".repeat(100);
        inflate(&deflate_all(&text), 65536, &mut out).unwrap();
        assert_eq!(out, text);
        assert_eq!(
            inflate(&deflate_all(&text), text.len() - 1, &mut out).map_err(|e| matches!(e, InflateError::TooLarge(_))),
            Err(true)
        );
        assert_eq!(inflate(&[0xff, 0xff, 0xff], 65536, &mut out), Err(InflateError::Corrupt));
        // Thousands of empty blocks inflate to nothing (zlib-rs takes about a millisecond for these 61 KB; how long
        // is measured in docs/benchmarks.md, not asserted here).
        let blocks: usize = 60 * 1024 * 8 / 10;
        let mut empty = vec![0u8; (blocks * 10).div_ceil(8)];
        for i in 0..blocks {
            let bit = i * 10 + 1;
            empty[bit / 8] |= 1 << (bit % 8);
        }
        empty.push(0);
        inflate(&empty, 65536, &mut out).unwrap();
        assert!(out.is_empty());
        // A stored block that claims more bytes than there are is cut short, not read past.
        assert_eq!(inflate(&[0x00, 0x10, 0x00, 0xef, 0xff, b'a'], 65536, &mut out), Err(InflateError::Corrupt));
    }
}
