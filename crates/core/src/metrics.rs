//! Counters of the core, kept as plain integers that the IO layer copies out when it is scraped.
//!
//! The core runs behind the server's lock, so a counter here is a plain `u64` add: no atomics, no registry lookup,
//! no allocation. Gauges (connections, users, rooms, calls) are not counted at all: they are the sizes of the core's
//! maps, read at scrape time ([`crate::Signaling::stats`]).

use std::time::Duration;

use switchboard_proto::ErrorCode;

/// What a received message was, for `messages received by type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// v1 `login`.
    Login,
    /// v1 `logout`.
    Logout,
    /// v1 `users`.
    Users,
    /// v1 `ping`.
    Ping,
    /// `offer` (either dialect).
    Offer,
    /// `answer` (either dialect).
    Answer,
    /// v1 `candidate` or the tutorial's `ICE`.
    Candidate,
    /// v1 `end-of-candidates`.
    EndOfCandidates,
    /// v1 `call`.
    Call,
    /// v1 `accept`.
    Accept,
    /// v1 `reject`.
    Reject,
    /// v1 `cancel`.
    Cancel,
    /// v1 `hangup`.
    Hangup,
    /// v1 `join`.
    Join,
    /// v1 `leave`.
    Leave,
    /// The tutorial's `Login`.
    TutorialLogin,
    /// A text frame that is not a valid request (bad JSON, unknown type, missing fields).
    Invalid,
    /// A binary frame.
    Binary,
    /// A frame over `max-message-bytes`.
    TooLarge,
    /// A message dropped by the rate limit before it was read.
    RateLimited,
}

impl MessageKind {
    /// Every kind, in declaration order (`kind as usize` indexes this).
    pub const ALL: [MessageKind; 20] = [
        Self::Login,
        Self::Logout,
        Self::Users,
        Self::Ping,
        Self::Offer,
        Self::Answer,
        Self::Candidate,
        Self::EndOfCandidates,
        Self::Call,
        Self::Accept,
        Self::Reject,
        Self::Cancel,
        Self::Hangup,
        Self::Join,
        Self::Leave,
        Self::TutorialLogin,
        Self::Invalid,
        Self::Binary,
        Self::TooLarge,
        Self::RateLimited,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Users => "users",
            Self::Ping => "ping",
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Candidate => "candidate",
            Self::EndOfCandidates => "end-of-candidates",
            Self::Call => "call",
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
            Self::Hangup => "hangup",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::TutorialLogin => "tutorial-login",
            Self::Invalid => "invalid",
            Self::Binary => "binary",
            Self::TooLarge => "too-large",
            Self::RateLimited => "rate-limited",
        }
    }
}

/// How a login ended, for `logins by outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A new session (either dialect).
    Ok,
    /// A session taken back with its resume token.
    Resumed,
    /// `invalid-name`.
    InvalidName,
    /// `name-taken`.
    NameTaken,
    /// `resume-failed`.
    ResumeFailed,
    /// `unsupported-protocol`.
    UnsupportedProtocol,
    /// `auth-required`: the server wants a token and none came.
    AuthRequired,
    /// `invalid-token`.
    InvalidToken,
    /// `token-expired`.
    TokenExpired,
    /// `token-name-mismatch`.
    TokenNameMismatch,
}

impl LoginOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [LoginOutcome; 10] = [
        Self::Ok,
        Self::Resumed,
        Self::InvalidName,
        Self::NameTaken,
        Self::ResumeFailed,
        Self::UnsupportedProtocol,
        Self::AuthRequired,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::TokenNameMismatch,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Resumed => "resumed",
            Self::InvalidName => "invalid-name",
            Self::NameTaken => "name-taken",
            Self::ResumeFailed => "resume-failed",
            Self::UnsupportedProtocol => "unsupported-protocol",
            Self::AuthRequired => "auth-required",
            Self::InvalidToken => "invalid-token",
            Self::TokenExpired => "token-expired",
            Self::TokenNameMismatch => "token-name-mismatch",
        }
    }
}

/// Upper bounds (seconds) of the call setup time buckets: people answer within seconds, or let it ring out.
pub const CALL_SETUP_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0];

/// A histogram with fixed buckets; counts per bucket (not cumulative), the last one for everything above.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Histogram {
    /// `buckets[i]` counts observations in `(bound[i-1], bound[i]]`; the last entry is the `+Inf` bucket.
    pub buckets: [u64; CALL_SETUP_BUCKETS.len() + 1],
    /// Sum of all observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let index = CALL_SETUP_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(CALL_SETUP_BUCKETS.len());
        if let Some(bucket) = self.buckets.get_mut(index) {
            *bucket += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Monotonic counters of the core, plus the one gauge that is not the size of a map.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Messages received, by [`MessageKind`] (indexed by `kind as usize`).
    pub received: [u64; MessageKind::ALL.len()],
    /// `error` events sent, by code (indexed by `code as usize`, see [`ErrorCode::ALL`]).
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Logins, by [`LoginOutcome`].
    pub logins: [u64; LoginOutcome::ALL.len()],
    /// Calls placed (`call` requests that rang someone).
    pub calls_started: u64,
    /// Time from `call` to `accept`.
    pub call_setup: Histogram,
    /// Messages for a session waiting for its resume that were dropped: its queue was full, or it never came back.
    pub resume_queue_drops: u64,
    /// Sessions ended by an administrator.
    pub admin_disconnects: u64,
    /// Calls that were accepted and have not ended (a gauge kept here because counting it would walk every call).
    pub active_calls: u64,
}

impl Counters {
    pub(crate) fn received(&mut self, kind: MessageKind) {
        if let Some(counter) = self.received.get_mut(kind as usize) {
            *counter += 1;
        }
    }

    pub(crate) fn error(&mut self, code: ErrorCode) {
        if let Some(counter) = self.errors.get_mut(code as usize) {
            *counter += 1;
        }
    }

    pub(crate) fn login(&mut self, outcome: LoginOutcome) {
        if let Some(counter) = self.logins.get_mut(outcome as usize) {
            *counter += 1;
        }
    }

    /// Messages received of `kind`.
    pub fn received_of(&self, kind: MessageKind) -> u64 {
        self.received.get(kind as usize).copied().unwrap_or(0)
    }

    /// `error` events sent with `code`.
    pub fn errors_of(&self, code: ErrorCode) -> u64 {
        self.errors.get(code as usize).copied().unwrap_or(0)
    }

    /// Logins that ended with `outcome`.
    pub fn logins_of(&self, outcome: LoginOutcome) -> u64 {
        self.logins.get(outcome as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_are_in_index_order() {
        for (index, kind) in MessageKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "{}", kind.as_str());
        }
        for (index, outcome) in LoginOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{}", outcome.as_str());
        }
    }

    #[test]
    fn histogram_buckets_hold_their_upper_bound() {
        let mut histogram = Histogram::default();
        histogram.observe(Duration::from_millis(250));
        histogram.observe(Duration::from_millis(251));
        histogram.observe(Duration::from_secs(3600));
        assert_eq!(histogram.buckets[0], 1);
        assert_eq!(histogram.buckets[1], 1);
        assert_eq!(histogram.buckets[CALL_SETUP_BUCKETS.len()], 1);
        assert_eq!(histogram.count, 3);
        assert!((histogram.sum - 3600.501).abs() < 1e-9);
    }
}
