//! A hand-rolled WebSocket client over a plain TCP socket, for tests of misbehaving clients.
//!
//! [`RawWebSocket`] does the opening handshake and then writes whatever frames it is told to, valid or not (text
//! frames with invalid UTF-8, unmasked frames, fragmented control frames, frames of any size), and reads frames only
//! when asked, so a test can play a client that never reads. Its socket's receive buffer can be made small
//! ([`RawWebSocket::connect_with_recv_buffer`]) so that the server's writes back up quickly.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::{Error, Result, DEFAULT_TIMEOUT};

/// WebSocket opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// Largest frame payload [`RawWebSocket::read_frame`] accepts from the server.
pub const MAX_READ_PAYLOAD: u64 = 64 * 1024 * 1024;

/// One frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The RSV1 bit: a compressed message (permessage-deflate), on its first frame.
    pub rsv1: bool,
    /// The opcode (see [`opcode`]).
    pub opcode: u8,
    /// The (unmasked) payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// For a close frame: its status code, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (opcode::CLOSE, [high, low, ..]) => Some(u16::from_be_bytes([*high, *low])),
            _ => None,
        }
    }

    /// For a text frame holding JSON: the value.
    pub fn json(&self) -> Option<Value> {
        if self.opcode == opcode::TEXT {
            serde_json::from_slice(&self.payload).ok()
        } else {
            None
        }
    }
}

/// How a connection read by [`RawWebSocket::expect_close`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEnd {
    /// A close frame arrived, with this code (if it had one).
    CloseFrame(Option<u16>),
    /// The TCP connection ended (EOF or reset) without a close frame.
    Disconnected(String),
}

/// A WebSocket client that writes raw frames and reads only when asked.
#[derive(Debug)]
pub struct RawWebSocket {
    stream: TcpStream,
    buf: Vec<u8>,
    mask_state: u32,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
}

impl RawWebSocket {
    /// Connects to `addr` and upgrades `path` (e.g. `/ws`).
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<Self> {
        Self::connect_with_recv_buffer(addr, path, None).await
    }

    /// Connects with the socket's receive buffer set to `recv_buffer` bytes (the kernel may round it up), so that a
    /// client that does not read makes the server's writes back up quickly.
    pub async fn connect_with_recv_buffer(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> Result<Self> {
        Self::connect_with(addr, path, recv_buffer, None).await
    }

    /// Connects offering these WebSocket extensions (`Sec-WebSocket-Extensions`); see [`RawWebSocket::extensions`]
    /// for the answer.
    pub async fn connect_offering(addr: SocketAddr, path: &str, extensions: &str) -> Result<Self> {
        Self::connect_with(addr, path, None, Some(extensions)).await
    }

    async fn connect_with(
        addr: SocketAddr,
        path: &str,
        recv_buffer: Option<u32>,
        extensions: Option<&str>,
    ) -> Result<Self> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| Error::Timeout { after: DEFAULT_TIMEOUT, waiting_for: format!("connecting to {addr}") })??;
        stream.set_nodelay(true)?;
        let mut raw =
            Self { stream, buf: Vec::new(), mask_state: 0x9e37_79b9 ^ u32::from(addr.port()), extensions: None };
        tokio::time::timeout(DEFAULT_TIMEOUT, raw.handshake(addr, path, extensions))
            .await
            .map_err(|_| Error::Timeout { after: DEFAULT_TIMEOUT, waiting_for: "the WebSocket handshake".into() })??;
        Ok(raw)
    }

    async fn handshake(&mut self, addr: SocketAddr, path: &str, extensions: Option<&str>) -> Result<()> {
        let offer = extensions.map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n")).unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        self.stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        let end = loop {
            if let Some(pos) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if response.len() > 16 * 1024 {
                return Err(Error::Handshake("response headers longer than 16 KiB".into()));
            }
            let mut chunk = [0u8; 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::Handshake("the server closed the connection during the handshake".into()));
            }
            response.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&response[..end]).into_owned();
        let status_ok = head.lines().next().is_some_and(|line| line.split_whitespace().nth(1) == Some("101"));
        // The key above is RFC 6455's example, whose accept value the RFC gives.
        let accept_ok = head.lines().any(|line| {
            let mut parts = line.splitn(2, ':');
            let name = parts.next().unwrap_or("").trim();
            let value = parts.next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("sec-websocket-accept") && value == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        });
        if !status_ok || !accept_ok {
            return Err(Error::Handshake(format!("unexpected response: {head:?}")));
        }
        self.extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions").then(|| value.trim().to_owned())
        });
        self.buf = response[end..].to_vec();
        Ok(())
    }

    /// The extensions the server accepted (its `Sec-WebSocket-Extensions` header), if any.
    pub fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks only need to be unpredictable to intermediaries, not secure.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_be_bytes()
    }

    /// Encodes one frame; `mask` decides whether it is masked (clients must mask).
    pub fn encode_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
        let mask_bit = if mask { 0x80 } else { 0 };
        let len = payload.len();
        if len < 126 {
            // Fits in the 7-bit length field.
            out.push(mask_bit | (len as u8));
        } else if let Ok(len16) = u16::try_from(len) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&len16.to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if mask {
            let key = self.next_mask();
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Writes one masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<()> {
        let frame = self.encode_frame(fin, opcode, payload, true);
        self.write_bytes(&frame).await
    }

    /// Writes one frame without a mask (a protocol violation for a client).
    pub async fn send_unmasked_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<()> {
        let frame = self.encode_frame(fin, opcode, payload, false);
        self.write_bytes(&frame).await
    }

    /// Writes bytes as they are.
    pub async fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes one text frame (`text` is sent as given, so it may hold any bytes).
    pub async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        self.send_frame(true, opcode::TEXT, text).await
    }

    /// Writes one JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        let text = serde_json::to_vec(value)?;
        self.send_text(&text).await
    }

    /// Reads one frame; `None` when the server closed the TCP connection. No time limit.
    pub async fn read_frame(&mut self) -> Result<Option<RawFrame>> {
        loop {
            if let Some(frame) = self.parse_buffered()? {
                return Ok(Some(frame));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// [`RawWebSocket::read_frame`] with a time limit.
    pub async fn read_frame_timeout(&mut self, timeout: Duration) -> Result<Option<RawFrame>> {
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| Error::Timeout { after: timeout, waiting_for: "a frame".into() })?
    }

    /// Reads frames until a text frame and returns its JSON (pings are answered, other control frames skipped).
    /// Fails at the end of the connection.
    pub async fn read_json(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = self.read_frame_timeout(remaining).await?;
            let Some(frame) = frame else {
                return Err(Error::Closed {
                    code: None,
                    reason: "EOF".into(),
                    waiting_for: "a JSON text frame".into(),
                });
            };
            match frame.opcode {
                opcode::TEXT => {
                    return frame.json().ok_or_else(|| Error::Unexpected {
                        got: String::from_utf8_lossy(&frame.payload).into_owned(),
                        waiting_for: "a JSON text frame".into(),
                    })
                }
                opcode::PING => self.send_frame(true, opcode::PONG, &frame.payload).await?,
                opcode::CLOSE => {
                    return Err(Error::Closed {
                        code: frame.close_code(),
                        reason: String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default()).into_owned(),
                        waiting_for: "a JSON text frame".into(),
                    })
                }
                _ => {}
            }
        }
    }

    /// Reads and drops frames (without answering pings) until a close frame or the end of the TCP connection,
    /// for at most `timeout`.
    pub async fn expect_close(&mut self, timeout: Duration) -> Result<RawEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_timeout(remaining).await {
                Ok(Some(frame)) if frame.opcode == opcode::CLOSE => return Ok(RawEnd::CloseFrame(frame.close_code())),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(RawEnd::Disconnected("EOF".into())),
                Err(Error::Io(e)) => return Ok(RawEnd::Disconnected(e.to_string())),
                Err(e) => return Err(e),
            }
        }
    }

    fn parse_buffered(&mut self) -> Result<Option<RawFrame>> {
        let buf = &self.buf;
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        let rsv1 = buf[0] & 0x40 != 0;
        let opcode = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        let (len, mut pos) = match buf[1] & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else { return Ok(None) };
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                (u64::from_be_bytes(be), 10)
            }
            short => (u64::from(short), 2),
        };
        if len > MAX_READ_PAYLOAD {
            return Err(Error::Unexpected {
                got: format!("a frame of {len} bytes"),
                waiting_for: format!("frames of at most {MAX_READ_PAYLOAD} bytes"),
            });
        }
        let mut key = None;
        if masked {
            let Some(bytes) = buf.get(pos..pos + 4) else { return Ok(None) };
            key = Some([bytes[0], bytes[1], bytes[2], bytes[3]]);
            pos += 4;
        }
        // `len` is at most MAX_READ_PAYLOAD, which fits in usize.
        let end = pos + len as usize;
        let Some(payload) = buf.get(pos..end) else { return Ok(None) };
        let payload = match key {
            Some(key) => payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect(),
            None => payload.to_vec(),
        };
        self.buf.drain(..end);
        Ok(Some(RawFrame { fin, rsv1, opcode, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_the_encoder_and_parser() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let stream = TcpStream::connect(addr).await.unwrap();
        let _server_side = accept.await.unwrap();
        let mut raw = RawWebSocket { stream, buf: Vec::new(), mask_state: 1, extensions: None };
        for (len, mask) in [(0, true), (125, false), (126, true), (70_000, true)] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            raw.buf = raw.encode_frame(true, opcode::BINARY, &payload, mask);
            let frame = raw.parse_buffered().unwrap().unwrap();
            assert_eq!((frame.fin, frame.opcode, frame.payload), (true, opcode::BINARY, payload));
            assert!(raw.buf.is_empty());
        }
        raw.buf = raw.encode_frame(true, opcode::CLOSE, &[0x03, 0xf1], false);
        assert_eq!(raw.parse_buffered().unwrap().unwrap().close_code(), Some(1009));
    }
}
