//! One frame received from the server.

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
        let as_v1 = |raw: &Value| serde_json::from_value::<OwnedEvent>(raw.clone()).ok();
        let as_tutorial = |raw: &Value| serde_json::from_value::<OwnedTutorialEvent>(raw.clone()).ok();
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

    /// The frame's JSON, for text frames that held JSON.
    pub fn raw(&self) -> Option<&Value> {
        match self {
            Self::Event { raw, .. } | Self::Tutorial { raw, .. } | Self::Json(raw) => Some(raw),
            _ => None,
        }
    }

    /// The JSON `type` field, if any.
    pub fn kind(&self) -> Option<&str> {
        self.raw().and_then(|raw| raw.get("type")).and_then(Value::as_str)
    }

    /// The JSON `id` field, if any.
    pub fn id(&self) -> Option<&Value> {
        self.raw().and_then(|raw| raw.get("id"))
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
}
