//! Frames that clients send, in both dialects.
//!
//! A frame is parsed once into the flat, borrowing [`Envelope`] (every field of every message is optional there), then
//! [`Envelope::into_request`] checks the fields that the `type` needs. Two reasons for this shape instead of a
//! `#[serde(tag = "type")]` enum: serde's internally tagged enums buffer the whole object and cannot hold a borrowed
//! [`RawValue`], and the relayed payloads (SDP, candidates) must pass through as the client wrote them, unparsed.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ErrorCode;

/// Which protocol a connection speaks; fixed by its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Switchboard's own protocol, version [`crate::PROTOCOL_VERSION`].
    V1,
    /// The classic tutorial protocol (`shared/seed-protocol.md`).
    Tutorial,
}

/// A credential a client sent (a login token, a room password). Its `Debug` form hides the value, so that a request
/// or a connection printed for debugging never puts a credential into a log.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Secret<'_> {
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// An owned copy that outlives the frame it came from.
    pub fn into_owned(self) -> Secret<'static> {
        Secret(Cow::Owned(self.0.into_owned()))
    }
}

impl std::fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Longest request id the server echoes, in bytes of its JSON form.
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// The text of one JSON value inside a frame, passed through as the client wrote it (a relayed SDP or candidate).
/// Only a parser that checked it makes one: serde_json's skim (as a [`RawValue`]) or the relay fast path.
#[derive(Clone, Copy)]
pub struct JsonText<'a> {
    text: &'a str,
    /// Known to nest no deeper than [`MAX_PAYLOAD_DEPTH`]: the relay fast path counts levels as it validates, which
    /// spares every relayed payload a second pass (`depth_within`, 1% of the CPU per relayed message).
    shallow: bool,
}

impl<'a> JsonText<'a> {
    /// The JSON text.
    pub fn get(self) -> &'a str {
        self.text
    }

    /// Text the caller has validated as one JSON value nested no deeper than [`MAX_PAYLOAD_DEPTH`].
    pub(crate) fn checked_shallow(json: &'a str) -> Self {
        Self { text: json, shallow: true }
    }
}

/// Shown and compared by the text alone: how deep it was checked is not part of the value.
impl std::fmt::Debug for JsonText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JsonText").field(&self.text).finish()
    }
}

impl PartialEq for JsonText<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for JsonText<'_> {}

impl<'de: 'a, 'a> Deserialize<'de> for JsonText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(deserializer).map(|raw| Self { text: raw.get(), shallow: false })
    }
}

/// Every field any client message may carry. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub to: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub room: Option<Cow<'a, str>>,
    #[serde(rename = "callId", borrow)]
    pub call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub resume: Option<Cow<'a, str>>,
    pub protocol: Option<u32>,
    #[serde(borrow)]
    pub token: Option<Secret<'a>>,
    #[serde(borrow)]
    pub password: Option<Secret<'a>>,
    #[serde(borrow)]
    pub sdp: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub candidate: Option<JsonText<'a>>,
    #[serde(rename = "UserName", borrow)]
    pub user_name: Option<Cow<'a, str>>,
    #[serde(rename = "TargetUserName", borrow)]
    pub target_user_name: Option<Cow<'a, str>>,
    /// Only `login` reads it, so it stays raw here: another message carrying a `presence` of any type is not refused.
    #[serde(borrow)]
    pub presence: Option<&'a RawValue>,
}

/// How a v1 client wants its user lists (`welcome`, `users`, `presence`), chosen at login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PresenceFormat {
    /// `{"name":..,"status":..}` objects in `users`, `joined`, `changed`.
    #[default]
    Full,
    /// Names only, grouped by status: `idle`, `inCall` (and `left`). About a quarter of the bytes per entry, which is
    /// what a login storm costs: every one of N clients must learn all N names.
    Compact,
}

impl PresenceFormat {
    /// The value of the `presence` field of `login`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Compact => "compact",
        }
    }
}

/// The relayed signaling payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    /// SDP offer (`sdp` payload).
    Offer,
    /// SDP answer (`sdp` payload).
    Answer,
    /// One trickled ICE candidate (`candidate` payload).
    Candidate,
    /// The sender has no more candidates (no payload).
    EndOfCandidates,
}

impl RelayKind {
    /// The v1 `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Candidate => "candidate",
            Self::EndOfCandidates => "end-of-candidates",
        }
    }
}

/// A typed client request.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Request<'a> {
    /// v1 login by name (and, on servers that want one, a signed `token`), or resumption by resume token. Which of
    /// `name` and `token` a login needs depends on the server's auth mode, so both are optional here.
    Login {
        name: Option<Cow<'a, str>>,
        resume: Option<Cow<'a, str>>,
        protocol: Option<u32>,
        token: Option<Secret<'a>>,
        presence: PresenceFormat,
    },
    /// v1 logout: ends the session at once, no grace period.
    Logout,
    /// v1: the full list of online users.
    Users,
    /// v1 application-level keep-alive.
    Ping,
    /// Offer, answer or candidate for `to`; from a tutorial client too.
    Relay {
        kind: RelayKind,
        to: Cow<'a, str>,
        room: Option<Cow<'a, str>>,
        call_id: Option<Cow<'a, str>>,
        payload: Option<JsonText<'a>>,
    },
    Call {
        to: Cow<'a, str>,
    },
    Accept {
        call_id: Cow<'a, str>,
    },
    Reject {
        call_id: Cow<'a, str>,
    },
    Cancel {
        call_id: Cow<'a, str>,
    },
    Hangup {
        call_id: Cow<'a, str>,
    },
    Join {
        room: Cow<'a, str>,
        /// The room's password: checked when the room has one, and sets it when this join creates the room.
        password: Option<Secret<'a>>,
    },
    Leave {
        room: Cow<'a, str>,
    },
    /// The tutorial's `Login`. The tutorial has no token field; its pages bring a token in the upgrade URL, but a
    /// `token` field is read here too.
    TutorialLogin {
        user_name: Cow<'a, str>,
        token: Option<Secret<'a>>,
    },
}

/// A parsed frame: the request and the client's request id, if it gave one.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// Echoed in the reply or error; always a JSON number or string of at most [`MAX_REQUEST_ID_BYTES`].
    pub id: Option<&'a RawValue>,
    /// What the client asked for.
    pub request: Request<'a>,
}

/// A frame that could not be turned into a request; `id` is set when the frame got far enough to show one.
#[derive(Debug, Clone)]
pub struct RequestError<'a> {
    /// The client's request id, when readable.
    pub id: Option<&'a RawValue>,
    /// Which error.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: Cow<'static, str>,
}

impl<'a> RequestError<'a> {
    fn new(id: Option<&'a RawValue>, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { id, code, message: message.into() }
    }
}

impl<'a> Envelope<'a> {
    /// Parses one text frame. Errors carry `bad-json` (the frame is not a JSON object of the expected field types).
    /// Plain relay frames take the fast path (see [`crate::fast`]), everything else serde_json.
    pub fn parse(text: &'a str) -> Result<Self, RequestError<'a>> {
        match crate::fast::relay_envelope(text) {
            Some(envelope) => Ok(envelope),
            None => Self::parse_with_serde(text),
        }
    }

    /// [`Envelope::parse`] without the fast path, for tests and fuzzing that compare the two.
    pub fn parse_with_serde(text: &'a str) -> Result<Self, RequestError<'a>> {
        serde_json::from_str(text)
            .map_err(|e| RequestError::new(None, ErrorCode::BadJson, format!("the frame is not a valid message: {e}")))
    }

    /// Whether this is the tutorial's `Login`, which makes a fresh connection speak the tutorial dialect.
    pub fn is_tutorial_login(&self) -> bool {
        self.kind.as_deref() == Some("Login")
    }

    /// Checks the fields that the `type` needs in `dialect` and returns the typed request.
    pub fn into_request(self, dialect: Dialect) -> Result<Parsed<'a>, RequestError<'a>> {
        let id = match self.id {
            Some(raw) if !valid_request_id(raw) => {
                return Err(RequestError::new(
                    None,
                    ErrorCode::BadRequest,
                    "`id` must be a number or a string of at most 64 bytes",
                ))
            }
            id => id,
        };
        let Some(kind) = self.kind.as_deref() else {
            return Err(RequestError::new(id, ErrorCode::BadRequest, "missing `type`"));
        };
        for payload in [self.sdp, self.candidate].into_iter().flatten() {
            if !payload.shallow && !depth_within(payload.get(), MAX_PAYLOAD_DEPTH) {
                return Err(RequestError::new(
                    id,
                    ErrorCode::BadJson,
                    format!("payload nested deeper than {MAX_PAYLOAD_DEPTH} levels"),
                ));
            }
        }
        let missing = |field: &'static str| {
            RequestError::new(id, ErrorCode::BadRequest, format!("`{kind}` needs the field `{field}`"))
        };
        let request = match dialect {
            Dialect::V1 => match kind {
                "login" => {
                    let presence = match self.presence.map(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get())) {
                        None => PresenceFormat::Full,
                        Some(Ok(value)) if value == "full" => PresenceFormat::Full,
                        Some(Ok(value)) if value == "compact" => PresenceFormat::Compact,
                        Some(_) => {
                            let shown: String = self.presence.map_or("", RawValue::get).chars().take(32).collect();
                            let message = format!("`presence` must be \"full\" or \"compact\", not {shown}");
                            return Err(RequestError::new(id, ErrorCode::BadRequest, message));
                        }
                    };
                    Request::Login {
                        name: self.name,
                        resume: self.resume,
                        protocol: self.protocol,
                        token: self.token,
                        presence,
                    }
                }
                "logout" => Request::Logout,
                "users" => Request::Users,
                "ping" => Request::Ping,
                "offer" | "answer" | "candidate" | "end-of-candidates" => {
                    let (relay_kind, payload) = match kind {
                        "offer" => (RelayKind::Offer, Some(self.sdp.ok_or_else(|| missing("sdp"))?)),
                        "answer" => (RelayKind::Answer, Some(self.sdp.ok_or_else(|| missing("sdp"))?)),
                        "candidate" => {
                            (RelayKind::Candidate, Some(self.candidate.ok_or_else(|| missing("candidate"))?))
                        }
                        _ => (RelayKind::EndOfCandidates, None),
                    };
                    Request::Relay {
                        kind: relay_kind,
                        to: self.to.ok_or_else(|| missing("to"))?,
                        room: self.room,
                        call_id: self.call_id,
                        payload,
                    }
                }
                "call" => Request::Call { to: self.to.ok_or_else(|| missing("to"))? },
                "accept" => Request::Accept { call_id: self.call_id.ok_or_else(|| missing("callId"))? },
                "reject" => Request::Reject { call_id: self.call_id.ok_or_else(|| missing("callId"))? },
                "cancel" => Request::Cancel { call_id: self.call_id.ok_or_else(|| missing("callId"))? },
                "hangup" => Request::Hangup { call_id: self.call_id.ok_or_else(|| missing("callId"))? },
                "join" => Request::Join { room: self.room.ok_or_else(|| missing("room"))?, password: self.password },
                "leave" => Request::Leave { room: self.room.ok_or_else(|| missing("room"))? },
                other => return Err(unknown_type(id, other)),
            },
            Dialect::Tutorial => match kind {
                "Login" => Request::TutorialLogin {
                    user_name: self.user_name.ok_or_else(|| missing("UserName"))?,
                    token: self.token,
                },
                "offer" | "answer" | "ICE" => {
                    let (relay_kind, payload) = match kind {
                        "offer" => (RelayKind::Offer, self.sdp.ok_or_else(|| missing("sdp"))?),
                        "answer" => (RelayKind::Answer, self.sdp.ok_or_else(|| missing("sdp"))?),
                        _ => (RelayKind::Candidate, self.candidate.ok_or_else(|| missing("candidate"))?),
                    };
                    Request::Relay {
                        kind: relay_kind,
                        to: self.target_user_name.ok_or_else(|| missing("TargetUserName"))?,
                        room: None,
                        call_id: None,
                        payload: Some(payload),
                    }
                }
                // A v1 request on a tutorial connection: say so rather than "unknown".
                "login" | "logout" | "users" | "ping" | "candidate" | "end-of-candidates" | "call" | "accept"
                | "reject" | "cancel" | "hangup" | "join" | "leave" => {
                    return Err(RequestError::new(
                        id,
                        ErrorCode::NotSupported,
                        format!("`{kind}` needs protocol v1; this connection speaks the tutorial dialect"),
                    ))
                }
                other => return Err(unknown_type(id, other)),
            },
        };
        Ok(Parsed { id, request })
    }
}

fn unknown_type<'a>(id: Option<&'a RawValue>, kind: &str) -> RequestError<'a> {
    let shown: String = kind.chars().take(32).collect();
    RequestError::new(id, ErrorCode::UnknownType, format!("unknown message type {shown:?}"))
}

/// Deepest nesting of arrays and objects allowed inside a relayed payload. serde_json checks depth while it parses
/// typed fields, but a [`RawValue`] is only skimmed, so relayed payloads get this separate, linear check; real SDP and
/// candidate objects are 1 or 2 levels deep.
pub const MAX_PAYLOAD_DEPTH: usize = 16;

/// Whether the JSON text `raw` (already known to be valid) nests arrays and objects no deeper than `max`.
///
/// Every relayed message goes through this, and an SDP payload is mostly one long string, so strings are skipped with
/// `memchr` (to the next quote or backslash) rather than byte by byte: that made this check about 7% of the server's
/// CPU per relayed offer instead of a rounding error.
fn depth_within(raw: &str, max: usize) -> bool {
    let bytes = raw.as_bytes();
    // Nesting needs an opening bracket per level, and real payloads have one or two (SDP text has none): counting
    // them all, strings included, settles nearly every payload in one vectorised pass.
    if memchr::memchr2_iter(b'[', b'{', bytes).take(max + 1).count() <= max {
        return true;
    }
    let mut depth = 0usize;
    let mut at = 0usize;
    while let Some(rest) = bytes.get(at..) {
        let Some(offset) = memchr::memchr3(b'"', b'[', b'{', rest) else { break };
        // Closing brackets between here and the next opening one or string lower the depth.
        depth = depth.saturating_sub(rest[..offset].iter().filter(|&&b| b == b']' || b == b'}').count());
        at += offset;
        match bytes[at] {
            b'"' => {
                at += 1;
                // To the closing quote, stepping over escapes (a backslash and the byte after it).
                loop {
                    match bytes.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                        Some(o) if bytes[at + o] == b'\\' => at += o + 2,
                        Some(o) => {
                            at += o + 1;
                            break;
                        }
                        None => return true,
                    }
                }
            }
            _ => {
                depth += 1;
                if depth > max {
                    return false;
                }
                at += 1;
            }
        }
    }
    true
}

fn valid_request_id(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        // The limit counts a string's content, not its quotes.
        Some(b'"') => text.len() <= MAX_REQUEST_ID_BYTES + 2,
        // JSON puts no bound on a number, but `1e999` is infinity to a client reading floats and an error to one that
        // reads numbers strictly (serde's): echoed, it would break the client's frame, so it is refused here.
        Some(b'-' | b'0'..=b'9') => {
            text.len() <= MAX_REQUEST_ID_BYTES && serde_json::from_str::<serde_json::Number>(text).is_ok()
        }
        _ => false,
    }
}

/// Parses a frame of a connection whose dialect is known.
pub fn parse(text: &str, dialect: Dialect) -> Result<Parsed<'_>, RequestError<'_>> {
    Envelope::parse(text)?.into_request(dialect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_read_by_login_only() {
        fn parse(text: &str) -> Result<Parsed<'_>, RequestError<'_>> {
            Envelope::parse(text).and_then(|e| e.into_request(Dialect::V1))
        }
        let login = |text: &str| match parse(text).map(|p| p.request) {
            Ok(Request::Login { presence, .. }) => Ok(presence),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.code),
        };
        assert_eq!(login(r#"{"type":"login","name":"a"}"#), Ok(PresenceFormat::Full));
        assert_eq!(login(r#"{"type":"login","name":"a","presence":"full"}"#), Ok(PresenceFormat::Full));
        assert_eq!(login(r#"{"type":"login","name":"a","presence":"compact"}"#), Ok(PresenceFormat::Compact));
        assert_eq!(login(r#"{"type":"login","name":"a","presence":"comp\u0061ct"}"#), Ok(PresenceFormat::Compact));
        assert_eq!(
            login(r#"{"type":"login","name":"a","presence":null}"#),
            Ok(PresenceFormat::Full),
            "null: not given"
        );
        for bad in [r#""tiny""#, "7", "{}", r#"["compact"]"#] {
            let text = format!(r#"{{"type":"login","name":"a","presence":{bad}}}"#);
            assert_eq!(login(&text), Err(ErrorCode::BadRequest), "{text}");
        }
        // Unknown fields are ignored: another message with a `presence` of any type is not refused for it.
        assert!(parse(r#"{"type":"ping","presence":{"x":[1]}}"#).is_ok());
        let tutorial = Envelope::parse(r#"{"type":"Login","UserName":"a","presence":7}"#).unwrap();
        assert!(tutorial.into_request(Dialect::Tutorial).is_ok());
    }

    #[test]
    fn relay_payload_stays_raw() {
        let text = r#"{"type":"offer","to":"bob","id":7,"sdp":{"type":"offer","sdp":"v=0\r\n"}}"#;
        let parsed = parse(text, Dialect::V1).unwrap();
        assert_eq!(parsed.id.unwrap().get(), "7");
        match parsed.request {
            Request::Relay { kind: RelayKind::Offer, to, payload: Some(sdp), .. } => {
                assert_eq!(to, "bob");
                assert_eq!(sdp.get(), r#"{"type":"offer","sdp":"v=0\r\n"}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tutorial_messages_parse_with_their_field_names() {
        let login = Envelope::parse(r#"{"type":"Login","UserName":"alice"}"#).unwrap();
        assert!(login.is_tutorial_login());
        assert!(matches!(
            login.into_request(Dialect::Tutorial).unwrap().request,
            Request::TutorialLogin { user_name, .. } if user_name == "alice"
        ));
        let ice = r#"{"type":"ICE","candidate":{"candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0},"TargetUserName":"bob"}"#;
        assert!(matches!(
            parse(ice, Dialect::Tutorial).unwrap().request,
            Request::Relay { kind: RelayKind::Candidate, to, .. } if to == "bob"
        ));
    }

    #[test]
    fn errors_are_typed_and_keep_the_id() {
        assert_eq!(parse("{", Dialect::V1).unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse("[1,2]", Dialect::V1).unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse(r#"{"type":5}"#, Dialect::V1).unwrap_err().code, ErrorCode::BadJson);
        let err = parse(r#"{"type":"dance","id":"r1"}"#, Dialect::V1).unwrap_err();
        assert_eq!((err.code, err.id.map(RawValue::get)), (ErrorCode::UnknownType, Some(r#""r1""#)));
        let err = parse(r#"{"type":"offer","id":2,"to":"bob"}"#, Dialect::V1).unwrap_err();
        assert_eq!((err.code, err.id.map(RawValue::get)), (ErrorCode::BadRequest, Some("2")));
        let err = parse(r#"{"type":"ping","id":{"a":1}}"#, Dialect::V1).unwrap_err();
        assert_eq!((err.code, err.id.is_none()), (ErrorCode::BadRequest, true));
        // Found by the fuzzer: a number out of a float's range is refused, not echoed.
        let err = parse(r#"{"type":"ping","id":499E9996}"#, Dialect::V1).unwrap_err();
        assert_eq!((err.code, err.id.is_none()), (ErrorCode::BadRequest, true));
        assert!(parse(r#"{"type":"ping","id":-12.5e3}"#, Dialect::V1).is_ok());
    }

    #[test]
    fn deep_nesting_is_a_json_error_not_a_crash() {
        let deep = format!(r#"{{"type":"offer","to":"b","sdp":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(parse(&deep, Dialect::V1), Err(RequestError { code: ErrorCode::BadJson, .. })));
        let deep_field = format!(r#"{{"type":"call","to":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(parse(&deep_field, Dialect::V1), Err(RequestError { code: ErrorCode::BadJson, .. })));
        let tricky = r#"{"type":"offer","to":"b","sdp":{"sdp":"[[[[[[[[[[[[[[[[[[[[[[\\\"{{{{{{{{{{{{{{{{{{"}}"#;
        assert!(parse(tricky, Dialect::V1).is_ok(), "brackets inside strings do not count");
    }

    /// The depth check against a plain byte-by-byte walk of the same text, on payloads mixing nesting, strings with
    /// brackets and escaped quotes and backslashes, at every depth limit around the real depth.
    #[test]
    fn depth_check_agrees_with_a_byte_by_byte_walk() {
        fn walk(raw: &str) -> usize {
            let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
            for byte in raw.bytes() {
                if in_string {
                    match (escaped, byte) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                } else {
                    match byte {
                        b'"' => in_string = true,
                        b'[' | b'{' => {
                            depth += 1;
                            deepest = deepest.max(depth);
                        }
                        b']' | b'}' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            deepest
        }
        let strings = [r#""""#, r#""[{""#, r#""a\\""#, r#""\"]]{""#, r#""\\\"[""#, r#""v=0\r\na=x""#];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            let mut text = String::new();
            let mut open = Vec::new();
            for _ in 0..40 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                match seed % 5 {
                    0 => {
                        text.push('[');
                        open.push(']');
                    }
                    1 => {
                        text.push_str(r#"{"k":"#);
                        open.push('}');
                    }
                    2 => text.push_str(strings[(seed >> 8) as usize % strings.len()]),
                    3 => text.push_str("1,"),
                    _ => {
                        if let Some(close) = open.pop() {
                            text.push(close);
                        }
                    }
                }
            }
            let deepest = walk(&text);
            for max in deepest.saturating_sub(2)..deepest + 2 {
                assert_eq!(depth_within(&text, max), deepest <= max, "max {max}: {text}");
            }
        }
    }

    #[test]
    fn credentials_parse_but_never_print() {
        let parsed = parse(r#"{"type":"login","token":"e30.e30.c2ln"}"#, Dialect::V1).unwrap();
        let printed = format!("{parsed:?}");
        assert!(
            matches!(parsed.request, Request::Login { name: None, token: Some(ref t), .. } if t.expose() == "e30.e30.c2ln")
        );
        assert!(!printed.contains("e30"), "{printed}");
        let parsed = parse(r#"{"type":"join","room":"r","password":"hunter2"}"#, Dialect::V1).unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"));
        assert!(matches!(parsed.request, Request::Join { password: Some(ref p), .. } if p.expose() == "hunter2"));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let parsed = parse(r#"{"type":"call","to":"b\u006fb"}"#, Dialect::V1).unwrap();
        assert!(matches!(parsed.request, Request::Call { to } if to == "bob"));
    }
}
