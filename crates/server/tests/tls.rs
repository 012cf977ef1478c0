//! TLS: HTTPS and WSS on the HTTP listener, the certificate reloaded from its files (and a broken file keeping the old
//! one), the same certificate on `turns:`, self-signed certificates, the HTTP-to-HTTPS redirect, and the handshake
//! timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::tls::{client_config, connect, presented, wss, CertFiles};
use common::{TestServer, T};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Wss, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// Reads until a JSON frame of type `kind` arrives.
async fn expect(ws: &mut Wss, kind: &str) -> Value {
    tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value["type"] == kind {
                        return value;
                    }
                    assert_ne!(value["type"], "error", "waiting for {kind}: {value}");
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended while waiting for {kind}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} within {T:?}"))
}

async fn login(ws: &mut Wss, name: &str) -> Value {
    send(ws, json!({"type": "login", "id": 1, "name": name})).await;
    expect(ws, "welcome").await
}

/// Reads a whole HTTP response from a stream that the server closes after it.
async fn http_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(T, stream.read_to_end(&mut response)).await.expect("the response did not end");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn wss_carries_the_protocol_with_large_frames_and_bursts() {
    let files = CertFiles::new("wss");
    let server = TestServer::start_with(|config| config.tls = Some((files.cert.clone(), files.key.clone()))).await;
    let trust = client_config(std::slice::from_ref(&files.der));
    let mut alice = wss(server.addr, trust.clone()).await;
    let mut bob = wss(server.addr, trust.clone()).await;
    let welcome = login(&mut alice, "alice").await;
    assert_eq!(welcome["name"], "alice");
    login(&mut bob, "bob").await;

    // An offer of 40 KB (the SDP cap is 48 KiB) spans several TLS records both ways.
    let sdp = "a".repeat(40 * 1024);
    send(&mut bob, json!({"type": "offer", "id": 2, "to": "alice", "sdp": {"type": "offer", "sdp": sdp}})).await;
    let offer = expect(&mut alice, "offer").await;
    assert_eq!((offer["from"].as_str(), offer["sdp"]["sdp"].as_str().map(str::len)), (Some("bob"), Some(40 * 1024)));

    // A burst in one direction arrives whole and in order.
    for n in 0..150 {
        let candidate = json!({"candidate": format!("candidate:{n} 1 udp 1 192.0.2.1 {n} typ host"), "sdpMid": "0"});
        send(&mut alice, json!({"type": "candidate", "to": "bob", "candidate": candidate})).await;
    }
    for n in 0..150 {
        let candidate = expect(&mut bob, "candidate").await;
        assert!(candidate["candidate"]["candidate"].as_str().unwrap().starts_with(&format!("candidate:{n} ")));
    }
    send(&mut alice, json!({"type": "ping", "id": 3})).await;
    expect(&mut alice, "pong").await;

    // Plain HTTP over the same listener serves the page.
    let mut page = connect(server.addr, trust).await.unwrap();
    let response = http_get(&mut page, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.200}");

    // A client that speaks plain HTTP to the TLS port is dropped without harming anyone.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let response = http_get(&mut plain, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(!response.contains("200 OK"), "{response:.200}");
    send(&mut bob, json!({"type": "ping", "id": 4})).await;
    expect(&mut bob, "pong").await;

    // Logout ends with the server's close frame (4004) delivered over TLS.
    send(&mut bob, json!({"type": "logout", "id": 5})).await;
    expect(&mut bob, "ack").await;
    let close = tokio::time::timeout(T, async {
        loop {
            match bob.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(4004));
    let _ = alice.close(None).await;
    server.shutdown().await;
}

#[tokio::test]
async fn certificates_reload_from_changed_files_and_broken_files_keep_the_old_one() {
    let mut files = CertFiles::new("reload");
    let first = files.der.clone();
    let server = TestServer::start_with(|config| {
        config.tls = Some((files.cert.clone(), files.key.clone()));
        config.tls_reload_interval = Duration::from_millis(100);
        let turn = config.turn.as_mut().unwrap();
        turn.tls_enabled = true;
        turn.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let turns = server.turn_tls_addr().expect("turns: is on");
    let mut trusted = vec![first.clone()];
    let mut established = wss(server.addr, client_config(&trusted)).await;
    login(&mut established, "alice").await;
    let stream = connect(server.addr, client_config(&trusted)).await.unwrap();
    assert_eq!(presented(&stream), first);
    let stream = connect(turns, client_config(&trusted)).await.unwrap();
    assert_eq!(presented(&stream), first, "turns: serves the same certificate");

    // New files: the next handshakes get the new certificate, on both listeners, without a restart.
    let second = files.rotate();
    trusted.push(second.clone());
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let stream = connect(server.addr, client_config(&trusted)).await.unwrap();
        if presented(&stream) == second {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the changed files were never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = connect(turns, client_config(&trusted)).await.unwrap();
    assert_eq!(presented(&stream), second);
    // The connection made with the old certificate goes on.
    send(&mut established, json!({"type": "ping", "id": 9})).await;
    expect(&mut established, "pong").await;

    // A broken certificate file, and a key that does not match: errors, and the second certificate stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(server.reload_tls().is_err());
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&files.cert, other.cert.pem()).unwrap();
    let error = server.reload_tls().unwrap_err();
    assert!(format!("{error:#}").contains("do not form a usable certificate"), "{error:#}");
    // Give the watcher a few rounds to see the broken files too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = connect(server.addr, client_config(&trusted)).await.unwrap();
    assert_eq!(presented(&stream), second);
    // A good pair again, through the explicit reload that SIGHUP triggers.
    let third = files.rotate();
    trusted.push(third.clone());
    assert!(server.reload_tls().unwrap());
    let stream = connect(server.addr, client_config(&trusted)).await.unwrap();
    assert_eq!(presented(&stream), third);
    server.shutdown().await;
}

#[tokio::test]
async fn a_self_signed_certificate_is_made_for_the_configured_names() {
    let server = TestServer::start_with(|config| {
        config.self_signed = true;
        config.tls_names = vec!["localhost".into(), "127.0.0.1".into()];
    })
    .await;
    let store = server.tls().expect("TLS is on");
    assert!(store.is_self_signed());
    let der = store.certificate().unwrap();
    let fingerprint = store.fingerprint();
    assert_eq!(fingerprint, switchboard_server::tls::fingerprint(&der));
    assert_eq!(fingerprint.len(), 32 * 3 - 1);
    // The certificate verifies for 127.0.0.1 (the name the helper connects with).
    let mut ws = wss(server.addr, client_config(&[der])).await;
    login(&mut ws, "alice").await;
    assert!(server.turn_tls_addr().is_none(), "turns: needs --turn-tls with a self-signed certificate");
    server.shutdown().await;
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_the_https_port() {
    let server = TestServer::start_with(|config| {
        config.self_signed = true;
        config.redirect_http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let redirect = server.redirect_addr().expect("redirect listener");
    let https_port = server.addr.port();
    let mut stream = tokio::net::TcpStream::connect(redirect).await.unwrap();
    let response =
        http_get(&mut stream, "GET /ws?room=a HTTP/1.1\r\nHost: switchboard.test:80\r\nConnection: close\r\n\r\n")
            .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    let location = format!("location: https://switchboard.test:{https_port}/ws?room=a\r\n");
    assert!(response.to_ascii_lowercase().contains(&location), "{response}");
    let mut stream = tokio::net::TcpStream::connect(redirect).await.unwrap();
    let response = http_get(&mut stream, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 400") || response.starts_with("HTTP/1.1 400"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_the_tls_handshake_is_dropped_and_others_are_served() {
    let files = CertFiles::new("handshake");
    let server = TestServer::start_with(|config| {
        config.tls = Some((files.cert.clone(), files.key.clone()));
        config.limits.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Half a ClientHello.
    let mut partial = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await.unwrap();
    silent.push(partial);
    let started = tokio::time::Instant::now();
    let mut ws = wss(server.addr, client_config(std::slice::from_ref(&files.der))).await;
    login(&mut ws, "alice").await;
    for mut stream in silent {
        let mut buf = [0u8; 64];
        let ended = tokio::time::timeout(T, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a stalled TLS handshake was never dropped");
    }
    assert!(started.elapsed() >= Duration::from_millis(400), "dropped before the timeout");
    assert!(server.edge_stats().handshake_timeouts >= 21, "{:?}", server.edge_stats());
    send(&mut ws, json!({"type": "ping", "id": 2})).await;
    expect(&mut ws, "pong").await;
    server.shutdown().await;
}
