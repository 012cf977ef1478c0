//! Parsed name lists shared by the simulated clients of one thread.
//!
//! In a login storm every client receives the same lists: each tick's `presence` delta is byte-for-byte the same for
//! everyone, and every `welcome` carries the server's cached snapshot with the new user's own name appended. Parsing
//! them once per client is 100 million names for 10,000 clients, and made the load generator, not the server, the
//! bottleneck of the storm. So a client first compares a list with the lists parsed last (in full, byte by byte) and
//! takes the parsed items of the longest common prefix; only the rest is parsed. The result is exactly that of
//! parsing: the items of equal bytes are equal, and an item's outcome depends only on its own bytes and what precedes
//! them. What is saved is only repeated work of the tool; every client still receives and reads all its bytes.

/// One parsed list: its bytes from just after `[`, and for each item the offset just past its closing quote and the
/// client number it names (`u32::MAX` for a name that is not one of the storm's).
struct ParsedList {
    prefix: Vec<u8>,
    clients: usize,
    bytes: Vec<u8>,
    items: Vec<(u32, u32)>,
    /// `members[k]`: the client numbers among the first `(k + 1) * CHECKPOINT` items, as a bit set (a whole
    /// snapshot applied with a few hundred word operations instead of an operation per name).
    members: Vec<Vec<u64>>,
}

/// Items between two bit sets of [`ParsedList::members`].
const CHECKPOINT: usize = 512;

/// A few recently parsed lists; `capacity` 0 turns sharing off.
pub struct ListMemo {
    lists: Vec<ParsedList>,
    capacity: usize,
    /// Items taken from remembered lists so far.
    pub reused_items: u64,
    /// The items of the list being parsed, kept between lists for its allocation.
    scratch: Vec<(u32, u32)>,
}

/// A list that brought fewer new items than this is not remembered: short lists cost about as much to compare as to
/// parse, and a `welcome` (snapshot plus one name) should not replace its snapshot.
const MIN_ITEMS: usize = 32;

/// The marker of an item that names nobody of this storm.
pub const NOBODY: u32 = u32::MAX;

impl ListMemo {
    pub fn new(capacity: usize) -> Self {
        Self { lists: Vec::new(), capacity, reused_items: 0, scratch: Vec::new() }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The longest run of whole items at the start of `rest` (the bytes after a list's `[`) that a remembered list
    /// of the same storm starts with.
    pub fn reuse(&mut self, prefix: &[u8], clients: usize, rest: &[u8]) -> Option<Reuse<'_>> {
        let mut best: Option<(usize, usize)> = None;
        for (i, list) in self.lists.iter().enumerate() {
            if list.clients != clients || list.prefix != prefix {
                continue;
            }
            let common = common_prefix(&list.bytes, rest);
            let whole = list.items.partition_point(|&(end, _)| end as usize <= common);
            if whole > best.map_or(0, |(_, whole)| whole) {
                best = Some((i, whole));
            }
        }
        let (list, whole) = best?;
        self.reused_items += whole as u64;
        let parsed = &self.lists[list];
        let items = &parsed.items[..whole];
        let end = items.last().map_or(0, |&(end, _)| end as usize);
        let sets = whole / CHECKPOINT;
        let members = sets.checked_sub(1).and_then(|k| parsed.members.get(k)).map(Vec::as_slice);
        let after = if members.is_some() { &items[sets * CHECKPOINT..] } else { items };
        Some(Reuse { from: Reused { list, items: whole }, end, members, items: after })
    }

    /// A scratch vector for the items of a list being parsed (handed back with [`ListMemo::record`]).
    pub fn scratch(&mut self) -> Vec<(u32, u32)> {
        let mut items = std::mem::take(&mut self.scratch);
        items.clear();
        items
    }

    /// Remembers a list just parsed (its bytes up to and without `]`, the items taken from a remembered list, if
    /// any, and those parsed after them) when it brought at least [`MIN_ITEMS`] new items: a `welcome` that only
    /// appends its user's name to a remembered snapshot leaves the snapshot as the one to compare the next with,
    /// and a snapshot that grew by a tick's logins replaces it. The oldest list goes beyond the capacity. Takes the
    /// scratch vector back either way.
    pub fn record(
        &mut self,
        prefix: &[u8],
        clients: usize,
        bytes: &[u8],
        reused: Option<Reused>,
        parsed: Vec<(u32, u32)>,
    ) {
        if self.capacity == 0 || parsed.len() < MIN_ITEMS || u32::try_from(bytes.len()).is_err() {
            self.scratch = parsed;
            return;
        }
        let items = match reused.and_then(|r| self.lists.get(r.list)?.items.get(..r.items)) {
            Some(reused) => [reused, parsed.as_slice()].concat(),
            None => parsed.clone(),
        };
        self.scratch = parsed;
        if self.lists.len() >= self.capacity {
            self.lists.remove(0);
        }
        let mut members = Vec::with_capacity(items.len() / CHECKPOINT);
        let mut set = vec![0u64; clients.div_ceil(64)];
        for chunk in items.chunks_exact(CHECKPOINT) {
            for &(_, index) in chunk.iter().filter(|&&(_, index)| index != NOBODY) {
                if let Some(word) = set.get_mut(index as usize / 64) {
                    *word |= 1 << (index % 64);
                }
            }
            members.push(set.clone());
        }
        self.lists.push(ParsedList { prefix: prefix.to_vec(), clients, bytes: bytes.to_vec(), items, members });
    }
}

/// What [`ListMemo::reuse`] found: the client numbers of the items in common, as a bit set for most of them
/// (`members`, if any) and as items for the rest, and where the items in common end in the new list.
pub struct Reuse<'a> {
    pub from: Reused,
    pub end: usize,
    pub members: Option<&'a [u64]>,
    pub items: &'a [(u32, u32)],
}

/// Which remembered list a [`ListMemo::reuse`] took items from, and how many.
#[derive(Debug, Clone, Copy)]
pub struct Reused {
    list: usize,
    items: usize,
}

/// The length of the common prefix of `a` and `b`: 64-byte blocks compared with `==` (a vectorised `bcmp`), then
/// the differing block byte by byte.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let len = a.len().min(b.len());
    let mut at = 0;
    while at + BLOCK <= len && a[at..at + BLOCK] == b[at..at + BLOCK] {
        at += BLOCK;
    }
    at + a[at..len].iter().zip(&b[at..len]).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn common_prefix_of_each_length() {
        let a: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        for cut in [0, 1, 63, 64, 65, 128, 200, 299] {
            let mut b = a.clone();
            b[cut] ^= 1;
            assert_eq!(common_prefix(&a, &b), cut);
            assert_eq!(common_prefix(&b, &a), cut);
        }
        assert_eq!(common_prefix(&a, &a), 300);
        assert_eq!(common_prefix(&a[..100], &a), 100);
        assert_eq!(common_prefix(b"", &a), 0);
    }

    #[test]
    fn reuse_stops_at_the_last_whole_item_in_common() {
        let mut memo = ListMemo::new(2);
        let items: Vec<(u32, u32)> = (0..80).map(|i| (10 * (i + 1), i)).collect();
        let bytes: Vec<u8> = (0..800u32).map(|i| b'a' + (i % 26) as u8).collect();
        memo.record(b"p", 100, &bytes, None, items.clone());
        let mut other = bytes.clone();
        other[255] = b'!';
        let reuse = memo.reuse(b"p", 100, &other).unwrap();
        let (from, end, reused) = (reuse.from, reuse.end, reuse.items);
        assert_eq!((end, reused.len()), (250, 25), "items end at 10, 20, .. 250; byte 255 differs");
        // Recorded as 25 items reused and 55 parsed: the same 80 items.
        memo.record(b"p", 100, &other, Some(from), items[25..].to_vec());
        assert_eq!(memo.lists[1].items, items);
        assert!(memo.reuse(b"q", 100, &other).is_none(), "another prefix");
        assert!(memo.reuse(b"p", 99, &other).is_none(), "another storm size");
        memo.record(b"p", 100, &bytes[..20], None, items[..2].to_vec());
        assert_eq!(memo.reuse(b"p", 100, &bytes).unwrap().from.items, 80, "short lists are not remembered");
        // Nor a list that adds fewer than MIN_ITEMS items to one remembered.
        let longer: Vec<u8> = (0..900u32).map(|i| b'a' + (i % 26) as u8).collect();
        let from = memo.reuse(b"p", 100, &longer).unwrap().from;
        let added: Vec<(u32, u32)> = (80..90).map(|i| (10 * (i + 1), i)).collect();
        memo.record(b"p", 100, &longer, Some(from), added);
        assert_eq!(memo.reuse(b"p", 100, &longer).unwrap().from.items, 80);
        assert!(ListMemo::new(0).reuse(b"p", 100, &bytes).is_none());
    }
}
