//! WebSocket compression (permessage-deflate, RFC 7692) over real sockets: negotiation, compressed presence lists
//! that a standard inflater reads, compressed client messages, and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, T};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use switchboard_client::raw::{opcode, RawEnd, RawWebSocket};
use switchboard_proto::close_code;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What a browser does with a message: join its frames' payloads, append 00 00 ff ff, inflate.
fn inflate_message(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(4 << 20);
    inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    assert_eq!(inflater.total_in() as usize, input.len(), "the whole message inflates");
    out
}

/// `text` as a client compresses it.
fn deflate_message(text: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(text.len() + 1024);
    compress.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

/// One received message: its text, whether it came compressed, and its size on the wire (payload bytes).
struct Message {
    value: Value,
    compressed: bool,
    wire_bytes: usize,
}

/// Reads the next text message (answering pings), inflating it if its first frame has RSV1.
async fn next_message(raw: &mut RawWebSocket) -> Message {
    let mut payload = Vec::new();
    let mut compressed = None;
    loop {
        let frame = raw.read_frame_timeout(T).await.unwrap().expect("the server closed the connection");
        match frame.opcode {
            opcode::PING => {
                raw.send_frame(true, opcode::PONG, &frame.payload).await.unwrap();
                continue;
            }
            opcode::TEXT => {
                assert!(compressed.is_none(), "a new message inside a fragmented one");
                compressed = Some(frame.rsv1);
            }
            opcode::CONTINUATION => {
                assert!(compressed.is_some(), "a continuation without a message");
                assert!(!frame.rsv1, "RSV1 on a continuation frame");
            }
            other => panic!("unexpected opcode {other}"),
        }
        payload.extend_from_slice(&frame.payload);
        if frame.fin {
            break;
        }
    }
    let compressed = compressed.unwrap_or(false);
    let text = if compressed { inflate_message(&payload) } else { payload.clone() };
    Message { value: serde_json::from_slice(&text).unwrap(), compressed, wire_bytes: payload.len() }
}

async fn next_of_type(raw: &mut RawWebSocket, kind: &str) -> Message {
    loop {
        let message = next_message(raw).await;
        if message.value["type"] == kind {
            return message;
        }
    }
}

/// Sends `value` as one compressed text frame.
async fn send_compressed(raw: &mut RawWebSocket, value: &Value) {
    let mut frame = raw.encode_frame(true, opcode::TEXT, &deflate_message(&serde_json::to_vec(value).unwrap()), true);
    frame[0] |= 0x40;
    raw.write_bytes(&frame).await.unwrap();
}

fn names_of(value: &Value, field: &str) -> Vec<String> {
    value[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn presence_lists_come_compressed_once_negotiated_and_client_messages_may_be_compressed() {
    let server = TestServer::start_with(|config| config.core.presence_interval = Duration::from_millis(100)).await;
    // Enough users for the lobby list to be worth compressing (a kilobyte and more).
    let mut others = Vec::new();
    for i in 0..120 {
        others.push(server.login(&format!("lobby-member-{i:03}")).await);
    }
    // The snapshot a welcome carries is as of the last presence tick.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut zip = RawWebSocket::connect_offering(server.addr, "/ws", OFFER).await.unwrap();
    assert_eq!(zip.extensions(), Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"));
    send_compressed(&mut zip, &json!({"type":"login","id":1,"name":"zip","presence":"compact"})).await;
    let welcome = next_of_type(&mut zip, "welcome").await;
    assert!(welcome.compressed, "the welcome carries a long shared list");
    let idle = names_of(&welcome.value, "idle");
    assert_eq!(idle.len(), 121, "{idle:?}");
    assert!(idle.contains(&"zip".to_owned()) && idle.contains(&"lobby-member-119".to_owned()));
    let text_len = serde_json::to_vec(&welcome.value).unwrap().len();
    assert!(welcome.wire_bytes * 2 < text_len, "{} bytes on the wire for {text_len} of text", welcome.wire_bytes);

    // A burst of logins makes a long presence delta: compressed too, and the same for a second compressed reader.
    let mut zap = RawWebSocket::connect_offering(server.addr, "/ws", OFFER).await.unwrap();
    zap.send_json(&json!({"type":"login","id":1,"name":"zap","presence":"compact"})).await.unwrap();
    next_of_type(&mut zap, "welcome").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // All at once, so that they land in one or two ticks.
    let names: Vec<String> = (0..60).map(|i| format!("late-arrival-number-{i:02}")).collect();
    let burst = futures_util::future::join_all(names.iter().map(|name| server.login(name))).await;
    for reader in [&mut zip, &mut zap] {
        let mut seen = Vec::new();
        let mut compressed_deltas = 0;
        while seen.len() < 60 {
            let delta = next_of_type(reader, "presence").await;
            let joined = delta.value.get("idle").map(|_| names_of(&delta.value, "idle")).unwrap_or_default();
            if joined.len() > 20 {
                assert!(delta.compressed, "a delta of {} names", joined.len());
                compressed_deltas += 1;
            }
            seen.extend(joined.into_iter().filter(|name| name.starts_with("late-arrival")));
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 60);
        assert!(compressed_deltas > 0);
    }

    // 182 upgrades (120 + 60 plain clients and ours), two of them with compression.
    assert_eq!(common::http::metric(server.addr, "switchboard_websocket_compressed_upgrades_total").await, 2.0);
    assert_eq!(common::http::metric(server.addr, "switchboard_websocket_upgrades_total").await, 182.0);

    // Short messages come uncompressed, and compressed requests are answered.
    send_compressed(&mut zip, &json!({"type":"ping","id":7})).await;
    let pong = next_of_type(&mut zip, "pong").await;
    assert_eq!(pong.value["id"], 7);
    assert!(!pong.compressed);
    drop((others, burst));
    server.shutdown().await;
}

#[tokio::test]
async fn without_the_offer_or_with_compression_off_nothing_is_compressed_and_rsv1_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut plain = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    assert_eq!(plain.extensions(), None);
    send_compressed(&mut plain, &json!({"type":"ping"})).await;
    assert_eq!(plain.expect_close(T).await.unwrap(), RawEnd::CloseFrame(Some(close_code::PROTOCOL_ERROR)));
    // An offer we cannot honour (a server window under 32 KiB) is declined, not half-accepted.
    let small_window =
        RawWebSocket::connect_offering(server.addr, "/ws", "permessage-deflate; server_max_window_bits=10")
            .await
            .unwrap();
    assert_eq!(small_window.extensions(), None);
    server.shutdown().await;

    let server = TestServer::start_with(|config| config.ws_compression = false).await;
    let off = RawWebSocket::connect_offering(server.addr, "/ws", OFFER).await.unwrap();
    assert_eq!(off.extensions(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn corrupt_compressed_data_closes_with_1007_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bad = RawWebSocket::connect_offering(server.addr, "/ws", OFFER).await.unwrap();
    let mut frame = bad.encode_frame(true, opcode::TEXT, &[0xff, 0xfe, 0xfd, 0xfc], true);
    frame[0] |= 0x40;
    bad.write_bytes(&frame).await.unwrap();
    assert_eq!(bad.expect_close(T).await.unwrap(), RawEnd::CloseFrame(Some(close_code::INVALID_PAYLOAD)));
    // A message that inflates past the message limit only gets too-large.
    let mut big = RawWebSocket::connect_offering(server.addr, "/ws", OFFER).await.unwrap();
    let padding = " ".repeat(200_000);
    let mut frame = big.encode_frame(true, opcode::TEXT, &deflate_message(padding.as_bytes()), true);
    frame[0] |= 0x40;
    big.write_bytes(&frame).await.unwrap();
    let error = next_of_type(&mut big, "error").await;
    assert_eq!(error.value["code"], "too-large");
    alice.ping().await.unwrap();
    server.shutdown().await;
}
