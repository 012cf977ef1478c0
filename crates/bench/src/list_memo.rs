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
}

/// A few recently parsed lists; `capacity` 0 turns sharing off.
pub struct ListMemo {
    lists: Vec<ParsedList>,
    capacity: usize,
    /// Items taken from remembered lists so far.
    pub reused_items: u64,
}

/// Lists shorter than this are parsed each time: comparing costs about as much.
const MIN_ITEMS: usize = 32;

/// The marker of an item that names nobody of this storm.
pub const NOBODY: u32 = u32::MAX;

impl ListMemo {
    pub fn new(capacity: usize) -> Self {
        Self { lists: Vec::new(), capacity, reused_items: 0 }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The longest run of whole items at the start of `rest` (the bytes after a list's `[`) that a remembered list
    /// of the same storm starts with: the offset just past the last of them, and the items.
    pub fn reuse(&mut self, prefix: &[u8], clients: usize, rest: &[u8]) -> Option<(usize, &[(u32, u32)])> {
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
        let (i, whole) = best?;
        self.reused_items += whole as u64;
        let list = &self.lists[i];
        let items = &list.items[..whole];
        Some((items.last().map_or(0, |&(end, _)| end as usize), items))
    }

    /// Remembers a list just parsed (its bytes up to and without `]`), replacing the oldest beyond the capacity.
    pub fn record(&mut self, prefix: &[u8], clients: usize, bytes: &[u8], items: Vec<(u32, u32)>) {
        if self.capacity == 0 || items.len() < MIN_ITEMS || u32::try_from(bytes.len()).is_err() {
            return;
        }
        if self.lists.len() >= self.capacity {
            self.lists.remove(0);
        }
        self.lists.push(ParsedList { prefix: prefix.to_vec(), clients, bytes: bytes.to_vec(), items });
    }
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
        let items: Vec<(u32, u32)> = (0..40).map(|i| (10 * (i + 1), i)).collect();
        let bytes: Vec<u8> = (0..400u32).map(|i| b'a' + (i % 26) as u8).collect();
        memo.record(b"p", 100, &bytes, items.clone());
        let mut other = bytes.clone();
        other[255] = b'!';
        let (end, reused) = memo.reuse(b"p", 100, &other).unwrap();
        assert_eq!((end, reused.len()), (250, 25), "items end at 10, 20, .. 250; byte 255 differs");
        assert!(memo.reuse(b"q", 100, &other).is_none(), "another prefix");
        assert!(memo.reuse(b"p", 99, &other).is_none(), "another storm size");
        memo.record(b"p", 100, &bytes[..20], items[..2].to_vec());
        assert_eq!(memo.reuse(b"p", 100, &bytes).unwrap().1.len(), 40, "short lists are not remembered");
        assert!(ListMemo::new(0).reuse(b"p", 100, &bytes).is_none());
    }
}
