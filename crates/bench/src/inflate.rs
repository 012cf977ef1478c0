//! Inflating permessage-deflate messages (RFC 7692) for many clients at once, sharing the work where it is the same.
//!
//! In a storm every client receives the same compressed lists: each tick's delta, and the lobby list inside every
//! `welcome`. Inflating each copy would cost the load generator more than the server spends sending it (about
//! 500 MB/s of output here). Switchboard sends each compressed list in a WebSocket frame of its own, and the rest of
//! such a message (its own fields) as stored blocks in frames of their own, every frame but the last ending with the
//! empty stored block of a sync flush (00 00 ff ff). So a connection here:
//! - reads frames made only of stored blocks by hand (their text is their bytes; no inflater, no history);
//! - takes the text of a frame this thread inflated before from a small memo, when the same bytes come again;
//! - inflates anything else the ordinary way, with the message's text so far as the inflater's history.
//!
//! Why this gives exactly what inflating gives:
//! - Both shortcuts are taken only at a block boundary: at the start of a message, or after a frame that a shortcut
//!   read (a stored block ends exactly where it says; a remembered frame was shown to end a block, below). After any
//!   other frame the rest of the message is inflated the ordinary way.
//! - A frame is remembered only if its text does not depend on the history and it ends a block: it is inflated again
//!   twice, after 32 KiB of zero bytes and after 32 KiB of 0xff bytes, and must give the same text both times (a
//!   back-reference into the history would copy different bytes), and a final empty block fed after it must end the
//!   stream with no more text.
//!
//! `--deflate each` turns all of this off: every message is inflated by one inflater, as a browser does.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

/// The empty stored block that ends a sync flush; RFC 7692 removes it from the end of every message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// DEFLATE's window: the history a back-reference can reach.
const WINDOW: usize = 32 * 1024;
/// Frames that inflate to less than this are not remembered: comparing them costs about what inflating them does.
const MEMO_MIN_OUTPUT: usize = 512;
/// Nor are frames that inflate to less than this many times their size.
const MEMO_MIN_RATIO: usize = 2;
/// Frames a thread remembers.
const MEMO_ENTRIES: usize = 8;
/// A final empty block (BFINAL 1, fixed Huffman codes, end of block).
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

struct Remembered {
    compressed: Vec<u8>,
    last: bool,
    text: Vec<u8>,
    /// When it was last used (the memo's clock): the least recently used entry is the one replaced.
    used: u64,
}

/// A thread's recently inflated frames.
#[derive(Default)]
struct Memo {
    entries: Vec<Remembered>,
    clock: u64,
    /// Text bytes taken from remembered frames and stored blocks, and inflated, by this thread's clients.
    reused: u64,
    inflated: u64,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Text bytes this thread took without inflating (remembered frames, stored blocks) and inflated, since the last
/// call.
pub fn take_counts() -> (u64, u64) {
    MEMO.with_borrow_mut(|memo| (std::mem::take(&mut memo.reused), std::mem::take(&mut memo.inflated)))
}

/// The inflation of one message in progress, frame by frame.
pub struct MessageInflater {
    share: bool,
    /// The next frame starts on a block boundary (see the module comment).
    boundary: bool,
    /// The inflater that has the message's history, while it is in step with the text.
    inflater: Option<Box<Decompress>>,
}

impl MessageInflater {
    /// Starts a message; with `share` false it is inflated the ordinary way, one inflater for the whole message.
    pub fn new(share: bool) -> Self {
        Self { share, boundary: true, inflater: None }
    }

    /// Appends the text of the next frame (`last`: the message's final frame) to `out`, which holds the message's
    /// text so far; `limit` bounds the whole text.
    pub fn frame(&mut self, compressed: &[u8], last: bool, out: &mut Vec<u8>, limit: usize) -> anyhow::Result<()> {
        if self.share && self.boundary {
            let before = out.len();
            let shortcut = stored_only(compressed, last, out, limit)?
                || MEMO.with_borrow_mut(|memo| memo.recall(compressed, last, out, limit))?;
            if shortcut {
                MEMO.with_borrow_mut(|memo| memo.reused += (out.len() - before) as u64);
                // The inflater, if any, did not see this text: it is out of step.
                self.inflater = None;
                return Ok(());
            }
        }
        if self.inflater.is_none() {
            let mut inflater = Box::new(Decompress::new(false));
            seed(&mut inflater, &out[out.len().saturating_sub(WINDOW)..])?;
            self.inflater = Some(inflater);
        }
        let Some(inflater) = self.inflater.as_mut() else { return Ok(()) };
        let before = out.len();
        inflate_into(inflater, compressed, last, out, limit)?;
        // Shortcuts resume only after a frame shown to end a block (by `consider`, which remembers it). A message's
        // last frame is remembered too, for the next message that brings the same bytes: the tutorial dialect's user
        // list is a message of one frame, the same for every client.
        self.boundary = MEMO.with_borrow_mut(|memo| {
            memo.inflated += (out.len() - before) as u64;
            self.share && memo.consider(compressed, last, &out[before..]) && !last
        });
        Ok(())
    }
}

/// Reads a frame made only of stored blocks (plus the removed sync tail when it is the last): appends their bytes
/// and returns true; false, with `out` as it was, when the frame has any other block or ends inside one.
fn stored_only(compressed: &[u8], last: bool, out: &mut Vec<u8>, limit: usize) -> anyhow::Result<bool> {
    let before = out.len();
    let mut at = 0;
    let mut tail = [0u8; 5];
    let input: &[u8] = if last {
        // The last frame's final block is an empty stored block missing its last four bytes: put them back.
        match compressed.split_last() {
            Some((&header, body)) if header & 0x07 == 0 => {
                tail[0] = header;
                tail[1..].copy_from_slice(&SYNC_TAIL);
                if !stored_blocks(body, out, &mut at) || at != body.len() {
                    out.truncate(before);
                    return Ok(false);
                }
                &tail
            }
            _ => return Ok(false),
        }
    } else {
        compressed
    };
    at = 0;
    let whole = stored_blocks(input, out, &mut at) && at == input.len();
    if !whole {
        out.truncate(before);
    }
    anyhow::ensure!(out.len() <= limit, "a compressed message over {limit} bytes");
    Ok(whole)
}

/// Appends the data of the stored blocks at the start of `input` (from `*at`), stopping at the first block that is
/// not a stored block with BFINAL 0; false when one is cut short.
fn stored_blocks(input: &[u8], out: &mut Vec<u8>, at: &mut usize) -> bool {
    while let Some(&header) = input.get(*at) {
        // BFINAL 0 and BTYPE 00; the other five bits pad to the byte boundary.
        if header & 0x07 != 0 {
            return false;
        }
        let Some(lengths) = input.get(*at + 1..*at + 5) else { return false };
        let len = u16::from_le_bytes([lengths[0], lengths[1]]);
        if u16::from_le_bytes([lengths[2], lengths[3]]) != !len {
            return false;
        }
        let Some(data) = input.get(*at + 5..*at + 5 + usize::from(len)) else { return false };
        out.extend_from_slice(data);
        *at += 5 + usize::from(len);
    }
    true
}

impl Memo {
    /// Appends the text of a remembered frame with these bytes; false when there is none.
    fn recall(&mut self, compressed: &[u8], last: bool, out: &mut Vec<u8>, limit: usize) -> anyhow::Result<bool> {
        self.clock += 1;
        let Some(entry) = self.entries.iter_mut().find(|e| e.last == last && e.compressed == compressed) else {
            return Ok(false);
        };
        entry.used = self.clock;
        anyhow::ensure!(out.len() + entry.text.len() <= limit, "a compressed message over {limit} bytes");
        out.extend_from_slice(&entry.text);
        Ok(true)
    }

    /// Remembers a frame just inflated to `text`, if it is worth it, its text does not depend on the history and it
    /// ends a block; true when it did.
    fn consider(&mut self, compressed: &[u8], last: bool, text: &[u8]) -> bool {
        let worth = text.len() >= MEMO_MIN_OUTPUT && text.len() >= compressed.len() * MEMO_MIN_RATIO;
        if !worth || !compressed.ends_with(&SYNC_TAIL) && !last {
            return false;
        }
        // The same text after two different histories, and the frame ends a block: a final empty block after it
        // ends the stream and adds nothing (inside a block, those bits would be data or a code).
        let independent = [0x00, 0xff].into_iter().all(|filler| {
            let mut inflater = Decompress::new(false);
            let mut again = Vec::with_capacity(text.len() + 16);
            if seed(&mut inflater, &[filler; WINDOW]).is_err()
                || inflate_into(&mut inflater, compressed, last, &mut again, text.len()).is_err()
                || again != text
            {
                return false;
            }
            let mut rest = [0u8; 16];
            let before = inflater.total_out();
            matches!(inflater.decompress(&FINAL_EMPTY_BLOCK, &mut rest, FlushDecompress::Finish), Ok(Status::StreamEnd))
                && inflater.total_out() == before
        });
        if !independent {
            return false;
        }
        let entry = Remembered { compressed: compressed.to_vec(), last, text: text.to_vec(), used: self.clock };
        if self.entries.len() < MEMO_ENTRIES {
            self.entries.push(entry);
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.used) {
            *oldest = entry;
        }
        true
    }
}

/// Gives a fresh inflater `history` as its window, as if it had just inflated it (a stored block, output dropped).
fn seed(inflater: &mut Decompress, history: &[u8]) -> anyhow::Result<()> {
    if history.is_empty() {
        return Ok(());
    }
    let mut block = Vec::with_capacity(history.len() + 5);
    block.push(0);
    let len = u16::try_from(history.len())?; // at most WINDOW
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(&(!len).to_le_bytes());
    block.extend_from_slice(history);
    let mut sink = Vec::with_capacity(history.len() + CHUNK);
    // Until all of it came out: the inflater may take the whole block in before it hands all of it out.
    while sink.len() < history.len() {
        let consumed = usize::try_from(inflater.total_in())?.min(block.len());
        let before = sink.len();
        decompress_chunk(inflater, &block[consumed..], &mut sink)?;
        anyhow::ensure!(sink.len() > before && sink.len() <= history.len(), "seeding the inflater");
    }
    Ok(())
}

/// Output room given to the inflater per call.
const CHUNK: usize = 16 * 1024;

/// Inflates into at most `CHUNK` new bytes at the end of `out`. flate2's `decompress_vec` zero-fills a vector's whole
/// spare capacity on every call: for a buffer grown to a `welcome`'s size that was a tenth of the tool's CPU.
fn decompress_chunk(inflater: &mut Decompress, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<Status> {
    let len = out.len();
    out.resize(len + CHUNK, 0);
    let before = inflater.total_out();
    let status = inflater.decompress(input, &mut out[len..], FlushDecompress::Sync);
    let produced = usize::try_from(inflater.total_out() - before)?.min(CHUNK);
    out.truncate(len + produced);
    Ok(status?)
}

/// Inflates `compressed` (and, when it is the message's last frame, the removed sync tail) onto `out`.
fn inflate_into(
    inflater: &mut Decompress,
    compressed: &[u8],
    last: bool,
    out: &mut Vec<u8>,
    limit: usize,
) -> anyhow::Result<()> {
    let tail: &[u8] = if last { &SYNC_TAIL } else { &[] };
    for mut input in [compressed, tail] {
        loop {
            let (in_before, out_before) = (inflater.total_in(), out.len());
            let status = decompress_chunk(inflater, input, out)?;
            let used = usize::try_from(inflater.total_in() - in_before)?.min(input.len());
            input = &input[used..];
            anyhow::ensure!(out.len() <= limit, "a compressed message over {limit} bytes");
            if status == Status::StreamEnd {
                return Ok(());
            }
            let filled = out.len() - out_before == CHUNK;
            if input.is_empty() && !filled {
                break;
            }
            anyhow::ensure!(used > 0 || out.len() > out_before, "a compressed message that does not inflate");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// Compresses `pieces` with one compressor (history across pieces), a sync flush after each: one frame each.
    fn frames_with_history(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut compress = Compress::new(Compression::default(), false);
        let mut frames = Vec::new();
        for piece in pieces {
            let mut out = Vec::with_capacity(piece.len() + 1024);
            compress.compress_vec(piece, &mut out, FlushCompress::Sync).unwrap();
            frames.push(out);
        }
        frames
    }

    /// Compresses each piece on its own (as Switchboard does with shared lists).
    fn frames_on_their_own(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        pieces.iter().flat_map(|piece| frames_with_history(&[piece])).collect()
    }

    /// `text` as stored blocks ending with an empty one, as Switchboard sends a frame's own fields.
    fn stored(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in text.chunks(65535) {
            let len = chunk.len() as u16;
            out.push(0);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out.push(0);
        out.extend_from_slice(&SYNC_TAIL);
        out
    }

    /// RFC 7692: the message's last four bytes (the sync tail) are removed.
    fn as_message(mut frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let last = frames.last_mut().unwrap();
        assert!(last.ends_with(&SYNC_TAIL));
        last.truncate(last.len() - 4);
        frames
    }

    fn inflate_message(frames: &[Vec<u8>], share: bool) -> anyhow::Result<Vec<u8>> {
        let mut inflater = MessageInflater::new(share);
        let mut out = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            inflater.frame(frame, i + 1 == frames.len(), &mut out, 1 << 24)?;
        }
        Ok(out)
    }

    fn list(prefix: &str, n: usize) -> Vec<u8> {
        (0..n).map(|i| format!("\"{prefix}{i}\",")).collect::<String>().into_bytes()
    }

    /// Shared and ordinary inflation agree on messages whose frames need the history and on those whose frames do
    /// not, in any order, with the memo warm from other messages.
    #[test]
    fn sharing_gives_what_inflating_gives() {
        let a = list("user", 3000);
        let b = list("user", 2000); // much of it a repeat of `a`: frames with history refer back into `a`
        let head: &[u8] = b"{\"type\":\"welcome\",\"idle\":[";
        let messages = vec![
            as_message(frames_on_their_own(&[head, &a, b"\"me\"]}"])),
            as_message(frames_with_history(&[head, &a, &b, b"\"me\"]}"])),
            as_message(frames_on_their_own(&[&a])),
            as_message(frames_with_history(&[&b, &a])),
            as_message(frames_on_their_own(&[head, &b, &a, b"]}"])),
            as_message(frames_with_history(&[&a, &a])),
            // Stored frames around compressed ones, one of them longer than a stored block can be.
            as_message(vec![stored(head), frames_on_their_own(&[&a]).remove(0), stored(b"\"me\"]}")]),
            as_message(vec![stored(&b), frames_on_their_own(&[&a]).remove(0)]),
            as_message(vec![frames_on_their_own(&[&b]).remove(0), stored(&a.repeat(3))]),
            // A stored frame that needs the history after it: the compressed frame refers back into it.
            as_message(vec![stored(&a), frames_with_history(&[&a, &a]).remove(1)]),
        ];
        for _round in 0..3 {
            for message in &messages {
                let ordinary = inflate_message(message, false).unwrap();
                let shared = inflate_message(message, true).unwrap();
                assert_eq!(shared, ordinary);
            }
        }
        let (reused, inflated) = take_counts();
        assert!(reused > 0 && inflated > 0, "{reused} {inflated}");
        // A frame that refers back into the history must not be remembered with the text it had in its message: at
        // the start of another message the same bytes inflate to something else (zeros where the history was).
        let with_history = frames_with_history(&[&a, &a]);
        let in_context = as_message(with_history.clone());
        let alone = vec![in_context[1].clone()];
        assert_eq!(inflate_message(&in_context, true).unwrap(), inflate_message(&in_context, false).unwrap());
        // zlib-rs rejects the reference (miniz_oxide read zeros): either way, not `a`, and the same both ways.
        let ordinary = inflate_message(&alone, false).map_err(|e| e.to_string());
        assert_ne!(ordinary.as_ref().ok(), Some(&a), "the frame depends on its history");
        assert_eq!(inflate_message(&alone, true).map_err(|e| e.to_string()), ordinary);
    }

    /// A frame that ends with a sync flush's bytes inside a stored block (not at a block's end) is not taken for a
    /// boundary, even when the next frame would also read as whole stored blocks from its first byte.
    #[test]
    fn a_frame_ending_inside_a_stored_block_is_no_boundary() {
        let mut first = frames_on_their_own(&[&vec![b'a'; 2000]]).remove(0);
        // A stored block of 8 bytes of which this frame carries 4, the last four bytes of the frame being 00 00 ff ff.
        first.extend_from_slice(&[0x00, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0xff, 0xff]);
        // Read from its first byte, the next frame is one stored block of 0x0701 bytes (LEN 01 07, NLEN fe f8); read
        // as the rest of the 8-byte block (4 bytes) and then a stored block of 0x06fd bytes, it is something else.
        let mut second = vec![0x00, 0x01, 0x07, 0xfe, 0xf8, 0xfd, 0x06, 0x02, 0xf9];
        second.extend(std::iter::repeat_n(b'z', 0x06fd));
        let message = as_message(vec![first, second, stored(b"end")]);
        for _round in 0..2 {
            let ordinary = inflate_message(&message, false).unwrap();
            assert_eq!(&ordinary[2000..2008], &[0x00, 0x00, 0xff, 0xff, 0x00, 0x01, 0x07, 0xfe]);
            assert_eq!(inflate_message(&message, true).unwrap(), ordinary);
        }
    }

    #[test]
    fn a_message_of_one_compressed_frame_is_inflated_once_per_thread() {
        let message = as_message(frames_on_their_own(&[&list("user", 3000)]));
        assert_eq!(message.len(), 1);
        let text = inflate_message(&message, false).unwrap();
        take_counts();
        for _client in 0..3 {
            assert_eq!(inflate_message(&message, true).unwrap(), text);
        }
        let (reused, inflated) = take_counts();
        assert_eq!((reused, inflated), (2 * text.len() as u64, text.len() as u64));
    }

    #[test]
    fn the_limit_holds_whatever_the_ratio() {
        let bomb = as_message(frames_on_their_own(&[&vec![b'a'; 4 << 20]]));
        assert!(bomb[0].len() < 10_000);
        let mut out = Vec::new();
        assert!(MessageInflater::new(true).frame(&bomb[0], true, &mut out, 1 << 20).is_err());
        out.clear();
        assert!(MessageInflater::new(false).frame(&bomb[0], true, &mut out, 1 << 20).is_err());
    }
}
