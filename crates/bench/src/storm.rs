//! The `storm` scenario: N clients log in as fast as a concurrency bound allows, and each keeps a presence view (the
//! `welcome` list plus `presence` deltas in v1, the latest `RenderUserList` in the tutorial dialect) until it has seen
//! all N online. Reports when the last view became complete and how many presence bytes that took.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::list_memo::{self, ListMemo};
use crate::net::{self, Target};
use crate::proto;
use crate::stats::{RunOptions, SharedHistogram, Table, Usage};
use crate::ws::{Compression, Incoming, WsConn};
use crate::Dialect;

/// Options of `storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Protocol the clients speak.
    #[arg(long, value_enum, default_value = "v1")]
    pub dialect: Dialect,
    /// Number of clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Logins in progress at once (connected, `welcome` not yet received).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// The presence format v1 clients ask for at login (`full`: `{"name","status"}` objects; `compact`: names
    /// grouped by status).
    #[arg(long, value_enum, default_value = "compact")]
    pub presence: PresenceFormat,
    /// Every client parses every compact list itself, instead of taking the items it shares with a list another
    /// client of the same thread parsed just before (compared byte for byte; see `list_memo.rs`).
    #[arg(long)]
    pub parse_each: bool,
    /// WebSocket compression (permessage-deflate), as browsers offer it: `shared` offers it and inflates a frame
    /// another client of the same thread inflated just before only once (see `inflate.rs`), `each` inflates every
    /// message by itself, `off` does not offer it.
    #[arg(long, value_enum, default_value = "shared")]
    pub deflate: Compression,
    /// Options every signaling scenario takes.
    #[command(flatten)]
    pub run: RunOptions,
}

/// The `presence` field of a v1 `login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresenceFormat {
    Full,
    Compact,
}

/// Which of the N clients a client has seen online, as a bit set indexed by client number.
#[derive(Debug, Clone)]
pub struct View {
    bits: Vec<u64>,
    count: usize,
    clients: usize,
    /// The bits before the frame the compact fast path is applying (kept to reuse the allocation).
    saved: Vec<u64>,
}

impl View {
    pub fn new(clients: usize) -> Self {
        Self { bits: vec![0; clients.div_ceil(64)], count: 0, clients, saved: Vec::new() }
    }

    /// The client number behind a name, if it is one of this storm's.
    pub fn index(prefix: &str, clients: usize, name: &str) -> Option<usize> {
        Self::index_bytes(prefix.as_bytes(), clients, name.as_bytes())
    }

    /// [`View::index`] on the raw bytes of a name: the compact path feeds names straight from the frame.
    #[inline]
    fn index_bytes(prefix: &[u8], clients: usize, name: &[u8]) -> Option<usize> {
        if name.len() <= prefix.len() || !same_bytes(&name[..prefix.len()], prefix) {
            return None;
        }
        let digits = &name[prefix.len()..];
        // Exactly the spelling `{prefix}{i}`: no sign, no leading zeros. At most 19 digits cannot overflow a u64.
        if digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        let mut value = 0u64;
        for &digit in digits {
            let digit = digit.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + u64::from(digit);
        }
        usize::try_from(value).ok().filter(|&value| value < clients)
    }

    pub fn set(&mut self, i: usize, online: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let Some(w) = self.bits.get_mut(word) else { return };
        let was = *w & bit != 0;
        match (was, online) {
            (false, true) => {
                *w |= bit;
                self.count += 1;
            }
            (true, false) => {
                *w &= !bit;
                self.count -= 1;
            }
            _ => {}
        }
    }

    /// Sets (or clears) every client of `members`, a bit set like the view's own.
    pub fn merge(&mut self, members: &[u64], online: bool) {
        for (word, &member) in self.bits.iter_mut().zip(members) {
            if online {
                *word |= member;
            } else {
                *word &= !member;
            }
        }
        self.count = self.bits.iter().map(|word| word.count_ones() as usize).sum();
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
        self.count = 0;
    }

    pub fn complete(&self) -> bool {
        self.count == self.clients
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count
    }
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// The parts of `welcome`, `users`, `presence` and `RenderUserList` that change a view, in either presence format.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceMessage<'a> {
    #[serde(default, borrow)]
    users: Vec<Entry<'a>>,
    #[serde(default, borrow)]
    joined: Vec<Entry<'a>>,
    #[serde(default, borrow)]
    changed: Vec<Entry<'a>>,
    #[serde(default, borrow)]
    left: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    idle: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    in_call: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    userlist: Vec<Cow<'a, str>>,
}

/// Applies one message to a view; returns whether it was a presence message (welcome, presence, user list).
pub fn apply(view: &mut View, prefix: &str, message: &[u8], memo: &mut ListMemo) -> anyhow::Result<bool> {
    let list = proto::has_type(message, "RenderUserList");
    if !(list || proto::has_type(message, "welcome") || proto::has_type(message, "presence")) {
        return Ok(false);
    }
    if apply_compact(view, prefix.as_bytes(), message, memo, list) {
        return Ok(true);
    }
    let parsed: PresenceMessage<'_> = serde_json::from_slice(message).context("a presence message")?;
    if list {
        // The tutorial's list replaces the previous one.
        view.clear();
    }
    let clients = view.clients;
    let mut mark = |name: &str, online: bool| {
        if let Some(i) = View::index(prefix, clients, name) {
            view.set(i, online);
        }
    };
    if list {
        for name in &parsed.userlist {
            mark(name, true);
        }
        return Ok(true);
    }
    // `left` first: a user renamed within one tick is in `left` under the old spelling.
    for name in &parsed.left {
        mark(name, false);
    }
    let entries = parsed.users.iter().chain(&parsed.joined).chain(&parsed.changed).map(|e| &e.name);
    for name in entries.chain(&parsed.idle).chain(&parsed.in_call) {
        mark(name, true);
    }
    Ok(true)
}

/// The compact-format fast path: a frame with no full-format list, whose `left`, `idle` and `inCall` arrays hold
/// only strings without escapes, is applied straight from its bytes; so is the tutorial's `RenderUserList`
/// (`tutorial_list`), whose `userlist` replaces the view and is the same kind of array. Returns false, having changed
/// nothing, for anything else (the caller then parses the whole frame with serde).
///
/// Why by hand: every one of N clients must read all N names, so a 10,000-client storm is 100 million names to
/// parse, and serde_json (UTF-8 checks, a `Vec` per array, a `String` per escaped name) was the load generator's
/// largest cost. One `memmem` pass finds every key (`":`): a quote inside a JSON string is always escaped, so an
/// unescaped `":` ends a key.
fn apply_compact(view: &mut View, prefix: &[u8], message: &[u8], memo: &mut ListMemo, tutorial_list: bool) -> bool {
    // Changes are applied as they are read; a frame that turns out not to qualify puts the view back as it was.
    let mut saved = std::mem::take(&mut view.saved);
    saved.clear();
    saved.extend_from_slice(&view.bits);
    let count = view.count;
    if tutorial_list {
        view.clear();
    }
    let applied = apply_compact_lists(view, prefix, message, memo, tutorial_list);
    if !applied {
        view.bits.copy_from_slice(&saved);
        view.count = count;
    }
    view.saved = saved;
    applied
}

fn apply_compact_lists(
    view: &mut View,
    prefix: &[u8],
    message: &[u8],
    memo: &mut ListMemo,
    tutorial_list: bool,
) -> bool {
    let names = NamePattern::new(prefix, view.clients);
    let mut joined_seen = false;
    let mut search_from = 0;
    let finder = memchr::memmem::Finder::new(b"\":");
    while let Some(found) = finder.find(&message[search_from..]) {
        let quote = search_from + found;
        let Some(key_start) = memchr::memrchr(b'"', &message[..quote]) else { return false };
        if key_start > 0 && message[key_start - 1] == b'\\' {
            return false;
        }
        let online = match &message[key_start + 1..quote] {
            // Switchboard writes `left` before the lists of who is online, so applying in frame order is applying
            // `left` first; a frame in another order goes to serde, which does.
            b"left" if !joined_seen && !tutorial_list => false,
            b"idle" | b"inCall" if !tutorial_list => true,
            b"userlist" if tutorial_list => true,
            b"left" | b"users" | b"joined" | b"changed" | b"userlist" => return false,
            _ => {
                search_from = quote + 2;
                continue;
            }
        };
        joined_seen |= online;
        if message.get(quote + 2) != Some(&b'[') {
            return false;
        }
        let Some(end) = scan_names(&message[quote + 3..], &names, memo, view, online) else {
            return false;
        };
        search_from = quote + 3 + end;
    }
    true
}

/// `a == b` for slices of the same length, eight bytes at a time: the storm compares its prefix with 100 million names,
/// and the `memcmp` call behind `==` cost more than the comparison.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let word = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        u64::from_le_bytes(word)
    };
    let (mut a_chunks, mut b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    a.len() == b.len()
        && a_chunks.by_ref().zip(b_chunks.by_ref()).all(|(x, y)| word(x) == word(y))
        && a_chunks.remainder().iter().zip(b_chunks.remainder()).all(|(x, y)| x == y)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` that is `"` or `\\` (the classic "has zero byte" test). Only the lowest flag
/// is exact: flags above it can be false positives, which do not matter to a search for the first.
#[inline]
fn quote_or_backslash_flags(word: u64) -> u64 {
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    zero_bytes(word ^ (ONES * u64::from(b'"'))) | zero_bytes(word ^ (ONES * u64::from(b'\\')))
}

fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The offset of the first `"` or `\\` in `bytes`, eight bytes at a time. Names are a dozen bytes, too short for
/// `memchr`'s call to pay off.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    let mut offset = 0;
    while offset + 8 <= bytes.len() {
        let found = quote_or_backslash_flags(word_at(bytes, offset));
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    bytes[offset..].iter().position(|&b| b == b'"' || b == b'\\').map(|at| offset + at)
}

/// How this storm's names look (`{prefix}{client number}`), prepared for [`NamePattern::read`].
///
/// Why by hand: every one of N clients reads all N names, 100 million in a 10,000-client storm. Reading a name from
/// one 16-byte window with word arithmetic (find its end, compare the prefix, check and convert up to eight digits
/// with three multiplications) takes 12.6-13.7 ns per name against 19-29 ns for the byte-by-byte loop before it
/// (10,000-name `welcome`, release build, same run; the tool spent 44% of its storm CPU there).
struct NamePattern<'a> {
    prefix: &'a [u8],
    clients: usize,
    /// The prefix as the low bytes of a word and the mask of those bytes; None when it is longer than eight bytes.
    prefix_word: Option<(u64, u64)>,
}

impl<'a> NamePattern<'a> {
    fn new(prefix: &'a [u8], clients: usize) -> Self {
        let prefix_word = (prefix.len() <= 8).then(|| {
            let mut word = [0u8; 8];
            word[..prefix.len()].copy_from_slice(prefix);
            let mask = if prefix.is_empty() { 0 } else { u64::MAX >> (64 - 8 * prefix.len()) };
            (u64::from_le_bytes(word), mask)
        });
        Self { prefix, clients, prefix_word }
    }

    /// Reads the string that starts at `bytes[0]` (just past its opening quote): its length, and the client number
    /// it names (None for a name that is not one of this storm's). None when it holds an escape or is unterminated.
    #[inline]
    fn read(&self, bytes: &[u8]) -> Option<(usize, Option<usize>)> {
        if let (Some(window), Some((prefix_word, prefix_mask))) = (bytes.get(..16), self.prefix_word) {
            let (low, high) = (word_at(window, 0), word_at(window, 8));
            let (low_flags, high_flags) = (quote_or_backslash_flags(low), quote_or_backslash_flags(high));
            // A name of 16 bytes or more takes the plain path below.
            let len = match (low_flags, high_flags) {
                (0, 0) => None,
                (0, flags) => Some(8 + (flags.trailing_zeros() / 8) as usize),
                (flags, _) => Some((flags.trailing_zeros() / 8) as usize),
            };
            if let Some(len) = len {
                if window[len] != b'"' {
                    return None;
                }
                if len <= self.prefix.len() || low & prefix_mask != prefix_word {
                    return Some((len, None));
                }
                let digits = len - self.prefix.len();
                if digits <= 8 {
                    return Some((len, self.client_number(word_at(window, self.prefix.len()), digits)));
                }
                return Some((len, View::index_bytes(self.prefix, self.clients, &window[..len])));
            }
        }
        let len = quote_or_backslash(bytes)?;
        if bytes[len] != b'"' {
            return None;
        }
        Some((len, View::index_bytes(self.prefix, self.clients, &bytes[..len])))
    }

    /// The number spelled by the low `digits` bytes (1 to 8) of `word`, first digit lowest, if they are all digits
    /// without a leading zero and it is below the number of clients.
    #[inline]
    fn client_number(&self, word: u64, digits: usize) -> Option<usize> {
        let kept = if digits == 8 { u64::MAX } else { (1u64 << (8 * digits)) - 1 };
        // '0'..='9' become 0..=9; any other byte becomes at least 0x0a.
        let values = (word ^ (ONES * u64::from(b'0'))) & kept;
        // Flags every byte above 9: bytes up to 0x7f by the carry of + 0x76, larger ones by their own high bit.
        let above_nine = (((values & (ONES * 0x7f)) + ONES * 0x76) | values) & HIGHS & kept;
        if above_nine != 0 || (digits > 1 && values & 0xff == 0) {
            return None;
        }
        // Left-aligned, the missing high digits read as leading zeros; then pairs, quads and the eight are combined.
        let mut number = values << (8 * (8 - digits));
        number = (number.wrapping_mul(10 * (1 << 8) + 1) >> 8) & 0x00ff_00ff_00ff_00ff;
        number = (number.wrapping_mul(100 * (1 << 16) + 1) >> 16) & 0x0000_ffff_0000_ffff;
        number = number.wrapping_mul(10_000 * (1 << 32) + 1) >> 32;
        usize::try_from(number).ok().filter(|&number| number < self.clients)
    }
}

/// Sets (or, for `left`, clears) in `view` every name of this storm in a JSON array of plain strings (`rest` starts
/// right after its `[`) and returns the offset just past its `]`; None when an item is not a string without escapes
/// (the caller then restores the view). The items at the start that a list in `memo` shares are taken from it, not
/// parsed again.
fn scan_names(
    rest: &[u8],
    names: &NamePattern<'_>,
    memo: &mut ListMemo,
    view: &mut View,
    online: bool,
) -> Option<usize> {
    if rest.first() == Some(&b']') {
        return Some(1);
    }
    let remember = memo.enabled();
    let mut at = 0;
    let mut reused = None;
    if let Some(reuse) = memo.reuse(names.prefix, names.clients, rest) {
        if let Some(members) = reuse.members {
            view.merge(members, online);
        }
        for &(_, index) in reuse.items {
            if index != list_memo::NOBODY {
                view.set(index as usize, online);
            }
        }
        reused = Some(reuse.from);
        at = reuse.end;
        match rest.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return Some(at + 1),
            _ => return None,
        }
    }
    let mut parsed = memo.scratch();
    loop {
        if rest.get(at) != Some(&b'"') {
            return None;
        }
        let (len, index) = names.read(&rest[at + 1..])?;
        if let Some(index) = index {
            view.set(index, online);
        }
        at += len + 2;
        if remember {
            let index = index.and_then(|i| u32::try_from(i).ok()).unwrap_or(list_memo::NOBODY);
            parsed.push((u32::try_from(at).ok()?, index));
        }
        match rest.get(at) {
            Some(b',') => at += 1,
            Some(b']') => {
                memo.record(names.prefix, names.clients, &rest[..at], reused, parsed);
                return Some(at + 1);
            }
            _ => return None,
        }
    }
}

/// Shared progress of the clients.
#[derive(Default)]
struct Progress {
    logged_in: AtomicUsize,
    complete: AtomicUsize,
    presence_bytes: AtomicU64,
    presence_frames: AtomicU64,
    /// Names taken from another client's parse of the same bytes (see `list_memo.rs`).
    shared_names: AtomicU64,
    /// Bytes read from the sockets after the handshakes.
    wire_bytes: AtomicU64,
    /// Text of compressed messages: taken from another client's inflation of the same frame, and inflated.
    inflate_reused: AtomicU64,
    inflated: AtomicU64,
    /// Microseconds from the start until the last view became complete.
    last_complete_us: AtomicU64,
    last_login_us: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    // Client numbers are kept as u32 in shared parses (u32::MAX marks a name of nobody in the storm).
    anyhow::ensure!(args.clients < u32::MAX as usize, "--clients must be below {}", u32::MAX);
    let target = Target::parse(&args.url)?;
    net::ensure_fd_room(args.clients)?;
    let prefix = args.run.prefix.clone().unwrap_or_else(|| proto::default_prefix("st"));
    let progress = Arc::new(Progress::default());
    let completion = SharedHistogram::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let usage = Usage::start(args.run.server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.run.timeout);
    // A JoinSet tells which client ended without walking 10,000 task handles every few milliseconds (that walk took
    // 3% of the tool's CPU in a storm).
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let client = Client {
            target: target.clone(),
            dialect: args.dialect,
            presence: args.presence,
            index: i,
            clients: args.clients,
            prefix: prefix.clone(),
            parse_each: args.parse_each,
            deflate: args.deflate,
            started,
            progress: progress.clone(),
        };
        let (gate, stop, completion) = (gate.clone(), stop_rx.clone(), completion.clone());
        tasks.spawn(async move { client.run(gate, stop, completion).await });
    }
    // Wait for every view to complete, a failed client, or the deadline.
    let outcome = loop {
        if progress.complete.load(Ordering::Relaxed) == args.clients {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(format!("not complete within --timeout {} s", args.run.timeout));
        }
        tokio::select! {
            Some(ended) = tasks.join_next() => {
                break Err(match ended {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "a client ended early".to_string(),
                    Err(e) => format!("a client task failed: {e}"),
                });
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    };
    let elapsed = started.elapsed();
    let usage = usage.finish(elapsed)?;
    let _ = stop_tx.send(true);
    // Clients log out and close; whatever is stuck (say, still connecting at the deadline) is aborted.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    let logins = progress.logged_in.load(Ordering::Relaxed);
    let complete = progress.complete.load(Ordering::Relaxed);
    let login_s = progress.last_login_us.load(Ordering::Relaxed) as f64 / 1e6;
    let complete_s = progress.last_complete_us.load(Ordering::Relaxed) as f64 / 1e6;
    let bytes = progress.presence_bytes.load(Ordering::Relaxed);
    let frames = progress.presence_frames.load(Ordering::Relaxed);
    let shared_names = progress.shared_names.load(Ordering::Relaxed);
    let wire_bytes = progress.wire_bytes.load(Ordering::Relaxed);
    let inflated = progress.inflated.load(Ordering::Relaxed);
    let inflate_reused = progress.inflate_reused.load(Ordering::Relaxed);
    let views = completion.summary();
    let mut dialect = format!("{:?}", args.dialect).to_lowercase();
    if args.dialect == Dialect::V1 {
        dialect = format!("{dialect}, {:?} presence", args.presence).to_lowercase();
    }
    if args.run.json {
        let mut result = json!({
            "scenario": "storm",
            "dialect": format!("{:?}", args.dialect).to_lowercase(),
            // The tutorial dialect has one format of its own (`RenderUserList`): no choice to report.
            "presence": (args.dialect == Dialect::V1).then(|| format!("{:?}", args.presence).to_lowercase()),
            "clients": args.clients,
            "concurrency": args.concurrency,
            "logged_in": logins,
            "complete": complete,
            "login_seconds": login_s,
            "complete_seconds": complete_s,
            "view_complete": views.json(),
            "presence_bytes": bytes,
            "presence_frames": frames,
            "presence_bytes_per_client": bytes as f64 / args.clients as f64,
            "shared_names": shared_names,
            "deflate": format!("{:?}", args.deflate).to_lowercase(),
            "wire_bytes": wire_bytes,
            "inflated_bytes": inflated,
            "inflate_reused_bytes": inflate_reused,
            "failure": outcome.as_ref().err(),
        });
        crate::relay::merge(&mut result, usage.json(args.clients as u64));
        println!("{result}");
    } else {
        let mut table = Table::default();
        table.row("clients", format!("{} ({} logging in at once)", args.clients, args.concurrency));
        table.row("all logged in after", format!("{login_s:.2} s ({logins} clients)"));
        table.row("all views complete after", format!("{complete_s:.2} s ({complete} clients)"));
        table.row("view complete, per client", views.human());
        table.row(
            "presence received",
            format!(
                "{:.1} MB in {frames} frames ({:.1} KB per client)",
                bytes as f64 / 1e6,
                bytes as f64 / 1e3 / args.clients as f64
            ),
        );
        table.row(
            "received on the wire",
            format!(
                "{:.1} MB ({:.1} KB per client)",
                wire_bytes as f64 / 1e6,
                wire_bytes as f64 / 1e3 / args.clients as f64
            ),
        );
        table.row(
            "compressed text",
            match args.deflate {
                Compression::Off => "not offered (--deflate off)".to_string(),
                _ if inflated + inflate_reused == 0 => {
                    "none (the server did not accept permessage-deflate)".to_string()
                }
                _ => format!(
                    "{:.1} MB, {:.1} MB of it inflated, the rest read without (stored blocks, frames another client inflated){}",
                    (inflated + inflate_reused) as f64 / 1e6,
                    inflated as f64 / 1e6,
                    if args.deflate == Compression::Each { " (none: --deflate each)" } else { "" }
                ),
            },
        );
        table.row(
            "names from shared parses",
            if args.parse_each { "none (--parse-each)".to_string() } else { shared_names.to_string() },
        );
        usage.rows(args.clients as u64, "login", &mut table);
        if let Err(e) = &outcome {
            table.row("failure", e.clone());
        }
        print!("{}", table.render(&format!("storm ({dialect})")));
    }
    outcome.map_err(anyhow::Error::msg)
}

struct Client {
    target: Target,
    dialect: Dialect,
    presence: PresenceFormat,
    index: usize,
    clients: usize,
    prefix: String,
    parse_each: bool,
    deflate: Compression,
    started: Instant,
    progress: Arc<Progress>,
}

thread_local! {
    /// The lists parsed last by the clients running on this thread (the runtime's threads never share it).
    static SHARED_LISTS: std::cell::RefCell<ListMemo> = std::cell::RefCell::new(ListMemo::new(4));
}

impl Client {
    async fn run(
        self,
        gate: Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
        completion: Arc<SharedHistogram>,
    ) -> anyhow::Result<()> {
        let name = format!("{}{}", self.prefix, self.index);
        let mut view = View::new(self.clients);
        let mut permit = Some(gate.acquire_owned().await?);
        let mut conn = WsConn::connect_with(&self.target, self.index, self.deflate)
            .await
            .with_context(|| format!("client {name}"))?;
        let login = match self.dialect {
            Dialect::V1 => {
                let presence = match self.presence {
                    PresenceFormat::Full => "full",
                    PresenceFormat::Compact => "compact",
                };
                json!({"type": "login", "name": name, "presence": presence})
            }
            Dialect::Tutorial => json!({"type": "Login", "UserName": name}),
        };
        conn.queue_text(login.to_string().as_bytes());
        conn.flush().await?;
        let mut logged_in = false;
        let mut done = false;
        loop {
            while let Some(incoming) = conn.next()? {
                let payload = match incoming {
                    Incoming::Message(p) => p,
                    Incoming::Close(code) => anyhow::bail!("client {name}: the server closed (code {code:?})"),
                };
                let message = conn.payload(&payload);
                proto::refuse_error(message).with_context(|| format!("client {name}"))?;
                let presence = if self.parse_each {
                    apply(&mut view, &self.prefix, message, &mut ListMemo::new(0))
                } else {
                    SHARED_LISTS.with_borrow_mut(|memo| {
                        let before = memo.reused_items;
                        let presence = apply(&mut view, &self.prefix, message, memo);
                        self.progress.shared_names.fetch_add(memo.reused_items - before, Ordering::Relaxed);
                        presence
                    })
                };
                if presence.with_context(|| format!("client {name}"))? {
                    self.progress.presence_bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
                    self.progress.presence_frames.fetch_add(1, Ordering::Relaxed);
                    if !logged_in {
                        logged_in = true;
                        // Logged in: let the next client start.
                        permit = None;
                        self.progress.logged_in.fetch_add(1, Ordering::Relaxed);
                        self.progress.last_login_us.fetch_max(self.since_start(), Ordering::Relaxed);
                    }
                }
            }
            if !done && view.complete() {
                done = true;
                let at = self.since_start();
                // One sample per client: straight into the shared histogram (a batch would be 4 KiB per client).
                completion.add(&[at]);
                self.progress.last_complete_us.fetch_max(at, Ordering::Relaxed);
                self.progress.complete.fetch_add(1, Ordering::Relaxed);
            }
            let (reused, inflated) = crate::inflate::take_counts();
            if reused + inflated > 0 {
                self.progress.inflate_reused.fetch_add(reused, Ordering::Relaxed);
                self.progress.inflated.fetch_add(inflated, Ordering::Relaxed);
            }
            conn.flush().await?;
            let before = conn.bytes_read;
            tokio::select! {
                r = conn.fill() => r.with_context(|| format!("client {name}"))?,
                _ = stop.changed() => break,
            }
            self.progress.wire_bytes.fetch_add(conn.bytes_read - before, Ordering::Relaxed);
        }
        drop(permit);
        match self.dialect {
            Dialect::V1 => proto::logout_v1(&mut conn).await,
            Dialect::Tutorial => proto::close(&mut conn).await,
        }
        Ok(())
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_map_to_client_numbers() {
        assert_eq!(View::index("st1x", 10, "st1x0"), Some(0));
        assert_eq!(View::index("st1x", 10, "st1x9"), Some(9));
        assert_eq!(View::index("st1x", 10, "st1x10"), None, "out of range");
        assert_eq!(View::index("st1x", 100, "st1x07"), None, "leading zero");
        assert_eq!(View::index("st1x", 100, "st1x+7"), None);
        assert_eq!(View::index("st1x", 100, "st1x"), None);
        assert_eq!(View::index("st1x", 100, "alice"), None);
    }

    #[test]
    fn v1_welcome_and_deltas_build_the_view() {
        let mut view = View::new(3);
        let welcome = br#"{"type":"welcome","id":1,"name":"p0","users":[{"name":"p0","status":"idle"},{"name":"alice","status":"idle"}]}"#;
        assert!(apply(&mut view, "p", welcome, &mut ListMemo::new(0)).unwrap());
        assert_eq!(view.count(), 1);
        let delta = br#"{"type":"presence","joined":[{"name":"p1","status":"idle"},{"name":"p2","status":"idle"}],"left":["p0"]}"#;
        assert!(apply(&mut view, "p", delta, &mut ListMemo::new(0)).unwrap());
        assert_eq!(view.count(), 2);
        assert!(!view.complete());
        let changed = br#"{"type":"presence","changed":[{"name":"p0","status":"in-call"}]}"#;
        assert!(apply(&mut view, "p", changed, &mut ListMemo::new(0)).unwrap());
        assert!(view.complete());
        // Idempotent: joining twice changes nothing.
        assert!(apply(&mut view, "p", delta, &mut ListMemo::new(0)).unwrap());
        assert_eq!(view.count(), 2);
        assert!(!apply(&mut view, "p", br#"{"type":"hello","protocol":1}"#, &mut ListMemo::new(0)).unwrap());
    }

    #[test]
    fn compact_frames_build_the_view_without_serde() {
        let mut view = View::new(4);
        let welcome = br#"{"type":"welcome","id":1,"name":"p0","resumeToken":"x","resumed":false,"idle":["p0","alice"],"inCall":["p3"],"limits":{"maxRoomSize":16},"iceServers":[]}"#;
        assert!(apply_compact(&mut view, b"p", welcome, &mut ListMemo::new(0), false));
        assert_eq!(view.count(), 2);
        let delta = br#"{"type":"presence","left":["p0"],"idle":["p1","p2"],"inCall":[]}"#;
        assert!(apply(&mut view, "p", delta, &mut ListMemo::new(0)).unwrap());
        assert_eq!(view.count(), 3);
        assert!(!view.complete());
        assert!(apply(&mut view, "p", br#"{"type":"presence","inCall":["p0"]}"#, &mut ListMemo::new(0)).unwrap());
        assert!(view.complete());
        assert!(apply(&mut view, "p", br#"{"type":"presence","left":["p3","zed"]}"#, &mut ListMemo::new(0)).unwrap());
        assert_eq!(view.count(), 3);
        // Other array-valued keys are skipped; names may hold commas.
        let mut view = View::new(3);
        let frame = br#"{"type":"welcome","iceServers":[{"urls":["stun:x"]}],"left":["p0","p1"],"idle":["p0","p,9"],"inCall":["p2"]}"#;
        assert!(apply_compact(&mut view, b"p", frame, &mut ListMemo::new(0), false));
        assert_eq!(view.count(), 2);
        // `left` after a list of who is online must still apply first: serde's job, and the view is as before.
        let frame = br#"{"type":"presence","idle":["p1"],"left":["p1","p2"]}"#;
        assert!(!apply_compact(&mut view, b"p", frame, &mut ListMemo::new(0), false));
        assert_eq!(view.count(), 2);
        assert!(apply(&mut view, "p", frame, &mut ListMemo::new(0)).unwrap());
        assert_eq!(view.count(), 2, "p1 left then came back, p2 left");
        assert!(
            !apply_compact(&mut view, b"p", br#"{"type":"presence","idle":["p1""#, &mut ListMemo::new(0), false),
            "unterminated"
        );
    }

    #[test]
    fn frames_the_fast_path_cannot_read_go_to_serde_and_mean_the_same() {
        for frame in [
            &br#"{"type":"presence","idle":["p\u0031","p0"]}"#[..],
            br#"{"type":"presence","idle":["p1", "p0"]}"#,
            br#"{"type":"presence","joined":[{"name":"p1","status":"idle"}],"idle":["p0"]}"#,
            br#"{"type":"welcome","idle":["p0"],"users":[{"name":"p1","status":"idle"}]}"#,
        ] {
            let mut view = View::new(2);
            assert!(
                !apply_compact(&mut view, b"p", frame, &mut ListMemo::new(0), false),
                "{}",
                String::from_utf8_lossy(frame)
            );
            assert_eq!(view.count(), 0, "the fast path changed nothing before giving up");
            assert!(apply(&mut view, "p", frame, &mut ListMemo::new(0)).unwrap());
            assert!(view.complete(), "{}", String::from_utf8_lossy(frame));
        }
        let mut view = View::new(2);
        assert!(
            apply(&mut view, "p", br#"{"type":"presence","idle":["p0","p1"}"#, &mut ListMemo::new(0)).is_err(),
            "broken JSON"
        );
    }

    #[test]
    fn quote_or_backslash_finds_the_first_of_either() {
        for (text, expected) in [
            (&b"abc\"def"[..], Some(3)),
            (b"abcdefgh\"", Some(8)),
            (b"abcdefghijklmno\\x\"", Some(15)),
            (b"\"", Some(0)),
            (b"", None),
            (b"abcdefghijkl", None),
            (b"\xff\x80\x22abc", Some(2)),
            (b"\xa2\xdc\"\x22", Some(2)),
        ] {
            assert_eq!(quote_or_backslash(text), expected, "{}", String::from_utf8_lossy(text));
        }
        for len in 0..40 {
            for at in 0..len {
                let mut text = vec![b'x'; len];
                text[at] = b'"';
                assert_eq!(quote_or_backslash(&text), Some(at));
            }
        }
    }

    /// The word-at-a-time reader must agree with the plain one on every name: of this storm or not, leading zeros,
    /// one to twenty digits, bytes around the digits' range, long prefixes, and names near the end of the frame
    /// (no 16-byte window) or longer than one.
    #[test]
    fn the_name_reader_agrees_with_the_plain_one() {
        let digit_strings: Vec<Vec<u8>> = {
            let mut all: Vec<Vec<u8>> = ["0", "7", "00", "01", "10", "99", "100", "1234", "9999", "10000", "12345678"]
                .iter()
                .chain(&["99999999", "123456789", "0000000001", "18446744073709551615", "184467440737095516150"])
                .map(|d| d.as_bytes().to_vec())
                .collect();
            for odd in [b'/', b':', b'+', b' ', 0x7f, 0x80, 0xb0, 0xff, b'a'] {
                all.push(vec![b'1', odd]);
                all.push(vec![odd, b'1', b'2']);
                all.push(vec![b'4', b'2', b'4', b'2', b'4', b'2', b'4', odd]);
            }
            all
        };
        let mut checked = 0;
        for prefix in ["", "s", "storm-", "abcdefgh", "abcdefghi", "a-rather-long-storm-prefix-"] {
            for clients in [1, 10, 10_000, 100_000_000, usize::MAX] {
                let names = NamePattern::new(prefix.as_bytes(), clients);
                for digits in &digit_strings {
                    for own_prefix in [prefix.as_bytes(), b"storm_", b"", b"abcdefgX"] {
                        let name = [own_prefix, digits.as_slice()].concat();
                        let expected = View::index_bytes(prefix.as_bytes(), clients, &name);
                        for padding in [0, 1, 15, 16] {
                            let mut bytes = name.clone();
                            bytes.push(b'"');
                            bytes.extend(std::iter::repeat_n(b',', padding));
                            assert_eq!(
                                names.read(&bytes),
                                Some((name.len(), expected)),
                                "prefix {prefix:?}, clients {clients}, name {:?}",
                                String::from_utf8_lossy(&name)
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 5_000);
        let names = NamePattern::new(b"storm-", 100);
        assert_eq!(names.read(br#"storm-1\u0030","storm-2""#), None, "an escape");
        assert_eq!(names.read(b"storm-12"), None, "unterminated");
        assert_eq!(names.read(b"storm-12345678901234567890"), None, "unterminated, longer than a window");
    }

    /// Views built with shared parses are exactly the views built by parsing every list: welcome snapshots with a
    /// name appended, deltas seen by many clients, lists that share only a beginning, `left` lists, names of others.
    #[test]
    fn shared_parses_build_the_same_views_as_parsing_each_list() {
        let clients = 2000;
        let mut state = 0x2545_f491_u64;
        let mut random = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let name = |i: usize| if i % 37 == 36 { format!("\"other{i}\"") } else { format!("\"p{i}\"") };
        let list = |members: &[usize]| members.iter().map(|&i| name(i)).collect::<Vec<_>>().join(",");
        let mut snapshot: Vec<usize> = (0..40).collect();
        let mut frames = Vec::new();
        for round in 0..60 {
            let joined: Vec<usize> = (0..random(300)).map(|_| random(clients + 20)).collect();
            let mut left: Vec<usize> = (0..random(50)).map(|_| random(clients)).collect();
            if round % 10 == 9 {
                // Everyone leaves: a `left` list as long as the snapshot.
                left.clone_from(&snapshot);
                snapshot.clear();
            }
            let delta = format!(r#"{{"type":"presence","left":[{}],"idle":[{}]}}"#, list(&left), list(&joined));
            for _ in 0..3 {
                frames.push(delta.clone());
            }
            for _ in 0..3 {
                let me = random(clients);
                let online: Vec<usize> = snapshot.iter().copied().chain([me]).collect();
                let welcome = format!(
                    r#"{{"type":"welcome","id":{round},"name":"p{me}","idle":[{}],"inCall":[{}]}}"#,
                    list(&online),
                    list(&joined[..joined.len() / 2])
                );
                frames.push(welcome);
            }
            snapshot.extend(&joined);
            if random(8) == 0 {
                snapshot.truncate(random(snapshot.len().max(1)));
            }
        }
        let mut memo = ListMemo::new(4);
        let (mut shared, mut each) = (vec![View::new(clients); 5], vec![View::new(clients); 5]);
        for (n, frame) in frames.iter().enumerate() {
            let who = random(shared.len());
            assert!(apply(&mut shared[who], "p", frame.as_bytes(), &mut memo).unwrap());
            assert!(apply(&mut each[who], "p", frame.as_bytes(), &mut ListMemo::new(0)).unwrap());
            assert_eq!(shared[who].bits, each[who].bits, "frame {n}: {frame}");
            assert_eq!(shared[who].count, each[who].count);
        }
        assert!(memo.reused_items > 10_000, "most items were shared: {}", memo.reused_items);
        let last_snapshot = format!("{},", list(&snapshot));
        assert!(each.iter().any(|view| view.count > 100), "the views filled");
        assert!(memo.reuse(b"p", clients, last_snapshot.as_bytes()).is_some(), "lists were remembered");
    }

    #[test]
    fn tutorial_lists_replace_the_view() {
        let mut view = View::new(2);
        assert!(apply(
            &mut view,
            "t",
            br#"{"type":"RenderUserList","userlist":["t0","t1","x"]}"#,
            &mut ListMemo::new(0)
        )
        .unwrap());
        assert!(view.complete());
        assert!(
            apply(&mut view, "t", br#"{"type":"RenderUserList","userlist":["t1"]}"#, &mut ListMemo::new(0)).unwrap()
        );
        assert_eq!(view.count(), 1);
        // An escaped name is not for the fast path: serde reads the list, from the view as it was.
        let escaped = br#"{"type":"RenderUserList","userlist":["t0","t\u0031"]}"#;
        assert!(apply(&mut view, "t", escaped, &mut ListMemo::new(0)).unwrap());
        assert!(view.complete());
        // Lists of many names are shared between the clients of a thread, as v1's are.
        let long: Vec<String> = (0..300).map(|i| format!("\"u{i}\"")).collect();
        let message = format!(r#"{{"type":"RenderUserList","userlist":[{}]}}"#, long.join(","));
        let mut memo = ListMemo::new(4);
        let mut views = vec![View::new(300); 3];
        for view in &mut views {
            assert!(apply(view, "u", message.as_bytes(), &mut memo).unwrap());
            assert!(view.complete());
        }
        assert!(memo.reused_items >= 600, "{}", memo.reused_items);
    }

    #[test]
    fn broken_presence_is_an_error() {
        let mut view = View::new(2);
        assert!(apply(&mut view, "p", br#"{"type":"presence","joined":7}"#, &mut ListMemo::new(0)).is_err());
    }
}
