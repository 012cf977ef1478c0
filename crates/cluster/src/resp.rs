//! RESP3, the Redis protocol, as far as the backend speaks it: commands out, replies and pushes in, without IO.
//!
//! Written here rather than taken from the redis crate because of what relayed traffic costs through it: the crate
//! copied every published envelope four times on its way to the socket (our encoding, the command's argument, the
//! packed pipeline, the connection's write buffer) and once more out of its RESP parser on the way in, which was a
//! tenth of a node's CPU under cross-node relay (`perf`, docs/benchmarks.md). Here an envelope is copied once into
//! the outgoing buffer, and a received one is decoded in place from the incoming buffer.

use std::ops::Range;

/// Longest string accepted from Redis. Envelopes are far smaller (at most 128 messages of bounded size); a longer
/// string means a broken stream.
pub const MAX_STRING: usize = 64 << 20;

/// Most elements of one aggregate (array, map, set, push) accepted from Redis.
const MAX_ELEMENTS: usize = 1 << 20;

/// Deepest nesting of aggregates accepted from Redis (this backend's replies nest two levels at most).
const MAX_DEPTH: usize = 8;

/// A reply, or an element of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null, and the null bulk string and array of RESP2.
    Nil,
    /// An integer.
    Int(i64),
    /// Bulk, simple and verbatim strings; doubles and big numbers as their text.
    Bytes(Vec<u8>),
    /// An error reply (simple or bulk).
    Error(String),
    /// A boolean.
    Bool(bool),
    /// Arrays and sets; maps as their keys and values alternating.
    Array(Vec<Value>),
}

/// One frame read from Redis.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// The answer to the oldest command not answered yet.
    Reply(Value),
    /// A published message, found in place.
    Message {
        /// Where the channel's name is in the buffer that was parsed.
        channel: Range<usize>,
        /// Where the message is in that buffer.
        payload: Range<usize>,
    },
    /// Any other push (subscription confirmations, invalidations): nobody waits for it.
    Push(Vec<Value>),
}

/// A stream that does not follow the protocol (or exceeds a bound); the connection cannot be used any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A byte where a type marker should be.
    #[error("unknown RESP type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A length or number that does not parse.
    #[error("malformed RESP length or number")]
    BadNumber,
    /// A string longer than [`MAX_STRING`], an aggregate of more than the allowed elements, or nesting too deep.
    #[error("RESP frame beyond this client's bounds")]
    TooLarge,
    /// A string that does not end in CRLF.
    #[error("RESP string without its CRLF")]
    MissingCrlf,
}

/// Parses the first frame of `buf`: the frame and the bytes it took, or `None` when `buf` holds only part of it.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
    if let Some(found) = message(buf)? {
        return Ok(Some(found));
    }
    // Whether it is a push shows after any attributes in front.
    let Some(start) = skip_attributes(buf, 0, 0)? else { return Ok(None) };
    let is_push = buf.get(start) == Some(&b'>');
    let Some((value, used)) = value(buf, start, 0)? else { return Ok(None) };
    let frame = match value {
        Value::Array(items) if is_push => Frame::Push(items),
        other => Frame::Reply(other),
    };
    Ok(Some((frame, used)))
}

/// The common case, a published message (`>3`, "message", channel, payload), found without building values.
fn message(buf: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
    const HEAD: &[u8] = b">3\r\n$7\r\nmessage\r\n";
    // Anything else (a prefix of HEAD, or a channel that is not a bulk string) is left to the general parser.
    if !buf.starts_with(HEAD) || buf.get(HEAD.len()) != Some(&b'$') {
        return Ok(None);
    }
    let Some((channel, after_channel)) = blob(buf, HEAD.len())? else { return Ok(None) };
    let Some((payload, end)) = blob(buf, after_channel)? else { return Ok(None) };
    Ok(Some((Frame::Message { channel, payload }, end)))
}

/// A bulk string at `at`: where its bytes are, and where the next frame starts.
fn blob(buf: &[u8], at: usize) -> Result<Option<(Range<usize>, usize)>, RespError> {
    match buf.get(at) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&other) => return Err(RespError::UnknownType(other)),
    }
    let Some((length, start)) = line(buf, at + 1)? else { return Ok(None) };
    string_body(buf, length, start)
}

/// The bytes of a string whose header line said `length` and whose bytes start at `start`: where they are, and
/// where the next frame starts (after their CRLF).
fn string_body(buf: &[u8], length: &[u8], start: usize) -> Result<Option<(Range<usize>, usize)>, RespError> {
    let length = usize::try_from(number(length)?).map_err(|_| RespError::BadNumber)?;
    if length > MAX_STRING {
        return Err(RespError::TooLarge);
    }
    let end = start + length;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(RespError::MissingCrlf);
    }
    Ok(Some((start..end, end + 2)))
}

/// The line starting at `at` (without its CRLF) and where the next one starts.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let Some(rest) = buf.get(at..) else { return Ok(None) };
    // Lines are type headers and short scalars; anything longer than a big number is a broken stream.
    let Some(newline) = rest.iter().take(4096).position(|&b| b == b'\n') else {
        return if rest.len() >= 4096 { Err(RespError::TooLarge) } else { Ok(None) };
    };
    if newline == 0 || rest[newline - 1] != b'\r' {
        return Err(RespError::MissingCrlf);
    }
    Ok(Some((&rest[..newline - 1], at + newline + 1)))
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text).ok().and_then(|text| text.parse().ok()).ok_or(RespError::BadNumber)
}

/// Where the value at `at` starts once the attributes in front of it (`|`, annotations this client has no use for)
/// are skipped. A loop, not recursion: a run of attributes must not deepen the stack.
fn skip_attributes(buf: &[u8], mut at: usize, depth: usize) -> Result<Option<usize>, RespError> {
    while buf.get(at) == Some(&b'|') {
        let Some((_, after)) = aggregate(buf, at, depth)? else { return Ok(None) };
        at = after;
    }
    Ok(Some(at))
}

/// The value at `at` and where the next one starts; `None` when `buf` ends first.
fn value(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, RespError> {
    let Some(at) = skip_attributes(buf, at, depth)? else { return Ok(None) };
    let Some(&kind) = buf.get(at) else { return Ok(None) };
    if matches!(kind, b'*' | b'~' | b'>' | b'%') {
        return aggregate(buf, at, depth);
    }
    let Some((header, next)) = line(buf, at + 1)? else { return Ok(None) };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match kind {
        b'+' | b',' | b'(' => Ok(Some((Value::Bytes(header.to_vec()), next))),
        b'-' => Ok(Some((Value::Error(text(header)), next))),
        b':' => Ok(Some((Value::Int(number(header)?), next))),
        b'#' => match header {
            b"t" => Ok(Some((Value::Bool(true), next))),
            b"f" => Ok(Some((Value::Bool(false), next))),
            _ => Err(RespError::BadNumber),
        },
        b'_' if header.is_empty() => Ok(Some((Value::Nil, next))),
        b'_' => Err(RespError::BadNumber),
        b'$' | b'=' | b'!' => {
            if header == b"-1" {
                return Ok(Some((Value::Nil, next)));
            }
            let Some((range, end)) = string_body(buf, header, next)? else { return Ok(None) };
            let mut bytes = &buf[range];
            if kind == b'=' {
                // A verbatim string starts with its format, as in `txt:`.
                bytes = bytes.get(4..).unwrap_or_default();
            }
            Ok(Some((if kind == b'!' { Value::Error(text(bytes)) } else { Value::Bytes(bytes.to_vec()) }, end)))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// The aggregate (array, set, push, map or attribute) at `at`, as the list of its elements.
fn aggregate(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, RespError> {
    let Some(&kind) = buf.get(at) else { return Ok(None) };
    let Some((header, next)) = line(buf, at + 1)? else { return Ok(None) };
    // RESP2's null array; RESP3 has no null aggregates of other kinds.
    if kind == b'*' && header == b"-1" {
        return Ok(Some((Value::Nil, next)));
    }
    if depth >= MAX_DEPTH {
        return Err(RespError::TooLarge);
    }
    let count = usize::try_from(number(header)?).map_err(|_| RespError::BadNumber)?;
    let elements = if matches!(kind, b'%' | b'|') { count.checked_mul(2) } else { Some(count) };
    let elements = elements.filter(|&n| n <= MAX_ELEMENTS).ok_or(RespError::TooLarge)?;
    // Each element takes at least three bytes: never reserve more than the rest of the buffer could hold.
    let mut items = Vec::with_capacity(elements.min((buf.len() - next) / 3));
    let mut position = next;
    for _ in 0..elements {
        let Some((item, after)) = value(buf, position, depth + 1)? else { return Ok(None) };
        items.push(item);
        position = after;
    }
    Ok(Some((Value::Array(items), position)))
}

/// Appends one command, its arguments given as byte strings.
pub fn command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, arg.as_ref());
    }
}

/// Appends `PUBLISH channel payload`, the channel's name given as pieces to join, the payload written by `fill`
/// straight into `scratch` and then copied once into `out` (RESP wants its length first, and `fill` learns the
/// length only by writing).
pub fn publish(out: &mut Vec<u8>, scratch: &mut Vec<u8>, channel: &[&[u8]], fill: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    fill(scratch);
    header(out, b'*', 3);
    bulk(out, b"PUBLISH");
    header(out, b'$', channel.iter().map(|piece| piece.len()).sum());
    for piece in channel {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(b"\r\n");
    bulk(out, scratch);
}

fn header(out: &mut Vec<u8>, kind: u8, count: usize) {
    out.push(kind);
    // Runs for every argument of every command: `itoa` formats on the stack, where `to_string` would allocate.
    out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Frame {
        let (frame, used) = parse(bytes).expect("parses").expect("complete");
        assert_eq!(used, bytes.len());
        frame
    }

    fn bytes(text: &str) -> Value {
        Value::Bytes(text.as_bytes().to_vec())
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[&b"EVALSHA"[..], b"abc", b"0", b""]);
        assert_eq!(out, b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n0\r\n$0\r\n\r\n");
        out.clear();
        let mut scratch = vec![9; 3];
        publish(&mut out, &mut scratch, &[b"sb:", b"to:", b"n1"], |s| s.extend_from_slice(b"\0SB\x02x"));
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$8\r\nsb:to:n1\r\n$5\r\n\0SB\x02x\r\n");
    }

    #[test]
    fn every_reply_type_this_backend_meets_parses() {
        assert_eq!(whole(b"+OK\r\n"), Frame::Reply(bytes("OK")));
        assert_eq!(whole(b":-12\r\n"), Frame::Reply(Value::Int(-12)));
        assert_eq!(whole(b"_\r\n"), Frame::Reply(Value::Nil));
        assert_eq!(whole(b"$-1\r\n"), Frame::Reply(Value::Nil));
        assert_eq!(whole(b"#t\r\n"), Frame::Reply(Value::Bool(true)));
        assert_eq!(whole(b",1.5\r\n"), Frame::Reply(bytes("1.5")));
        assert_eq!(whole(b"=8\r\ntxt:abcd\r\n"), Frame::Reply(bytes("abcd")));
        assert_eq!(
            whole(b"-NOSCRIPT No matching script\r\n"),
            Frame::Reply(Value::Error("NOSCRIPT No matching script".into()))
        );
        assert_eq!(whole(b"!5\r\nERR x\r\n"), Frame::Reply(Value::Error("ERR x".into())));
        assert_eq!(
            whole(b"*3\r\n$2\r\nok\r\n:1\r\n*1\r\n$5\r\na|b\r\n\r\n"),
            Frame::Reply(Value::Array(vec![bytes("ok"), Value::Int(1), Value::Array(vec![bytes("a|b\r\n")])]))
        );
        // HELLO answers with a map; an attribute in front of a value is skipped.
        assert_eq!(
            whole(b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n"),
            Frame::Reply(Value::Array(vec![bytes("server"), bytes("redis"), bytes("proto"), Value::Int(3)]))
        );
        assert_eq!(whole(b"|1\r\n+ttl\r\n:3\r\n:7\r\n"), Frame::Reply(Value::Int(7)));
        assert_eq!(whole(b"|1\r\n+a\r\n:3\r\n>1\r\n+x\r\n"), Frame::Push(vec![bytes("x")]));
        assert_eq!(whole(b"*-1\r\n"), Frame::Reply(Value::Nil));
        // A message push whose channel is not a bulk string is still a push.
        assert_eq!(
            whole(b">3\r\n$7\r\nmessage\r\n+c\r\n$1\r\nx\r\n"),
            Frame::Push(vec![bytes("message"), bytes("c"), bytes("x")])
        );
        assert_eq!(
            whole(b">3\r\n$9\r\nsubscribe\r\n$5\r\nsb:to\r\n:1\r\n"),
            Frame::Push(vec![bytes("subscribe"), bytes("sb:to"), Value::Int(1)])
        );
    }

    #[test]
    fn a_published_message_is_found_in_place() {
        let frame = b">3\r\n$7\r\nmessage\r\n$6\r\nsb:all\r\n$7\r\n{\"a\":1}\r\n";
        let Frame::Message { channel, payload } = whole(frame) else { panic!("a message") };
        assert_eq!(&frame[channel], b"sb:all");
        assert_eq!(&frame[payload], b"{\"a\":1}");
    }

    #[test]
    fn every_cut_of_a_frame_is_incomplete_and_two_frames_parse_one_at_a_time() {
        let frames: [&[u8]; 3] = [
            b">3\r\n$7\r\nmessage\r\n$6\r\nsb:all\r\n$7\r\n{\"a\":1}\r\n",
            b"*2\r\n$2\r\nok\r\n%1\r\n:1\r\n#f\r\n",
            b"=8\r\ntxt:abcd\r\n",
        ];
        for frame in frames {
            for cut in 0..frame.len() {
                assert_eq!(parse(&frame[..cut]), Ok(None), "cut at {cut} of {:?}", String::from_utf8_lossy(frame));
            }
        }
        let two = [frames[0], frames[1]].concat();
        let (_, used) = parse(&two).unwrap().unwrap();
        assert_eq!(used, frames[0].len());
        assert!(matches!(whole(&two[used..]), Frame::Reply(Value::Array(_))));
    }

    #[test]
    fn broken_streams_are_errors_not_panics() {
        assert_eq!(parse(b"?x\r\n"), Err(RespError::UnknownType(b'?')));
        assert_eq!(parse(b":12a\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b"$3\r\nabcd\r\n"), Err(RespError::MissingCrlf));
        assert_eq!(parse(b"+OK\n"), Err(RespError::MissingCrlf));
        assert_eq!(parse(b"$-2\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b"*-5\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(format!("${}\r\n", MAX_STRING + 1).as_bytes()), Err(RespError::TooLarge));
        assert_eq!(parse(b"*99999999999\r\n"), Err(RespError::TooLarge));
        assert_eq!(parse("*1\r\n".repeat(MAX_DEPTH + 1).as_bytes()), Err(RespError::TooLarge));
        assert_eq!(parse(&[b'+'; 5000]), Err(RespError::TooLarge));
        assert_eq!(parse(b"_x\r\n"), Err(RespError::BadNumber));
        // A long run of attributes is walked in a loop, not by recursion (which would overflow the stack).
        let mut attributes = b"|0\r\n".repeat(200_000);
        assert_eq!(parse(&attributes), Ok(None));
        attributes.extend_from_slice(b":5\r\n");
        assert_eq!(parse(&attributes).unwrap().unwrap().0, Frame::Reply(Value::Int(5)));
        // A huge announced aggregate reserves nothing it has not seen.
        assert_eq!(parse(b"*1000000\r\n:1\r\n"), Ok(None));
    }
}
