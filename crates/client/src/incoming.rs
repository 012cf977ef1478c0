//! One frame received from the server.

use serde::Deserialize;
use serde_json::Value;
use switchboard_proto::{Dialect, ErrorCode, Event};

use crate::{OwnedEvent, OwnedTutorialEvent};

/// A frame received from the server, or the end of the connection.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A text frame that parsed as a protocol v1 event; `raw` is the JSON as received.
    Event {
        /// The typed event.
        event: Box<OwnedEvent>,
        /// The frame's JSON.
        raw: Value,
    },
    /// A text frame that parsed as a tutorial-dialect event; `raw` is the JSON as received.
    Tutorial {
        /// The typed event.
        event: Box<OwnedTutorialEvent>,
        /// The frame's JSON.
        raw: Value,
    },
    /// A text frame holding JSON that is not a known event of either dialect.
    Json(Value),
    /// A text frame read in light mode ([`crate::Client::set_light`]): only `type` and `id` were looked at.
    Unparsed {
        /// The JSON `type`, if the frame had a string one.
        kind: Option<String>,
        /// The JSON `id`, if any.
        id: Option<Value>,
        /// The whole frame.
        text: String,
    },
    /// A text frame that is not JSON at all.
    Text(String),
    /// A binary frame (the server should never send one).
    Binary(Vec<u8>),
    /// The connection ended: by a close frame (`code` set) or without one (`code` is `None`).
    Close {
        /// The close code, if the server sent a close frame with one.
        code: Option<u16>,
        /// The close reason (or a description of how the connection ended).
        reason: String,
    },
}

impl Incoming {
    /// Parses a text frame, trying the `preferred` dialect's events first, then the other's.
    pub fn from_text(text: &str, preferred: Dialect) -> Self {
        let Ok(raw) = serde_json::from_str::<Value>(text) else {
            return Self::Text(text.to_owned());
        };
        // Deserialising from a borrowed Value copies only what the event keeps.
        let as_v1 = |raw: &Value| OwnedEvent::deserialize(raw).ok();
        let as_tutorial = |raw: &Value| OwnedTutorialEvent::deserialize(raw).ok();
        match preferred {
            Dialect::V1 => {
                if let Some(event) = as_v1(&raw) {
                    return Self::Event { event: Box::new(event), raw };
                }
                if let Some(event) = as_tutorial(&raw) {
                    return Self::Tutorial { event: Box::new(event), raw };
                }
            }
            Dialect::Tutorial => {
                if let Some(event) = as_tutorial(&raw) {
                    return Self::Tutorial { event: Box::new(event), raw };
                }
                if let Some(event) = as_v1(&raw) {
                    return Self::Event { event: Box::new(event), raw };
                }
            }
        }
        Self::Json(raw)
    }

    /// Reads only the `type` and `id` of a text frame, skipping the rest without building values (light mode).
    pub fn from_text_light(text: &str) -> Self {
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "type")]
            kind: Option<String>,
            id: Option<Value>,
        }
        match serde_json::from_str::<Head>(text) {
            Ok(head) => Self::Unparsed { kind: head.kind, id: head.id, text: text.to_owned() },
            Err(_) => Self::Text(text.to_owned()),
        }
    }

    /// Parses an [`Incoming::Unparsed`] frame fully (other frames are returned as they are).
    pub fn parsed(self, preferred: Dialect) -> Self {
        match self {
            Self::Unparsed { text, .. } => Self::from_text(&text, preferred),
            other => other,
        }
    }

    /// The frame's JSON, for text frames that held JSON (not for [`Incoming::Unparsed`] ones).
    pub fn raw(&self) -> Option<&Value> {
        match self {
            Self::Event { raw, .. } | Self::Tutorial { raw, .. } | Self::Json(raw) => Some(raw),
            _ => None,
        }
    }

    /// The frame's JSON, moved out (`null` for frames that held no JSON).
    pub fn into_raw(self) -> Value {
        match self {
            Self::Event { raw, .. } | Self::Tutorial { raw, .. } | Self::Json(raw) => raw,
            Self::Unparsed { text, .. } => serde_json::from_str(&text).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The frame's JSON as an owned value: a copy of [`Incoming::raw`], or for [`Incoming::Unparsed`] frames the
    /// parsed text (`null` for frames that held no JSON).
    pub fn to_raw(&self) -> Value {
        match self {
            Self::Unparsed { text, .. } => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.raw().cloned().unwrap_or(Value::Null),
        }
    }

    /// The JSON `type` field, if any.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Unparsed { kind, .. } => kind.as_deref(),
            _ => self.raw().and_then(|raw| raw.get("type")).and_then(Value::as_str),
        }
    }

    /// The JSON `id` field, if any.
    pub fn id(&self) -> Option<&Value> {
        match self {
            Self::Unparsed { id, .. } => id.as_ref(),
            _ => self.raw().and_then(|raw| raw.get("id")),
        }
    }

    /// The typed v1 event, if this is one.
    pub fn event(&self) -> Option<&OwnedEvent> {
        match self {
            Self::Event { event, .. } => Some(event),
            _ => None,
        }
    }

    /// The typed tutorial event, if this is one.
    pub fn tutorial(&self) -> Option<&OwnedTutorialEvent> {
        match self {
            Self::Tutorial { event, .. } => Some(event),
            _ => None,
        }
    }

    /// The error code, if this is a v1 `error` event.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self.event() {
            Some(Event::Error { code, .. }) => Some(*code),
            _ => None,
        }
    }

    /// Whether this is the end of the connection.
    pub fn is_close(&self) -> bool {
        matches!(self, Self::Close { .. })
    }

    /// The close code, if this is a close with a code.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Close { code, .. } => *code,
            _ => None,
        }
    }

    /// A short description for error messages and logs (JSON cut after 300 characters).
    pub fn describe(&self) -> String {
        let text = match self {
            Self::Event { raw, .. } | Self::Tutorial { raw, .. } | Self::Json(raw) => raw.to_string(),
            Self::Unparsed { text, .. } => text.clone(),
            Self::Text(text) => format!("non-JSON text {text:?}"),
            Self::Binary(bytes) => format!("binary frame of {} bytes", bytes.len()),
            Self::Close { code, reason } => format!("close (code {code:?}, reason {reason:?})"),
        };
        if text.chars().count() > 300 {
            let cut: String = text.chars().take(300).collect();
            format!("{cut}...")
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TutorialEvent;

    #[test]
    fn parses_the_preferred_dialect_first() {
        let v1 = r#"{"type":"offer","from":"alice","sdp":{"type":"offer","sdp":"v=0"}}"#;
        let tutorial = r#"{"type":"offer","name":"alice","TargetUserName":"bob","sdp":{"type":"offer"}}"#;
        assert!(
            matches!(Incoming::from_text(v1, Dialect::Tutorial).event(), Some(Event::Offer { from, .. }) if from == "alice")
        );
        assert!(matches!(
            Incoming::from_text(tutorial, Dialect::V1).tutorial(),
            Some(TutorialEvent::Offer { name, .. }) if name == "alice"
        ));
        let error = Incoming::from_text(r#"{"type":"error","id":3,"code":"busy","message":"m"}"#, Dialect::Tutorial);
        assert_eq!(error.error_code(), Some(ErrorCode::Busy));
        assert_eq!(error.id(), Some(&serde_json::json!(3)));
        assert!(matches!(Incoming::from_text(r#"{"type":"dance"}"#, Dialect::V1), Incoming::Json(_)));
        assert!(matches!(Incoming::from_text("nope", Dialect::V1), Incoming::Text(_)));
    }

    #[test]
    fn light_parsing_reads_type_and_id_only() {
        let text = r#"{"type":"users","id":"u1","users":[{"name":"a","status":"idle"}]}"#;
        let light = Incoming::from_text_light(text);
        assert_eq!((light.kind(), light.id()), (Some("users"), Some(&serde_json::json!("u1"))));
        assert!(light.raw().is_none());
        assert_eq!(light.to_raw()["users"][0]["name"], "a");
        assert!(matches!(light.parsed(Dialect::V1).event(), Some(Event::Users { users, .. }) if users.len() == 1));
    }
}
