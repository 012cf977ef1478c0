//! A client of the classic tutorial dialect.

use std::ops::{Deref, DerefMut};

use serde_json::{json, Value};
use switchboard_proto::tutorial::TutorialEvent;
use switchboard_proto::{Dialect, Event};

use crate::{Client, Error, Incoming, Result};

/// A connection that speaks the tutorial dialect (`shared/seed-protocol.md`) exactly as the tutorial page does.
///
/// It dereferences to [`Client`] for sending, receiving and waiting; received frames are parsed as tutorial events
/// first ([`Incoming::Tutorial`]), then as v1 events (the server reports errors with the v1 `error` object).
#[derive(Debug)]
pub struct TutorialClient {
    inner: Client,
}

impl TutorialClient {
    /// Opens a WebSocket to `url`; tutorial pages use the root path (`ws://host:port`).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self { inner: Client::connect_dialect(url, Dialect::Tutorial).await? })
    }

    /// The underlying client.
    pub fn into_inner(self) -> Client {
        self.inner
    }

    /// Sends `{"type":"Login","UserName":name}` and returns the first `RenderUserList`; an `error` event instead
    /// becomes [`Error::Server`].
    pub async fn login(&mut self, name: &str) -> Result<Vec<String>> {
        self.inner.send_json(&json!({"type": "Login", "UserName": name})).await?;
        let reply = self
            .inner
            .expect("RenderUserList or error", |incoming| match incoming {
                Incoming::Tutorial { event, .. } if matches!(event.as_ref(), TutorialEvent::RenderUserList { .. }) => {
                    Some(incoming.clone())
                }
                Incoming::Event { event, .. } if matches!(event.as_ref(), Event::Error { .. }) => {
                    Some(incoming.clone())
                }
                _ => None,
            })
            .await?;
        match (&reply, reply.event()) {
            (_, Some(Event::Error { code, message, .. })) => Err(Error::Server {
                code: *code,
                message: message.to_string(),
                raw: reply.raw().cloned().unwrap_or(Value::Null),
            }),
            (Incoming::Tutorial { event, .. }, _) => match event.as_ref() {
                TutorialEvent::RenderUserList { userlist } => Ok(userlist.iter().map(|n| n.to_string()).collect()),
                _ => Err(Error::Unexpected { got: reply.describe(), waiting_for: "RenderUserList".into() }),
            },
            _ => Err(Error::Unexpected { got: reply.describe(), waiting_for: "RenderUserList".into() }),
        }
    }

    /// Sends an `offer` as the tutorial page does: `name` is what the page claims to be, `target` the callee.
    pub async fn offer(&mut self, name: &str, target: &str, sdp: Value) -> Result<()> {
        self.inner.send_json(&json!({"type": "offer", "name": name, "TargetUserName": target, "sdp": sdp})).await
    }

    /// Sends an `answer` as the tutorial page does.
    pub async fn answer(&mut self, name: &str, target: &str, sdp: Value) -> Result<()> {
        self.inner.send_json(&json!({"type": "answer", "name": name, "TargetUserName": target, "sdp": sdp})).await
    }

    /// Sends one `ICE` candidate to `target`.
    pub async fn ice(&mut self, target: &str, candidate: Value) -> Result<()> {
        self.inner.send_json(&json!({"type": "ICE", "candidate": candidate, "TargetUserName": target})).await
    }

    /// Waits for the next `RenderUserList` and returns its names.
    pub async fn expect_user_list(&mut self) -> Result<Vec<String>> {
        self.expect_user_list_where(|_| true).await
    }

    /// Waits for a `RenderUserList` whose names satisfy `pick`, dropping other frames.
    pub async fn expect_user_list_where(&mut self, mut pick: impl FnMut(&[String]) -> bool) -> Result<Vec<String>> {
        self.inner
            .expect("a matching RenderUserList", |incoming| match incoming.tutorial() {
                Some(TutorialEvent::RenderUserList { userlist }) => {
                    let names: Vec<String> = userlist.iter().map(|n| n.to_string()).collect();
                    pick(&names).then_some(names)
                }
                _ => None,
            })
            .await
    }
}

impl Deref for TutorialClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.inner
    }
}

impl DerefMut for TutorialClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.inner
    }
}
