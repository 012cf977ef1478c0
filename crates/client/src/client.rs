//! The protocol v1 client.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_proto::event::{CallSnapshot, RoomSnapshot};
use switchboard_proto::names::name_key;
use switchboard_proto::tutorial::TutorialEvent;
use switchboard_proto::{Dialect, Event, IceServer, Limits, UserEntry, UserStatus};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Error, Incoming, OwnedEvent, Result};

/// How long helpers wait for an expected frame unless told otherwise ([`Client::set_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The reply to a successful `login`, with owned data.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Protocol version the server speaks.
    pub protocol: u32,
    /// The session's name as the server stores it (NFC).
    pub name: String,
    /// The token to resume this session with.
    pub resume_token: String,
    /// Whether this was a resume.
    pub resumed: bool,
    /// Everyone online at login.
    pub users: Vec<UserEntry<'static>>,
    /// The server's limits.
    pub limits: Limits,
    /// ICE servers for `RTCPeerConnection`.
    pub ice_servers: Vec<IceServer>,
    /// On resume: the rooms the session is in.
    pub rooms: Vec<RoomSnapshot<'static>>,
    /// On resume: the call the session is in.
    pub call: Option<CallSnapshot<'static>>,
    /// The `welcome` event as received.
    pub raw: Value,
}

impl Welcome {
    /// The names in [`Welcome::users`].
    pub fn user_names(&self) -> Vec<String> {
        self.users.iter().map(|u| u.name.to_string()).collect()
    }
}

/// One WebSocket connection to a Switchboard server.
///
/// Frames are read only while a method of the client runs; a client that nobody polls does not read (and does not
/// answer WebSocket pings), like a stalled browser tab.
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    url: String,
    dialect: Dialect,
    timeout: Duration,
    /// Frames read while a request helper waited for its reply; [`Client::recv`] returns them first.
    backlog: VecDeque<Incoming>,
    closed: Option<(Option<u16>, String)>,
    next_id: u64,
    hello: Option<Value>,
    name: Option<String>,
    resume_token: Option<String>,
    track_presence: bool,
    light: bool,
    users: BTreeMap<String, UserEntry<'static>>,
    presence_frames: usize,
    userlist: Vec<String>,
    userlist_frames: usize,
}

impl Client {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:8080/ws`), failing after [`DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_dialect(url, Dialect::V1).await
    }

    /// Opens a WebSocket to `url` with extra headers in the upgrade request (`Origin`, as browsers send it). A login
    /// token goes into the URL instead: `ws://host/ws?token=...`.
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Self> {
        Self::connect_request(url, headers, Dialect::V1).await
    }

    /// Opens a WebSocket to `url` over `stream`, a TCP connection the caller made (e.g. from a chosen source
    /// address), failing after [`DEFAULT_TIMEOUT`].
    pub async fn connect_stream(url: &str, stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true)?;
        let connecting = tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), None);
        let (ws, _response) = tokio::time::timeout(DEFAULT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Timeout { after: DEFAULT_TIMEOUT, waiting_for: format!("upgrading to {url}") })??;
        Ok(Self::from_ws(ws, url, Dialect::V1))
    }

    pub(crate) async fn connect_dialect(url: &str, dialect: Dialect) -> Result<Self> {
        Self::connect_request(url, &[], dialect).await
    }

    pub(crate) async fn connect_request(url: &str, headers: &[(&str, &str)], dialect: Dialect) -> Result<Self> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::Handshake(format!("header name {name:?}: {e}")))?;
            let value = tungstenite::http::HeaderValue::from_str(value)
                .map_err(|e| Error::Handshake(format!("header value {value:?}: {e}")))?;
            request.headers_mut().append(name, value);
        }
        let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
        let (ws, _response) = tokio::time::timeout(DEFAULT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Timeout { after: DEFAULT_TIMEOUT, waiting_for: format!("connecting to {url}") })??;
        Ok(Self::from_ws(ws, url, dialect))
    }

    fn from_ws(ws: Ws, url: &str, dialect: Dialect) -> Self {
        Self {
            ws,
            url: url.to_owned(),
            dialect,
            timeout: DEFAULT_TIMEOUT,
            backlog: VecDeque::new(),
            closed: None,
            next_id: 1,
            hello: None,
            name: None,
            resume_token: None,
            track_presence: true,
            light: false,
            users: BTreeMap::new(),
            presence_frames: 0,
            userlist: Vec::new(),
            userlist_frames: 0,
        }
    }

    /// The URL this client connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The default timeout of the waiting helpers.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the default timeout of the waiting helpers.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The `hello` event, once received.
    pub fn hello(&self) -> Option<&Value> {
        self.hello.as_ref()
    }

    /// The name of the last successful login on this connection.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The most recent resume token received on this connection.
    pub fn resume_token(&self) -> Option<&str> {
        self.resume_token.as_deref()
    }

    /// Whether the connection has ended (a close frame or the end of the stream was read).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    // ----- sending -----

    /// Sends one JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        let text = serde_json::to_string(value)?;
        self.send_text(text).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.send_message(Message::text(text.into())).await
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.send_message(Message::binary(bytes)).await
    }

    /// Sends any WebSocket message, including raw frames ([`Message::Frame`]).
    pub async fn send_message(&mut self, message: Message) -> Result<()> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.ws.send(message))
            .await
            .map_err(|_| Error::Timeout { after: timeout, waiting_for: "sending a frame".into() })??;
        Ok(())
    }

    /// Starts the closing handshake with `code` (1000 is a normal close); does not wait for the server's reply.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
        self.send_message(Message::Close(Some(frame))).await
    }

    // ----- receiving -----

    /// Whether to keep a view of the lobby from `welcome`, `users` and `presence` (on by default; load generators
    /// with many clients may turn it off to save memory).
    pub fn set_track_presence(&mut self, on: bool) {
        self.track_presence = on;
        if !on {
            self.users.clear();
        }
    }

    /// Light mode, for load generators: received frames are not parsed beyond their `type` and `id`
    /// ([`Incoming::Unparsed`]), which makes presence tracking impossible (it is turned off). Replies to the typed
    /// request helpers ([`Client::login`], [`Client::users`], ...) and `error` replies are still parsed in full.
    pub fn set_light(&mut self, on: bool) {
        self.light = on;
        if on {
            self.set_track_presence(false);
        }
    }

    /// The lobby as this client knows it, keyed by the case-folded name: the `welcome` snapshot, replaced by any
    /// `users` reply, with every `presence` delta applied (`left`, then `joined` and `changed`, or in the compact format
    /// `idle` and `inCall`). Updated as frames are read.
    pub fn presence_view(&self) -> &BTreeMap<String, UserEntry<'static>> {
        &self.users
    }

    /// How many `presence` events this client has read.
    pub fn presence_frames(&self) -> usize {
        self.presence_frames
    }

    /// The last `RenderUserList` received (tutorial dialect).
    pub fn userlist(&self) -> &[String] {
        &self.userlist
    }

    /// How many `RenderUserList` events this client has read.
    pub fn userlist_frames(&self) -> usize {
        self.userlist_frames
    }

    /// The next frame, without a time limit (frames kept by request helpers come first). After the connection ended,
    /// returns the same [`Incoming::Close`] again.
    pub async fn recv(&mut self) -> Result<Incoming> {
        if let Some(incoming) = self.backlog.pop_front() {
            return Ok(incoming);
        }
        self.read_socket().await
    }

    /// The next frame, or [`Error::Timeout`] after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Incoming> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| Error::Timeout { after: timeout, waiting_for: "any frame".into() })?
    }

    /// The next frame if one arrives within `timeout`, else `None`.
    pub async fn try_recv_within(&mut self, timeout: Duration) -> Result<Option<Incoming>> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(incoming) => incoming.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Every frame that arrives within `window` (stops early at the end of the connection, which is included).
    pub async fn drain(&mut self, window: Duration) -> Result<Vec<Incoming>> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.recv()).await {
                Ok(incoming) => {
                    let incoming = incoming?;
                    let end = incoming.is_close();
                    out.push(incoming);
                    if end {
                        return Ok(out);
                    }
                }
                Err(_) => return Ok(out),
            }
        }
    }

    /// Reads frames until `pick` returns `Some`, dropping the others, for at most the client's timeout. The end of the
    /// connection is an [`Error::Closed`] unless `pick` accepts it.
    pub async fn expect<T>(&mut self, what: &str, pick: impl FnMut(&Incoming) -> Option<T>) -> Result<T> {
        let timeout = self.timeout;
        self.expect_within(timeout, what, pick).await
    }

    /// [`Client::expect`] with an explicit timeout.
    pub async fn expect_within<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(&Incoming) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let incoming = tokio::time::timeout(remaining, self.recv())
                .await
                .map_err(|_| Error::Timeout { after: timeout, waiting_for: what.to_owned() })??;
            if let Some(found) = pick(&incoming) {
                return Ok(found);
            }
            if let Incoming::Close { code, reason } = incoming {
                return Err(Error::Closed { code, reason, waiting_for: what.to_owned() });
            }
        }
    }

    /// Reads frames until a v1 event for which `pick` returns `Some`, dropping the others.
    pub async fn expect_event<T>(&mut self, what: &str, mut pick: impl FnMut(&OwnedEvent) -> Option<T>) -> Result<T> {
        self.expect(what, |incoming| incoming.event().and_then(&mut pick)).await
    }

    /// Reads frames until one whose JSON `type` is `kind`, dropping the others, and returns its JSON.
    pub async fn expect_type(&mut self, kind: &str) -> Result<Value> {
        let what = format!("a {kind:?} message");
        self.expect(&what, |incoming| (incoming.kind() == Some(kind)).then(|| incoming.to_raw())).await
    }

    /// Reads frames until one of type `kind` for which `pick` holds, dropping the others, and returns its JSON.
    pub async fn expect_type_where(&mut self, kind: &str, mut pick: impl FnMut(&Value) -> bool) -> Result<Value> {
        let what = format!("a matching {kind:?} message");
        self.expect(&what, |incoming| {
            if incoming.kind() != Some(kind) {
                return None;
            }
            let raw = incoming.to_raw();
            pick(&raw).then_some(raw)
        })
        .await
    }

    /// Reads frames until an `error` event, dropping the others. Returns its JSON if its code is `code` (the wire
    /// form, e.g. `"name-taken"`), else [`Error::Unexpected`].
    pub async fn expect_error(&mut self, code: &str) -> Result<Value> {
        let raw = self.expect_type("error").await?;
        if raw.get("code").and_then(Value::as_str) == Some(code) {
            Ok(raw)
        } else {
            Err(Error::Unexpected { got: raw.to_string(), waiting_for: format!("error {code:?}") })
        }
    }

    /// Reads frames until the connection ends, dropping them; returns the close code (if a close frame came) and
    /// reason.
    pub async fn expect_close(&mut self) -> Result<(Option<u16>, String)> {
        self.expect("the end of the connection", |incoming| match incoming {
            Incoming::Close { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .await
    }

    /// Fails with [`Error::Unexpected`] if a frame for which `unwanted` holds arrives within `window`; other frames
    /// are dropped. Ends early, successfully, at the end of the connection unless `unwanted` matches it.
    pub async fn expect_none_within(
        &mut self,
        window: Duration,
        what: &str,
        mut unwanted: impl FnMut(&Incoming) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + window;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.recv()).await {
                Err(_) => return Ok(()),
                Ok(incoming) => {
                    let incoming = incoming?;
                    if unwanted(&incoming) {
                        return Err(Error::Unexpected {
                            got: incoming.describe(),
                            waiting_for: format!("silence about {what}"),
                        });
                    }
                    if incoming.is_close() {
                        return Ok(());
                    }
                }
            }
        }
    }

    // ----- requests -----

    /// A fresh numeric request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends `message` (adding a numeric `id` when it has none) and waits for the frame that echoes its id. Other
    /// frames read meanwhile are kept for [`Client::recv`]. An `error` reply becomes [`Error::Server`].
    pub async fn request(&mut self, message: Value) -> Result<Value> {
        self.request_incoming(message).await.map(Incoming::into_raw)
    }

    /// [`Client::request`], returning the reply as an [`Incoming`] (typed and raw).
    pub async fn request_incoming(&mut self, mut message: Value) -> Result<Incoming> {
        let id = match message.get("id") {
            Some(id) => id.clone(),
            None => {
                let id = json!(self.next_id());
                if let Some(object) = message.as_object_mut() {
                    object.insert("id".into(), id.clone());
                }
                id
            }
        };
        self.send_json(&message).await?;
        self.expect_reply_incoming(&id).await
    }

    /// Waits for the frame carrying request id `id`, keeping other frames for [`Client::recv`]. An `error` reply
    /// becomes [`Error::Server`].
    pub async fn expect_reply(&mut self, id: &Value) -> Result<Value> {
        self.expect_reply_incoming(id).await.map(Incoming::into_raw)
    }

    /// [`Client::expect_reply`], returning the reply as an [`Incoming`].
    pub async fn expect_reply_incoming(&mut self, id: &Value) -> Result<Incoming> {
        let timeout = self.timeout;
        let what = format!("the reply to request {id}");
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        let result = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let incoming = match tokio::time::timeout(remaining, self.recv()).await {
                Err(_) => break Err(Error::Timeout { after: timeout, waiting_for: what }),
                Ok(Err(e)) => break Err(e),
                Ok(Ok(incoming)) => incoming,
            };
            if incoming.id() == Some(id) {
                break reply_result(incoming.parsed(self.dialect));
            }
            if let Incoming::Close { code, reason } = &incoming {
                let error = Error::Closed { code: *code, reason: reason.clone(), waiting_for: what };
                kept.push(incoming);
                break Err(error);
            }
            kept.push(incoming);
        };
        // Keep the skipped frames in arrival order, ahead of anything read later.
        for incoming in kept.into_iter().rev() {
            self.backlog.push_front(incoming);
        }
        result
    }

    /// Logs in as `name` (protocol 1) and returns the `welcome`.
    pub async fn login(&mut self, name: &str) -> Result<Welcome> {
        self.login_with(json!({"type": "login", "name": name, "protocol": 1})).await
    }

    /// Logs in with a login token (servers in token mode); `name` may be left out, the token names the user.
    pub async fn login_with_token(&mut self, name: Option<&str>, token: &str) -> Result<Welcome> {
        let mut message = json!({"type": "login", "token": token, "protocol": 1});
        if let Some(name) = name {
            message["name"] = json!(name);
        }
        self.login_with(message).await
    }

    /// Takes a dropped session back with its resume token.
    pub async fn login_resume(&mut self, token: &str) -> Result<Welcome> {
        self.login_with(json!({"type": "login", "resume": token})).await
    }

    /// Sends a `login` message as given (an `id` is added if missing) and returns the `welcome`. The `hello` that
    /// precedes it is recorded ([`Client::hello`]) and not kept for [`Client::recv`].
    pub async fn login_with(&mut self, message: Value) -> Result<Welcome> {
        let reply = self.request_incoming(message).await;
        self.backlog.retain(|incoming| incoming.kind() != Some("hello"));
        let Incoming::Event { event, raw } = reply? else {
            return Err(Error::Unexpected { got: "a frame that is no v1 event".into(), waiting_for: "welcome".into() });
        };
        let Event::Welcome {
            protocol,
            name,
            resume_token,
            resumed,
            users,
            idle,
            in_call,
            limits,
            ice_servers,
            rooms,
            call,
            ..
        } = *event
        else {
            return Err(Error::Unexpected { got: raw.to_string(), waiting_for: "welcome".into() });
        };
        self.name = Some(name.to_string());
        self.resume_token = Some(resume_token.to_string());
        Ok(Welcome {
            protocol,
            name: name.into_owned(),
            resume_token: resume_token.into_owned(),
            resumed,
            users: user_list(users, idle, in_call),
            limits,
            ice_servers,
            rooms,
            call,
            raw,
        })
    }

    /// Logs out and returns the `ack` (the server then closes the connection with 4004).
    pub async fn logout(&mut self) -> Result<Value> {
        self.request(json!({"type": "logout"})).await
    }

    /// Asks for everyone online.
    pub async fn users(&mut self) -> Result<Vec<UserEntry<'static>>> {
        match self.request_incoming(json!({"type": "users"})).await? {
            Incoming::Event { event, raw } => match *event {
                Event::Users { users, idle, in_call, .. } => Ok(user_list(users, idle, in_call)),
                _ => Err(Error::Unexpected { got: raw.to_string(), waiting_for: "users".into() }),
            },
            other => Err(Error::Unexpected { got: other.describe(), waiting_for: "users".into() }),
        }
    }

    /// Sends `ping` and waits for `pong`.
    pub async fn ping(&mut self) -> Result<Value> {
        self.request(json!({"type": "ping"})).await
    }

    /// Calls `to`; returns the call id from `ringing`.
    pub async fn call(&mut self, to: &str) -> Result<String> {
        let reply = self.request(json!({"type": "call", "to": to})).await?;
        string_field(&reply, "callId")
    }

    /// Accepts a ringing call; returns the `ack`.
    pub async fn accept(&mut self, call_id: &str) -> Result<Value> {
        self.request(json!({"type": "accept", "callId": call_id})).await
    }

    /// Rejects a ringing call; returns the `ack`.
    pub async fn reject(&mut self, call_id: &str) -> Result<Value> {
        self.request(json!({"type": "reject", "callId": call_id})).await
    }

    /// Sends `cancel` (no id, no reply expected).
    pub async fn cancel(&mut self, call_id: &str) -> Result<()> {
        self.send_json(&json!({"type": "cancel", "callId": call_id})).await
    }

    /// Sends `hangup` (no id, no reply expected).
    pub async fn hangup(&mut self, call_id: &str) -> Result<()> {
        self.send_json(&json!({"type": "hangup", "callId": call_id})).await
    }

    /// Joins `room`; returns its members in join order (this user last).
    pub async fn join(&mut self, room: &str) -> Result<Vec<String>> {
        let reply = self.request(json!({"type": "join", "room": room})).await?;
        let members = reply.get("members").cloned().unwrap_or(Value::Null);
        Ok(serde_json::from_value(members)?)
    }

    /// Leaves `room`; returns the `left` reply.
    pub async fn leave(&mut self, room: &str) -> Result<Value> {
        self.request(json!({"type": "leave", "room": room})).await
    }

    /// Sends an `offer` to `to` (no id).
    pub async fn offer(&mut self, to: &str, sdp: Value) -> Result<()> {
        self.send_json(&json!({"type": "offer", "to": to, "sdp": sdp})).await
    }

    /// Sends an `answer` to `to` (no id).
    pub async fn answer(&mut self, to: &str, sdp: Value) -> Result<()> {
        self.send_json(&json!({"type": "answer", "to": to, "sdp": sdp})).await
    }

    /// Sends a `candidate` to `to` (no id).
    pub async fn candidate(&mut self, to: &str, candidate: Value) -> Result<()> {
        self.send_json(&json!({"type": "candidate", "to": to, "candidate": candidate})).await
    }

    /// Sends `end-of-candidates` to `to` (no id).
    pub async fn end_of_candidates(&mut self, to: &str) -> Result<()> {
        self.send_json(&json!({"type": "end-of-candidates", "to": to})).await
    }

    // ----- internals -----

    async fn read_socket(&mut self) -> Result<Incoming> {
        if let Some((code, reason)) = &self.closed {
            return Ok(Incoming::Close { code: *code, reason: reason.clone() });
        }
        let incoming = loop {
            match self.ws.next().await {
                None => break closed(None, "the stream ended without a close frame".into()),
                Some(Ok(Message::Text(text))) if self.light => break Incoming::from_text_light(text.as_str()),
                Some(Ok(Message::Text(text))) => break Incoming::from_text(text.as_str(), self.dialect),
                Some(Ok(Message::Binary(bytes))) => break Incoming::Binary(bytes.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(frame) => closed(Some(u16::from(frame.code)), frame.reason.to_string()),
                        None => closed(None, "close frame without a code".into()),
                    }
                }
                Some(Err(e)) => match e {
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                        break closed(None, "the connection is closed".into())
                    }
                    tungstenite::Error::Io(e) => break closed(None, format!("io error: {e}")),
                    tungstenite::Error::Protocol(e) => break closed(None, format!("protocol error: {e}")),
                    other => return Err(other.into()),
                },
            }
        };
        if let Incoming::Close { code, reason } = &incoming {
            self.closed = Some((*code, reason.clone()));
            // Let tungstenite send its reply to the server's close frame; failures do not matter any more.
            let _ = tokio::time::timeout(Duration::from_millis(100), self.ws.flush()).await;
        }
        self.observe(&incoming);
        Ok(incoming)
    }

    fn observe(&mut self, incoming: &Incoming) {
        match incoming {
            Incoming::Event { event, raw } => match event.as_ref() {
                Event::Hello { .. } => self.hello = Some(raw.clone()),
                Event::Welcome { users, idle, in_call, .. } | Event::Users { users, idle, in_call, .. }
                    if self.track_presence =>
                {
                    self.users = users
                        .iter()
                        .cloned()
                        .chain(compact_entries(idle, in_call))
                        .map(|u| (name_key(&u.name).into_owned(), u))
                        .collect();
                }
                Event::Presence { joined, left, changed, idle, in_call } => {
                    self.presence_frames += 1;
                    if self.track_presence {
                        // `left` first: a user renamed in one tick (`alice` replaced by `Alice`) is in both, and
                        // online at the end.
                        for name in left {
                            self.users.remove(name_key(name).as_ref());
                        }
                        for user in joined.iter().chain(changed).cloned().chain(compact_entries(idle, in_call)) {
                            self.users.insert(name_key(&user.name).into_owned(), user);
                        }
                    }
                }
                _ => {}
            },
            Incoming::Tutorial { event, .. } => {
                if let TutorialEvent::RenderUserList { userlist } = event.as_ref() {
                    self.userlist_frames += 1;
                    self.userlist = userlist.iter().map(|name| name.to_string()).collect();
                }
            }
            _ => {}
        }
    }
}

/// The entries of a compact list pair (`idle`, `inCall`), as full-format entries.
fn compact_entries<'e>(
    idle: &'e [Cow<'static, str>],
    in_call: &'e [Cow<'static, str>],
) -> impl Iterator<Item = UserEntry<'static>> + 'e {
    let with = |status: UserStatus| move |name: &Cow<'static, str>| UserEntry { name: name.clone(), status };
    idle.iter().map(with(UserStatus::Idle)).chain(in_call.iter().map(with(UserStatus::InCall)))
}

/// One list of users from either format (a server sends one or the other, as the login asked).
fn user_list(
    users: Vec<UserEntry<'static>>,
    idle: Vec<Cow<'static, str>>,
    in_call: Vec<Cow<'static, str>>,
) -> Vec<UserEntry<'static>> {
    users.into_iter().chain(compact_entries(&idle, &in_call)).collect()
}

fn closed(code: Option<u16>, reason: String) -> Incoming {
    Incoming::Close { code, reason }
}

fn reply_result(incoming: Incoming) -> Result<Incoming> {
    if let Some(Event::Error { code, message, .. }) = incoming.event() {
        let (code, message) = (*code, message.to_string());
        return Err(Error::Server { code, message, raw: incoming.into_raw() });
    }
    Ok(incoming)
}

fn string_field(raw: &Value, field: &str) -> Result<String> {
    raw.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Unexpected { got: raw.to_string(), waiting_for: format!("a string field {field:?}") })
}
