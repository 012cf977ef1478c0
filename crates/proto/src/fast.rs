//! A fast path for the frames that are nearly all of a busy server's traffic: `offer`, `answer` and `candidate` (the
//! tutorial's `ICE`), in both dialects.
//!
//! serde_json has to look at every byte of the relayed payload to find where it ends, and SDP text is a worst case
//! for it: a `\r\n` escape every 40 bytes or so, at each of which its 8-byte scan stops and restarts. That skim was
//! the largest single item in the server's profile (about 15% of its CPU per relayed message, a quarter with the
//! parse around it). Here the payload is validated in one loop that steps over escapes without leaving it, and the
//! few fields of a relay frame are read in the same pass, without serde's field-name dispatch for an envelope of 15
//! optional fields.
//!
//! The fast path is an accelerator, not a second parser with its own opinions: it accepts only frames made of the
//! fields `type` (`offer`, `answer`, `candidate`, `end-of-candidates`, and the tutorial's `ICE`), `to`, `room`,
//! `callId`, the tutorial's `name` and `TargetUserName`, `sdp` and `candidate`, each at most once, with plain strings
//! (no escapes) where the envelope wants a string and a non-null JSON value for the payload. For anything else it
//! returns `None` and the caller parses with serde_json, which then decides, errors included (a frame it gives up on
//! late, say at an `id` after the payload, is scanned twice; the clients of this project send relays without one).
//! What it does accept, it returns exactly as serde_json would (the fuzz target `request_v1` and the tests below
//! compare the two on every input).

use std::borrow::Cow;

use crate::request::{Envelope, JsonText};

/// Nesting the payload validator follows before it leaves the frame to serde_json: the payload limit itself, so that
/// what the fast path takes needs no second depth check (deeper payloads get their error after serde_json).
const MAX_DEPTH: usize = crate::request::MAX_PAYLOAD_DEPTH;

/// The envelope of a plain relay frame (either dialect), or `None` when serde_json must parse it.
pub fn relay_envelope(text: &str) -> Option<Envelope<'_>> {
    let bytes = text.as_bytes();
    let mut envelope = Envelope::default();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(bytes, at + 1);
    loop {
        let (key, after_key) = plain_string(text, at)?;
        at = after_colon(bytes, after_key)?;
        at = match key {
            "type" | "to" | "room" | "callId" | "name" | "TargetUserName" => {
                let (value, end) = plain_string(text, at)?;
                let slot = match key {
                    "type" => &mut envelope.kind,
                    "to" => &mut envelope.to,
                    "room" => &mut envelope.room,
                    "callId" => &mut envelope.call_id,
                    "name" => &mut envelope.name,
                    _ => &mut envelope.target_user_name,
                };
                if slot.replace(Cow::Borrowed(value)).is_some() {
                    // serde_json refuses duplicate fields; let it say so.
                    return None;
                }
                end
            }
            "sdp" | "candidate" => {
                // `null` is an absent field to serde_json, not a payload.
                if bytes.get(at) == Some(&b'n') {
                    return None;
                }
                let end = value(bytes, at, 0)?;
                let slot = if key == "sdp" { &mut envelope.sdp } else { &mut envelope.candidate };
                if slot.replace(JsonText::checked_shallow(text.get(at..end)?)).is_some() {
                    return None;
                }
                end
            }
            _ => return None,
        };
        at = skip_whitespace(bytes, at);
        match bytes.get(at) {
            Some(b',') => at = skip_whitespace(bytes, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    if skip_whitespace(bytes, at + 1) != bytes.len() {
        return None;
    }
    let relay_kind =
        matches!(envelope.kind.as_deref(), Some("offer" | "answer" | "candidate" | "end-of-candidates" | "ICE"));
    relay_kind.then_some(envelope)
}

/// Past the `:` that must follow an object key ending before `at`, and the whitespace around it.
fn after_colon(bytes: &[u8], at: usize) -> Option<usize> {
    let at = skip_whitespace(bytes, at);
    (bytes.get(at) == Some(&b':')).then(|| skip_whitespace(bytes, at + 1))
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// A string starting at `at` that has no escapes (what serde_json borrows), and the index past its closing quote.
fn plain_string(text: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let end = find_special(bytes, at + 1)?;
    if bytes[end] != b'"' {
        return None;
    }
    // Quotes are ASCII, so both ends are character boundaries of the (valid UTF-8) text.
    Some((text.get(at + 1..end)?, end + 1))
}

/// Index of the first byte at or after `at` that a JSON string scan must stop at: a quote, a backslash or a control
/// character.
pub(crate) fn find_special(bytes: &[u8], mut at: usize) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = bytes.get(at..at + 16).and_then(|chunk| <&[u8; 16]>::try_from(chunk).ok()) {
        // SAFETY: `special_mask_16` only needs SSE2, which every x86_64 CPU has and which this build targets (the
        // `cfg` above), so calling it cannot reach an unsupported instruction.
        #[allow(unsafe_code)]
        let flagged = unsafe { special_mask_16(chunk) };
        if flagged != 0 {
            return Some(at + flagged.trailing_zeros() as usize);
        }
        at += 16;
    }
    // Eight bytes per step with the has-byte tricks on a u64 (the lowest flagged byte is exact; flags above it may
    // be borrows, which is why only the lowest is used): the tail after the 16-byte steps, and the whole scan
    // elsewhere.
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let flagged = (word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash);
        let flagged = flagged & HIGH;
        if flagged != 0 {
            return Some(at + flagged.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter().position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20).map(|offset| at + offset)
}

/// One bit per byte of a 16-byte chunk (`chunk[..16]`), set for a quote, a backslash or a control character.
///
/// Why SSE2 (and the crate's only `unsafe`: its two call sites, in `find_special` and `string`): the SDP strings of offers and answers are most of what the relay fast
/// path reads, and sixteen bytes per step with three compares and a mask took the scan of the load generator's
/// 3 KB SDP from 1.10-1.66 us to 0.83-0.97 us (eight-byte word tricks before it; same run, release build), which
/// was 10% of the server's CPU per relayed message. The bytes are loaded as two words, so only the calls are unsafe.
/// The chunk is a fixed-size array, so loading it needs no bounds checks: read through a slice, with a checked copy
/// per word, the loads took more instructions than the compares (callgrind, 2026-11-28).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn special_mask_16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };
    let word = u128::from_le_bytes(*chunk);
    let bytes = _mm_set_epi64x((word >> 64) as i64, word as i64);
    let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
    // Control characters are the bytes at most 0x1f: those whose unsigned maximum with 0x1f is 0x1f.
    let control = _mm_cmpeq_epi8(_mm_max_epu8(bytes, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
}

/// [`special_mask_16`] over 64 bytes: bit `i` for byte `block[i]`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn special_mask_64(block: &[u8; 64]) -> u64 {
    let mut specials = 0u64;
    for (quarter, chunk) in block.as_chunks::<16>().0.iter().enumerate() {
        specials |= u64::from(special_mask_16(chunk)) << (16 * quarter);
    }
    specials
}

/// Validates the JSON value starting at `at` (nothing before it) and returns the index just past it.
fn value(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => string(bytes, at),
        b'{' => container(bytes, at, depth + 1, b'}'),
        b'[' => container(bytes, at, depth + 1, b']'),
        b't' => literal(bytes, at, b"true"),
        b'f' => literal(bytes, at, b"false"),
        b'n' => literal(bytes, at, b"null"),
        b'-' | b'0'..=b'9' => number(bytes, at),
        _ => None,
    }
}

fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    (bytes.get(at..at + word.len())? == word).then_some(at + word.len())
}

/// A string with any escapes, as serde_json checks it: every escape one of `\" \\ \/ \b \f \n \r \t` or `\u` with four
/// hex digits, no control characters.
fn string(bytes: &[u8], at: usize) -> Option<usize> {
    let mut at = at + 1;
    // 64 bytes at a time: one mask of every special byte in the block, then from escape to escape by its bits, so
    // that an SDP line end costs a few bit operations instead of a new scan (3 KB SDP string: 0.59-0.61 us against
    // 0.92-0.98 us with a scan per stop; micro-benchmark, same run).
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    'blocks: while let Some(block) = bytes.get(at..at + 64).and_then(|block| <&[u8; 64]>::try_from(block).ok()) {
        // SAFETY: as in `find_special`: SSE2 is there on every x86_64 CPU and this build targets it.
        #[allow(unsafe_code)]
        let mut specials = unsafe { special_mask_64(block) };
        while specials != 0 {
            match after_special(bytes, at + specials.trailing_zeros() as usize)? {
                Step::End(end) => return Some(end),
                Step::Next(next) if next >= at + 64 => {
                    at = next;
                    continue 'blocks;
                }
                // Drop the bits of everything consumed (an escape's own specials, such as the `\` of `\r\n`).
                Step::Next(next) => specials &= u64::MAX << (next - at),
            }
        }
        at += 64;
    }
    loop {
        match after_special(bytes, find_special(bytes, at)?)? {
            Step::End(end) => return Some(end),
            Step::Next(next) => at = next,
        }
    }
}

/// Where a string scan goes on after the special byte at `at`.
enum Step {
    /// The closing quote: the index past it.
    End(usize),
    /// An escape: the index past it.
    Next(usize),
}

/// The special byte at `at` of a string: its closing quote, a valid escape, or (None) an invalid escape or a
/// control character.
// Inlined into both loops of `string`: as a call it cost 1.5-2% of the relay CPU.
#[inline(always)]
fn after_special(bytes: &[u8], at: usize) -> Option<Step> {
    match bytes[at] {
        b'"' => Some(Step::End(at + 1)),
        // SDP's line ends are nearly all of its escapes: `\r\n` as one step instead of two.
        b'\\' if bytes.get(at + 1..at + 4) == Some(b"r\\n") => Some(Step::Next(at + 4)),
        b'\\' => match *bytes.get(at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(Step::Next(at + 2)),
            b'u' if bytes.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => Some(Step::Next(at + 6)),
            _ => None,
        },
        _ => None,
    }
}

/// An object (`close` = `}`: members are key, colon, value) or an array (`]`: members are values).
fn container(bytes: &[u8], at: usize, depth: usize, close: u8) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&close) {
        return Some(at + 1);
    }
    loop {
        if close == b'}' {
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            at = after_colon(bytes, string(bytes, at)?)?;
        }
        at = skip_whitespace(bytes, value(bytes, at, depth)?);
        match *bytes.get(at)? {
            b',' => at = skip_whitespace(bytes, at + 1),
            byte if byte == close => return Some(at + 1),
            _ => return None,
        }
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, the JSON number grammar.
fn number(bytes: &[u8], at: usize) -> Option<usize> {
    let digits =
        |at: usize| at + bytes.get(at..).map_or(0, |rest| rest.iter().take_while(|b| b.is_ascii_digit()).count());
    let mut at = at;
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(at),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fast path agrees with serde_json: what it accepts, serde_json parses to the same envelope.
    fn agrees(text: &str) -> bool {
        match relay_envelope(text) {
            None => true,
            Some(fast) => match Envelope::parse_with_serde(text) {
                Ok(slow) => format!("{fast:?}") == format!("{slow:?}"),
                Err(_) => false,
            },
        }
    }

    const SDP: &str = r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n"}"#;

    #[test]
    fn payload_depth_is_checked_once_at_the_payload_limit() {
        use crate::request::{Dialect, MAX_PAYLOAD_DEPTH};
        let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        let at_limit = format!(r#"{{"type":"candidate","to":"bob","candidate":{}}}"#, nested(MAX_PAYLOAD_DEPTH));
        let envelope = relay_envelope(&at_limit).expect("the fast path takes a payload at the limit");
        assert!(envelope.into_request(Dialect::V1).is_ok());
        // One level deeper: serde_json parses it and the depth check refuses it, as before the fast path existed.
        let too_deep = format!(r#"{{"type":"candidate","to":"bob","candidate":{}}}"#, nested(MAX_PAYLOAD_DEPTH + 1));
        assert!(relay_envelope(&too_deep).is_none());
        let Err(error) = Envelope::parse(&too_deep).and_then(|envelope| envelope.into_request(Dialect::V1)) else {
            panic!("a payload one level too deep is refused");
        };
        assert!(error.message.contains("nested deeper"), "{}", error.message);
    }

    #[test]
    fn takes_relay_frames() {
        let offer = format!(r#"{{"type":"offer","to":"bob","sdp":{SDP}}}"#);
        let envelope = relay_envelope(&offer).expect("a plain offer");
        assert_eq!(envelope.kind.as_deref(), Some("offer"));
        assert_eq!(envelope.to.as_deref(), Some("bob"));
        assert_eq!(envelope.sdp.map(JsonText::get), Some(SDP));
        assert!(agrees(&offer));

        let candidate = r#" { "to" : "bob" , "type":"candidate", "callId":"c1", "room":"r",
            "candidate":{"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 54400 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null} } "#;
        let envelope = relay_envelope(candidate).expect("a candidate with room and call id");
        assert_eq!((envelope.room.as_deref(), envelope.call_id.as_deref()), (Some("r"), Some("c1")));
        assert!(agrees(candidate));

        let tutorial = format!(r#"{{"type":"offer","name":"alice","TargetUserName":"bob","sdp":{SDP}}}"#);
        let envelope = relay_envelope(&tutorial).expect("a tutorial offer");
        assert_eq!((envelope.name.as_deref(), envelope.target_user_name.as_deref()), (Some("alice"), Some("bob")));
        assert!(agrees(&tutorial));
        let ice = r#"{"type":"ICE","candidate":{"candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0},"TargetUserName":"bob"}"#;
        assert_eq!(relay_envelope(ice).and_then(|e| e.target_user_name).as_deref(), Some("bob"));
        assert!(agrees(ice));
        let end = r#"{"type":"end-of-candidates","to":"bob","callId":"c1"}"#;
        assert_eq!(relay_envelope(end).and_then(|e| e.call_id).as_deref(), Some("c1"));
        assert!(agrees(end));

        for payload in [
            "1",
            "-0.5e+3",
            "true",
            "false",
            "[]",
            "{}",
            r#""\u00e9\/\b\f\n\r\t\"\\""#,
            r#""\ud800 lone surrogates pass, as in serde_json's skim""#,
            r#""\r\n""#,
            r#""a\r\nb\r""#,
            r#""\\r\\n\r\"\r""#,
            "[1,[2,{\"a\":[]}]]",
        ] {
            let text = format!(r#"{{"type":"answer","to":"b","sdp":{payload}}}"#);
            assert_eq!(relay_envelope(&text).and_then(|e| e.sdp).map(JsonText::get), Some(payload), "{text}");
            assert!(agrees(&text), "{text}");
        }
    }

    #[test]
    fn leaves_the_rest_to_serde() {
        for text in [
            r#"{"type":"login","name":"a"}"#,
            r#"{"type":"offer","to":"b","sdp":{},"id":1}"#,
            r#"{"type":"offer","to":"b","to":"c","sdp":{}}"#,
            r#"{"type":"offer","to":"b","sdp":{},"sdp":{}}"#,
            r#"{"type":"offer","to":"b\u0063","sdp":{}}"#,
            r#"{"type":"offer","to":"b","sdp":null}"#,
            r#"{"type":"offer","to":"b","sdp":{},}"#,
            r#"{"type":"offer","to":"b","sdp":{"a":1,}}"#,
            r#"{"type":"offer","to":"b","sdp":[1,]}"#,
            r#"{"type":"offer","to":"b","sdp":01}"#,
            r#"{"type":"offer","to":"b","sdp":1.}"#,
            r#"{"type":"offer","to":"b","sdp":1e}"#,
            r#"{"type":"offer","to":"b","sdp":-}"#,
            r#"{"type":"offer","to":"b","sdp":"\x"}"#,
            r#"{"type":"offer","to":"b","sdp":"\u12g4"}"#,
            "{\"type\":\"offer\",\"to\":\"b\",\"sdp\":\"a\tb\"}",
            r#"{"type":"offer","to":"b","sdp":tru}"#,
            r#"{"type":"offer","to":"b","sdp":{}} x"#,
            r#"{"type":"offer","to":"b","sdp":{}"#,
            r#"{"type":"offer","to":"b","sdp":"open"#,
            r#"{"type":7,"to":"b","sdp":{}}"#,
            r#"[{"type":"offer"}]"#,
            "{}",
            "",
        ] {
            assert!(relay_envelope(text).is_none(), "{text}");
        }
        let deep = format!(r#"{{"type":"offer","to":"b","sdp":{}1{}}}"#, "[".repeat(40), "]".repeat(40));
        assert!(relay_envelope(&deep).is_none(), "deep nesting is left to serde_json");
    }

    #[test]
    fn scans_long_strings_in_chunks() {
        for len in 0..70 {
            for special in ["\"", "\\n", "\u{1}"] {
                let body = "x".repeat(len);
                let text = format!("\"{body}{special}tail\"");
                let found = find_special(text.as_bytes(), 1);
                assert_eq!(found, Some(1 + len), "{len} {special:?}");
            }
            let text = format!("\"{}", "é".repeat(len));
            assert_eq!(find_special(text.as_bytes(), 1), None);
        }
    }

    /// Every byte value at every position of buffers around the 8- and 16-byte steps, on fillers that are not
    /// special but sit next to the special ranges (0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff).
    #[test]
    fn finds_exactly_the_first_special_byte() {
        let naive = |bytes: &[u8], at: usize| {
            bytes.get(at..)?.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).map(|i| at + i)
        };
        let fillers = [0x20u8, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff, b'x'];
        for len in 0..50 {
            let filler: Vec<u8> = (0..len).map(|i| fillers[i % fillers.len()]).collect();
            for at in 0..3.min(len + 1) {
                assert_eq!(find_special(&filler, at), None, "len {len}");
            }
            for position in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = filler.clone();
                    bytes[position] = byte;
                    for at in [0, 1, position] {
                        assert_eq!(
                            find_special(&bytes, at),
                            naive(&bytes, at),
                            "len {len} byte {byte:#x} at {position}"
                        );
                    }
                }
            }
        }
    }

    /// JSON's string grammar byte by byte: the index past the closing quote of the string at `bytes[0]`.
    fn plain_string_scan(bytes: &[u8]) -> Option<usize> {
        let mut at = 1;
        loop {
            match *bytes.get(at)? {
                b'"' => return Some(at + 1),
                b'\\' => match *bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    b'u' if bytes.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => at += 6,
                    _ => return None,
                },
                byte if byte < 0x20 => return None,
                _ => at += 1,
            }
        }
    }

    /// Escapes, valid and not, at every offset across the 64-byte blocks of the string scan, two at a time: the
    /// scan ends where JSON's grammar ends the string, or fails where it fails.
    #[test]
    fn string_scan_follows_the_json_grammar_around_blocks() {
        let pieces = ["\\r\\n", "\\\"", "\\\\", "\\u00e9", "\\uZZ00", "\\x", "\u{1}", "\\r\\", "é", "\\/"];
        let mut checked = 0;
        for first in 0..140 {
            for (a, piece_a) in pieces.iter().enumerate() {
                let piece_b = pieces[(a + first) % pieces.len()];
                let gap = first % 7;
                let text = format!("\"{}{piece_a}{}{piece_b}{}\"", "x".repeat(first), "y".repeat(gap), "z".repeat(70));
                let expected = plain_string_scan(text.as_bytes());
                // The plain scan is JSON's string grammar, as serde_json reads it when the string is the whole text.
                let serde = serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok();
                assert_eq!(serde, expected == Some(text.len()), "{text:?}");
                assert_eq!(string(text.as_bytes(), 0), expected, "{text:?}");
                let cut = &text.as_bytes()[..text.len() - 1];
                assert_eq!(string(cut, 0), plain_string_scan(cut), "{text:?} without its last byte");
                checked += 1;
            }
        }
        assert_eq!(checked, 1400);
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
            "\\PC{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            "[ -~]{0,30}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec(("[a-z]{1,5}", inner), 0..4).prop_map(|fields| {
                    let fields: Vec<String> = fields.into_iter().map(|(k, v)| format!("\"{k}\" : {v}")).collect();
                    format!("{{{}}}", fields.join(" ,"))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_serde_on_generated_frames(
            kind in prop_oneof![
                Just("offer"), Just("answer"), Just("candidate"), Just("end-of-candidates"), Just("ICE"), Just("hangup")
            ],
            to_key in prop_oneof![Just("to"), Just("TargetUserName"), Just("name"), Just("UserName")],
            to in "[ -~]{0,12}",
            payload in json_value(),
            key in prop_oneof![Just("sdp"), Just("candidate"), Just("name")],
        ) {
            let text = format!(r#"{{"type":"{kind}","{to_key}":"{to}","{key}":{payload}}}"#);
            prop_assert!(agrees(&text), "{}", text);
        }

        #[test]
        fn agrees_with_serde_on_mangled_frames(cut in 0usize..400, byte in any::<u8>(), payload in json_value()) {
            let mut text = format!(r#"{{"type":"offer","to":"bob","sdp":{payload}}}"#).into_bytes();
            if !text.is_empty() {
                let at = cut % text.len();
                text[at] = byte;
            }
            if let Ok(text) = std::str::from_utf8(&text) {
                prop_assert!(agrees(text), "{}", text);
            }
        }
    }
}
