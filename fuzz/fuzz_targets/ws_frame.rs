//! The server's WebSocket frame decoder (`switchboard_server::ws::frame::Decoder`) on arbitrary client bytes, fed
//! whole and again in pieces at fuzzer-chosen split points: any panic is a bug, and both ways must give the same
//! events and the same error, since TCP may split a stream anywhere. Text events are within the soft limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_server::ws::frame::{DecodeError, Decoder, Event};

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary,
    TooLarge(usize),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
    Inflating,
}

fn own(event: Event<'_>) -> Owned {
    match event {
        Event::Text(text) => Owned::Text(text.to_owned()),
        Event::Binary => Owned::Binary,
        Event::TooLarge(len) => Owned::TooLarge(len),
        Event::Ping(payload) => Owned::Ping(payload.to_vec()),
        Event::Pong => Owned::Pong,
        Event::Close(code) => Owned::Close(code),
        Event::Inflating => Owned::Inflating,
    }
}

/// Feeds `stream` in pieces ending at `cuts`; stops at the first error, like a connection does.
fn decode(soft: usize, hard: usize, deflate: bool, stream: &[u8], cuts: &[usize]) -> (Vec<Owned>, Option<DecodeError>) {
    let mut decoder = Decoder::new(soft, hard);
    if deflate {
        // permessage-deflate negotiated: frames with RSV1 are inflated, within the soft limit.
        decoder.accept_compressed();
    }
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        if end < start {
            continue;
        }
        let mut piece = stream[start..end].to_vec();
        start = end;
        if let Err(error) = decoder.feed(&mut piece, |event| events.push(own(event))) {
            return (events, Some(error));
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // Small limits, so that the fuzzer reaches the too-large and too-big paths with small inputs.
    let soft = 1 + usize::from(data[0]) * 4;
    let hard = soft + usize::from(data[1]) * 16;
    let cut_count = usize::from(data[2] % 8);
    let deflate = data[2] & 0x80 != 0;
    let stream = &data[3..];
    let mut cuts: Vec<usize> =
        stream.iter().take(cut_count).map(|&b| usize::from(b) * stream.len() / 256).collect();
    cuts.sort_unstable();
    let whole = decode(soft, hard, deflate, stream, &[]);
    let pieces = decode(soft, hard, deflate, stream, &cuts);
    assert_eq!(whole, pieces, "splitting the stream at {cuts:?} changed what was decoded");
    for event in &whole.0 {
        if let Owned::Text(text) = event {
            assert!(text.len() <= soft, "a text message over the soft limit was delivered");
        }
    }
});
