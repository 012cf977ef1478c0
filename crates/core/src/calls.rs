//! 1:1 call control: ring, accept, reject, cancel, hang up, ring timeout.
//!
//! In cluster mode a call between users of two nodes has a half on each node, kept in step by call messages: the
//! caller's node invites, the callee's node decides (busy, ring, or accept for a tutorial page) and answers; either
//! side's end reaches the other as `CallEnded`. The caller's node owns the ring timer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_proto::{event::HangupReason, names::name_key, Dialect, ErrorCode, OutEvent, UserStatus};

use crate::cluster::{Command, InviteReply, Message, NodeId};
use crate::signaling::{ConnId, Origin, SessionId, Signaling};
use crate::timers::Timer;

/// One side of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Party {
    /// A session of this node.
    Local(SessionId),
    /// A user of another node.
    Remote {
        /// Its node.
        node: NodeId,
        /// Its name.
        name: Arc<str>,
    },
}

impl Party {
    pub(crate) fn is(&self, session: SessionId) -> bool {
        *self == Party::Local(session)
    }

    pub(crate) fn local(&self) -> Option<SessionId> {
        match self {
            Party::Local(session) => Some(*session),
            Party::Remote { .. } => None,
        }
    }
}

/// A call that rings or is active.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) caller: Party,
    pub(crate) callee: Party,
    pub(crate) active: bool,
    pub(crate) ring_deadline: Instant,
    /// When it was placed.
    pub(crate) since: Instant,
    /// Caller's side of a call to another node, until the callee's node answers the invitation: the `call` request's
    /// connection and id.
    dialing: Option<(ConnId, Option<Box<RawValue>>)>,
}

impl Call {
    pub(crate) fn new(caller: Party, callee: Party, active: bool, ring_deadline: Instant, since: Instant) -> Self {
        Self { caller, callee, active, ring_deadline, since, dialing: None }
    }

    fn has(&self, session: SessionId) -> bool {
        self.caller.is(session) || self.callee.is(session)
    }

    /// The party that is not `session`.
    pub(crate) fn other(&self, session: SessionId) -> &Party {
        if self.caller.is(session) {
            &self.callee
        } else {
            &self.caller
        }
    }

    /// The remote party, if any.
    pub(crate) fn remote(&self) -> Option<(&NodeId, &Arc<str>)> {
        [&self.caller, &self.callee].into_iter().find_map(|party| match party {
            Party::Remote { node, name } => Some((node, name)),
            Party::Local(_) => None,
        })
    }
}

impl Signaling {
    /// Adds a call, keeping the admin view's index and the gauge of active calls in step with the map.
    pub(crate) fn insert_call(&mut self, call_id: Arc<str>, call: Call) {
        if call.active {
            self.counters.active_calls += 1;
        }
        self.ordered_calls.insert(call_id.clone());
        if let Some(old) = self.calls.insert(call_id, call) {
            if old.active {
                self.counters.active_calls = self.counters.active_calls.saturating_sub(1);
            }
        }
    }

    /// Removes a call, keeping the admin view's index and the gauge of active calls in step with the map.
    pub(crate) fn remove_call(&mut self, call_id: &str) -> Option<Call> {
        let call = self.calls.remove(call_id)?;
        self.ordered_calls.remove(call_id);
        if call.active {
            self.counters.active_calls = self.counters.active_calls.saturating_sub(1);
        }
        Some(call)
    }

    /// The shown name of a party.
    pub(crate) fn party_name(&self, party: &Party) -> Option<Arc<str>> {
        match party {
            Party::Local(session) => self.sessions.get(session).map(|s| s.name.clone()),
            Party::Remote { name, .. } => Some(name.clone()),
        }
    }

    pub(crate) fn call(&mut self, now: Instant, conn: ConnId, session: SessionId, id: Option<&RawValue>, to: &str) {
        let Some(callee) = self.session_by_name(to) else {
            if let Some(node) = self.remote_node_of(to) {
                return self.call_remote(now, conn, session, id, node, to);
            }
            return self.unknown_peer(now, conn, id, to);
        };
        if callee == session {
            return self.fail(now, conn, id, ErrorCode::BadRequest, "cannot call yourself".into());
        }
        if self.sessions.get(&session).is_some_and(|s| s.call.is_some()) {
            return self.fail(now, conn, id, ErrorCode::AlreadyInCall, "you are in a call already".into());
        }
        let Some(callee_state) = self.sessions.get(&callee) else {
            return;
        };
        if let (Dialect::Tutorial, Some(current)) = (callee_state.dialect, callee_state.call.clone()) {
            // A tutorial page cannot hang up, and it answers every new offer by dropping its current call: so a
            // tutorial user is never busy, and a new call replaces the current one, as the page itself would.
            self.end_call(now, &current, callee, HangupReason::Hangup);
        }
        let Some(callee_state) = self.sessions.get(&callee) else {
            return;
        };
        if callee_state.call.is_some() {
            let message = format!("{} is in another call", callee_state.name);
            return self.fail(now, conn, id, ErrorCode::Busy, message.into());
        }
        let (callee_name, callee_dialect) = (callee_state.name.clone(), callee_state.dialect);
        let Some(caller_name) = self.sessions.get(&session).map(|s| s.name.clone()) else {
            return;
        };
        let call_id = self.random_id();
        let ring_deadline = now + self.config.ring_timeout;
        // Tutorial pages answer every offer by themselves and cannot answer a ring: accept on their behalf.
        let active = callee_dialect == Dialect::Tutorial;
        let call = Call::new(Party::Local(session), Party::Local(callee), active, ring_deadline, now);
        self.insert_call(call_id.clone(), call);
        self.counters.calls_started += 1;
        for party in [session, callee] {
            if let Some(state) = self.sessions.get_mut(&party) {
                state.call = Some(call_id.clone());
            }
            self.set_status(now, party, UserStatus::InCall);
        }
        let ringing = OutEvent::Ringing { id, call_id: call_id.as_ref().into(), to: callee_name.as_ref().into() };
        self.send(conn, ringing.to_json());
        if active {
            let accepted = OutEvent::Accepted { call_id: call_id.as_ref().into(), from: callee_name.as_ref().into() };
            self.send(conn, accepted.to_json());
        } else {
            let ring = OutEvent::Ring { call_id: call_id.as_ref().into(), from: caller_name.as_ref().into() };
            self.deliver(callee, Bytes::from(ring.to_json()), Origin::Nobody);
            self.timers.at(ring_deadline, Timer::Ring(call_id));
        }
    }

    /// A call to a user of another node: the caller is `in-call` at once, and hears `ringing` (or `busy`) once the
    /// callee's node has answered the invitation.
    fn call_remote(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        node: NodeId,
        to: &str,
    ) {
        if self.sessions.get(&session).is_some_and(|s| s.call.is_some()) {
            return self.fail(now, conn, id, ErrorCode::AlreadyInCall, "you are in a call already".into());
        }
        if !self.cluster_up() {
            return self.cluster_unavailable(now, conn, id);
        }
        let key = name_key(to);
        let Some(callee_name) = self.remote_name(&key) else {
            return self.unknown_peer(now, conn, id, to);
        };
        let Some(caller_name) = self.sessions.get(&session).map(|s| s.name.clone()) else {
            return;
        };
        let call_id = self.random_id();
        let ring_deadline = now + self.config.ring_timeout;
        let mut call = Call::new(
            Party::Local(session),
            Party::Remote { node: node.clone(), name: callee_name },
            false,
            ring_deadline,
            now,
        );
        call.dialing = Some((conn, id.map(RawValue::to_owned)));
        self.insert_call(call_id.clone(), call);
        self.counters.calls_started += 1;
        if let Some(state) = self.sessions.get_mut(&session) {
            state.call = Some(call_id.clone());
        }
        self.set_status(now, session, UserStatus::InCall);
        self.timers.at(ring_deadline, Timer::Ring(call_id.clone()));
        let invite = Message::Invite { call: call_id.to_string(), from: caller_name.to_string(), to: key.into_owned() };
        self.command(Command::Send { node, message: invite });
    }

    /// The callee's node: a user of `from` calls a user of this node.
    pub(crate) fn remote_invite(&mut self, now: Instant, from: &NodeId, call: String, caller: String, to: &str) {
        let reply = self.take_invite(now, from, &call, caller, to);
        self.command(Command::Send { node: from.clone(), message: Message::InviteReply { call, reply } });
    }

    fn take_invite(&mut self, now: Instant, from: &NodeId, call: &str, caller: String, to: &str) -> InviteReply {
        let Some(&callee) = self.names.get(to) else {
            return InviteReply::Unknown;
        };
        let Some(state) = self.sessions.get(&callee) else {
            return InviteReply::Unknown;
        };
        if let (Dialect::Tutorial, Some(current)) = (state.dialect, state.call.clone()) {
            self.end_call(now, &current, callee, HangupReason::Hangup);
        }
        let Some(state) = self.sessions.get(&callee) else {
            return InviteReply::Unknown;
        };
        if state.call.is_some() || self.calls.contains_key(call) {
            return InviteReply::Busy;
        }
        let active = state.dialect == Dialect::Tutorial;
        let call_id: Arc<str> = Arc::from(call);
        let caller_party = Party::Remote { node: from.clone(), name: Arc::from(caller.as_str()) };
        // The caller's node keeps the ring timer; this deadline only matters if this half is handed on (resume).
        let deadline = now + self.config.ring_timeout;
        self.insert_call(call_id.clone(), Call::new(caller_party, Party::Local(callee), active, deadline, now));
        if let Some(state) = self.sessions.get_mut(&callee) {
            state.call = Some(call_id.clone());
        }
        self.set_status(now, callee, UserStatus::InCall);
        if active {
            return InviteReply::Accepted;
        }
        let ring = OutEvent::Ring { call_id: call.into(), from: caller.into() };
        self.deliver(callee, Bytes::from(ring.to_json()), Origin::Nobody);
        InviteReply::Ringing
    }

    /// The caller's node: the callee's node answered the invitation.
    pub(crate) fn remote_invite_reply(&mut self, now: Instant, from: &NodeId, call_id: &str, reply: InviteReply) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        let (Party::Local(caller), Party::Remote { node, name }) = (&call.caller, &call.callee) else { return };
        if node != from {
            return;
        }
        let (caller, callee_name) = (*caller, name.clone());
        let Some((conn, id)) = call.dialing.take() else { return };
        let id = id.as_deref();
        let conn = self.sessions.get(&caller).and_then(|s| s.conn).filter(|&c| c == conn);
        match reply {
            InviteReply::Ringing | InviteReply::Accepted => {
                let ringing = OutEvent::Ringing { id, call_id: call_id.into(), to: callee_name.as_ref().into() };
                self.deliver(caller, Bytes::from(ringing.to_json()), Origin::Nobody);
                if reply == InviteReply::Accepted {
                    if let Some(call) = self.calls.get_mut(call_id).filter(|c| !c.active) {
                        call.active = true;
                        self.counters.active_calls += 1;
                    }
                    let accepted = OutEvent::Accepted { call_id: call_id.into(), from: callee_name.as_ref().into() };
                    self.deliver(caller, Bytes::from(accepted.to_json()), Origin::Nobody);
                }
            }
            InviteReply::Busy | InviteReply::Unknown => {
                self.remove_call(call_id);
                self.clear_call(now, caller);
                let Some(conn) = conn else { return };
                if reply == InviteReply::Busy {
                    let message = format!("{callee_name} is in another call");
                    self.fail(now, conn, id, ErrorCode::Busy, message.into());
                } else {
                    self.unknown_peer(now, conn, id, &callee_name);
                }
            }
        }
    }

    /// The caller's node: the callee (on `from`) accepted.
    pub(crate) fn remote_call_accepted(&mut self, from: &NodeId, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        let (Party::Local(caller), Party::Remote { node, name }) = (&call.caller, &call.callee) else { return };
        if node != from || call.active {
            return;
        }
        call.active = true;
        let (caller, name) = (*caller, name.clone());
        self.counters.active_calls += 1;
        let accepted = OutEvent::Accepted { call_id: call_id.into(), from: name.as_ref().into() };
        self.deliver(caller, Bytes::from(accepted.to_json()), Origin::Nobody);
    }

    /// The other half (on `from`) ended the call.
    pub(crate) fn remote_call_ended(&mut self, now: Instant, from: &NodeId, call_id: &str, reason: HangupReason) {
        let Some(call) = self.calls.get(call_id) else { return };
        if call.remote().is_none_or(|(node, _)| node != from) {
            return;
        }
        self.end_call_from_remote(now, call_id, reason);
    }

    /// The party of a call moved from `from` to `node` (it resumed there).
    pub(crate) fn remote_call_moved(&mut self, from: &NodeId, call_id: &str, node: NodeId) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        for party in [&mut call.caller, &mut call.callee] {
            if let Party::Remote { node: at, .. } = party {
                if at == from {
                    *at = node.clone();
                }
            }
        }
    }

    /// Ends the call `call_id` because its remote party is gone or hung up: the local party is told.
    fn end_call_from_remote(&mut self, now: Instant, call_id: &str, reason: HangupReason) {
        let Some(call) = self.remove_call(call_id) else { return };
        let Some((_, remote_name)) = call.remote() else { return };
        let remote_name = remote_name.clone();
        let Some(local) = call.caller.local().or(call.callee.local()) else { return };
        self.clear_call(now, local);
        // No-answer names the callee as its sender, on both sides.
        let from = if reason == HangupReason::NoAnswer && call.callee.is(local) {
            self.sessions.get(&local).map_or(remote_name.clone(), |s| s.name.clone())
        } else {
            remote_name
        };
        if let Some((conn, id)) = call.dialing {
            // Still waiting for the callee's node: the `call` request fails instead.
            if self.sessions.get(&local).and_then(|s| s.conn) == Some(conn) {
                let message = format!("{from} is not reachable");
                self.fail(now, conn, id.as_deref(), ErrorCode::Undeliverable, message.into());
            }
            return;
        }
        if self.sessions.get(&local).is_some_and(|s| s.dialect == Dialect::V1) {
            let hangup = OutEvent::Hangup { call_id: call_id.into(), from: from.as_ref().into(), reason };
            self.deliver(local, Bytes::from(hangup.to_json()), Origin::Nobody);
        }
    }

    /// A node is gone: calls with its users end, as if they had disconnected.
    pub(crate) fn calls_lost_node(&mut self, now: Instant, node: &NodeId) {
        let lost: Vec<Arc<str>> = self
            .calls
            .iter()
            .filter(|(_, call)| call.remote().is_some_and(|(at, _)| at == node))
            .map(|(id, _)| id.clone())
            .collect();
        for call_id in lost {
            self.end_call_from_remote(now, &call_id, HangupReason::Disconnected);
        }
    }

    /// The call `call_id` if `session` takes part in it.
    fn own_call(&self, session: SessionId, call_id: &str) -> Option<(Arc<str>, &Call)> {
        let (key, call) = self.calls.get_key_value(call_id)?;
        call.has(session).then(|| (key.clone(), call))
    }

    /// The call `call_id` if it still rings and `session` placed it (`as_caller`) or is being called.
    fn ringing_call(&self, session: SessionId, call_id: &str, as_caller: bool) -> Option<(Arc<str>, &Call)> {
        self.own_call(session, call_id).filter(|(_, c)| !c.active && c.caller.is(session) == as_caller)
    }

    fn unknown_call(&mut self, now: Instant, conn: ConnId, id: Option<&RawValue>, call_id: &str, state: &str) {
        let shown: String = call_id.chars().take(32).collect();
        let message = format!("no {state}call {shown:?} of yours");
        self.fail(now, conn, id, ErrorCode::UnknownCall, message.into());
    }

    fn ack(&mut self, conn: ConnId, id: Option<&RawValue>) {
        if let Some(id) = id {
            self.send(conn, OutEvent::Ack { id }.to_json());
        }
    }

    pub(crate) fn accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        call_id: &str,
    ) {
        let Some((key, caller)) =
            self.ringing_call(session, call_id, false).map(|(key, call)| (key, call.caller.clone()))
        else {
            return self.unknown_call(now, conn, id, call_id, "ringing incoming ");
        };
        if let Some(call) = self.calls.get_mut(&key) {
            call.active = true;
            self.counters.active_calls += 1;
            self.counters.call_setup.observe(now.saturating_duration_since(call.since));
        }
        self.ack(conn, id);
        match caller {
            Party::Local(caller) => {
                let Some(callee_name) = self.sessions.get(&session).map(|s| s.name.clone()) else {
                    return;
                };
                let accepted = OutEvent::Accepted { call_id: key.as_ref().into(), from: callee_name.as_ref().into() };
                self.deliver(caller, Bytes::from(accepted.to_json()), Origin::Nobody);
            }
            Party::Remote { node, .. } => {
                self.command(Command::Send { node, message: Message::CallAccepted { call: key.to_string() } });
            }
        }
    }

    /// `reject` by the callee or `cancel` by the caller of a call that still rings.
    pub(crate) fn end_ringing(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        call_id: &str,
        as_caller: bool,
    ) {
        let Some((key, _)) = self.ringing_call(session, call_id, as_caller) else {
            let which = if as_caller { "ringing outgoing " } else { "ringing incoming " };
            return self.unknown_call(now, conn, id, call_id, which);
        };
        let reason = if as_caller { HangupReason::Cancelled } else { HangupReason::Rejected };
        self.ack(conn, id);
        self.end_call(now, &key, session, reason);
    }

    pub(crate) fn hangup(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        call_id: &str,
    ) {
        let Some((key, call)) = self.own_call(session, call_id) else {
            return self.unknown_call(now, conn, id, call_id, "");
        };
        let reason = match (call.active, call.caller.is(session)) {
            (true, _) => HangupReason::Hangup,
            (false, true) => HangupReason::Cancelled,
            (false, false) => HangupReason::Rejected,
        };
        self.ack(conn, id);
        self.end_call(now, &key, session, reason);
    }

    pub(crate) fn ring_timeout(&mut self, now: Instant, call_id: &Arc<str>, deadline: Instant) {
        let Some(call) = self.calls.get(call_id).filter(|c| !c.active && c.ring_deadline == deadline) else {
            return;
        };
        let Some(callee_name) = self.party_name(&call.callee) else {
            return;
        };
        let Some(call) = self.remove_call(call_id) else { return };
        let hangup = Bytes::from(
            OutEvent::Hangup {
                call_id: call_id.as_ref().into(),
                from: callee_name.as_ref().into(),
                reason: HangupReason::NoAnswer,
            }
            .to_json(),
        );
        for party in [call.caller, call.callee] {
            match party {
                Party::Local(session) => {
                    self.clear_call(now, session);
                    self.deliver(session, hangup.clone(), Origin::Nobody);
                }
                Party::Remote { node, .. } => {
                    let message = Message::CallEnded { call: call_id.to_string(), reason: HangupReason::NoAnswer };
                    self.command(Command::Send { node, message });
                }
            }
        }
    }

    /// Ends a call because of `by`: the other party gets `hangup` with `reason`.
    pub(crate) fn end_call(&mut self, now: Instant, call_id: &str, by: SessionId, reason: HangupReason) {
        let Some(call) = self.remove_call(call_id) else {
            return;
        };
        let peer = call.other(by).clone();
        self.clear_call(now, by);
        match peer {
            Party::Local(peer) => {
                self.clear_call(now, peer);
                let Some(by_name) = self.sessions.get(&by).map(|s| s.name.clone()) else {
                    return;
                };
                let peer_is_v1 = self.sessions.get(&peer).is_some_and(|s| s.dialect == Dialect::V1);
                if peer_is_v1 {
                    let from: Cow<'_, str> = by_name.as_ref().into();
                    let hangup = OutEvent::Hangup { call_id: call_id.into(), from, reason };
                    self.deliver(peer, Bytes::from(hangup.to_json()), Origin::Nobody);
                }
            }
            Party::Remote { node, .. } => {
                self.command(Command::Send { node, message: Message::CallEnded { call: call_id.to_owned(), reason } });
            }
        }
    }

    pub(crate) fn clear_call(&mut self, now: Instant, session: SessionId) {
        if let Some(state) = self.sessions.get_mut(&session) {
            state.call = None;
        }
        self.set_status(now, session, UserStatus::Idle);
    }
}
