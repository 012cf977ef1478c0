//! What operators can see and do: read-only, paged views of users, rooms and calls; ending a user's session; asking
//! every client to go away before a shutdown.
//!
//! The views page through the ordered key sets the core keeps beside its maps, so a page costs O(log n + limit)
//! under the server's lock whatever the number of users, and every list inside an item is bounded by a limit of the
//! core (rooms per user, members per room).

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use switchboard_proto::{
    close_code,
    event::{CallState, GoawayReason, LeaveReason},
    names::name_key,
    Dialect, OutEvent, UserStatus,
};

use crate::signaling::{ConnId, Signaling};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// The key to pass as `after` for the next page; None on the last page.
    pub next: Option<Arc<str>>,
}

/// The call a user is in, from that user's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCall {
    /// The call's id.
    pub call_id: Arc<str>,
    /// The other party's name.
    pub peer: Arc<str>,
    /// Whether this user placed the call.
    pub caller: bool,
    /// Ringing or active.
    pub state: CallState,
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The name as the user typed it (NFC).
    pub name: Arc<str>,
    /// The case-folded key: the paging cursor.
    pub key: Arc<str>,
    /// Which protocol the user speaks.
    pub dialect: Dialect,
    /// When the session was created.
    pub since: Instant,
    /// False while the session waits for a resume.
    pub connected: bool,
    /// Idle or in a call.
    pub status: UserStatus,
    /// The call the user is in, if any.
    pub call: Option<UserCall>,
    /// The rooms the user is in (names as created), in join order.
    pub rooms: Vec<Arc<str>>,
}

/// A room with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name as created.
    pub name: Arc<str>,
    /// The case-folded key: the paging cursor.
    pub key: Arc<str>,
    /// Members' names in join order.
    pub members: Vec<Arc<str>>,
}

/// A ringing or active 1:1 call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The call's id: the paging cursor.
    pub call_id: Arc<str>,
    /// Who placed it.
    pub caller: Arc<str>,
    /// Who was called.
    pub callee: Arc<str>,
    /// Ringing or active.
    pub state: CallState,
    /// When it was placed.
    pub since: Instant,
}

/// The keys of `set` after `after`, at most `limit` of them, and the cursor of the next page.
fn page_keys(set: &std::collections::BTreeSet<Arc<str>>, after: Option<&str>, limit: usize) -> Page<Arc<str>> {
    let start = match after {
        Some(after) => Bound::Excluded(after),
        None => Bound::Unbounded,
    };
    let mut range = set.range::<str, _>((start, Bound::Unbounded));
    let items: Vec<Arc<str>> = range.by_ref().take(limit).cloned().collect();
    let next = if range.next().is_some() { items.last().cloned() } else { None };
    Page { items, next }
}

impl Signaling {
    /// Logged-in users (including those waiting for a resume) ordered by case-folded name, after the key `after`.
    pub fn users(&self, after: Option<&str>, limit: usize) -> Page<UserInfo> {
        let keys = page_keys(&self.ordered_names, after, limit);
        Page { items: keys.items.iter().filter_map(|key| self.user_by_key(key)).collect(), next: keys.next }
    }

    /// One user, by name (any case).
    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.user_by_key(name_key(name).as_ref())
    }

    fn user_by_key(&self, key: &str) -> Option<UserInfo> {
        let session_id = *self.names.get(key)?;
        let session = self.sessions.get(&session_id)?;
        let call = session.call.as_ref().and_then(|call_id| {
            let call = self.calls.get(call_id)?;
            let caller = call.caller.is(session_id);
            // In cluster mode the peer may be a user of another node: its name is all this node knows of it.
            let peer = self.party_name(call.other(session_id))?;
            Some(UserCall {
                call_id: call_id.clone(),
                peer,
                caller,
                state: if call.active { CallState::Active } else { CallState::Ringing },
            })
        });
        Some(UserInfo {
            name: session.name.clone(),
            key: session.key.clone(),
            dialect: session.dialect,
            since: session.since,
            connected: session.conn.is_some(),
            status: session.status,
            call,
            rooms: session.rooms.iter().filter_map(|key| self.rooms.get(key).map(|room| room.name.clone())).collect(),
        })
    }

    /// Rooms ordered by case-folded name, after the key `after`.
    pub fn rooms_page(&self, after: Option<&str>, limit: usize) -> Page<RoomInfo> {
        let keys = page_keys(&self.ordered_rooms, after, limit);
        let items = keys
            .items
            .iter()
            .filter_map(|key| {
                let room = self.rooms.get(key)?;
                Some(RoomInfo {
                    name: room.name.clone(),
                    key: key.clone(),
                    members: room.members.iter().filter_map(|m| self.member_name(m)).collect(),
                })
            })
            .collect();
        Page { items, next: keys.next }
    }

    /// Calls ordered by id, after the id `after`.
    pub fn calls_page(&self, after: Option<&str>, limit: usize) -> Page<CallInfo> {
        let keys = page_keys(&self.ordered_calls, after, limit);
        let items = keys
            .items
            .iter()
            .filter_map(|call_id| {
                let call = self.calls.get(call_id)?;
                Some(CallInfo {
                    call_id: call_id.clone(),
                    caller: self.party_name(&call.caller)?,
                    callee: self.party_name(&call.callee)?,
                    state: if call.active { CallState::Active } else { CallState::Ringing },
                    since: call.since,
                })
            })
            .collect();
        Page { items, next: keys.next }
    }

    /// Ends the session of `name` at once (no resume): its connection is closed with 4005, the others see it leave
    /// (presence `left`, `member-left` and `hangup` with reason `disconnected`). False if nobody has that name.
    pub fn disconnect_user(&mut self, now: Instant, name: &str) -> bool {
        let Some(&session) = self.names.get(name_key(name).as_ref()) else {
            return false;
        };
        let conn = self.sessions.get(&session).and_then(|s| s.conn);
        self.end_session(now, session, LeaveReason::Disconnected);
        if let Some(conn) = conn {
            self.conns.remove(&conn);
            self.out.push_back(crate::Output::Close {
                conn,
                code: close_code::DISCONNECTED_BY_ADMIN,
                reason: "disconnected by an administrator",
            });
        }
        self.counters.admin_disconnects += 1;
        true
    }

    /// The server is about to shut down: every v1 connection gets `goaway` with a reconnect hint spread at random
    /// over `[spread / 10, spread]` (so that a crowd does not come back at the same instant), and stays open so that
    /// messages in flight still arrive. Tutorial connections, which have no such message, and connections that have
    /// not spoken yet are closed with 1001 at once.
    pub fn goaway(&mut self, now: Instant, spread: Duration) {
        let conns: Vec<(ConnId, Option<Dialect>)> = self.conns.iter().map(|(id, c)| (*id, c.dialect())).collect();
        let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
        for (conn, dialect) in conns {
            if dialect == Some(Dialect::V1) {
                let reconnect_after_ms = self.rng.random_range(spread_ms / 10..=spread_ms);
                let event = OutEvent::Goaway { reason: GoawayReason::Shutdown, reconnect_after_ms };
                self.send(conn, event.to_json());
            } else {
                // Through the normal disconnect path first, so that a tutorial session ends with its connection.
                self.handle_input(now, crate::Input::Disconnected(conn));
                self.out.push_back(crate::Output::Close {
                    conn,
                    code: close_code::GOING_AWAY,
                    reason: "server shutting down",
                });
            }
        }
    }
}
