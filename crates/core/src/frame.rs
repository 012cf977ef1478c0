//! The bytes of an outgoing text frame, and which of them many frames share.
//!
//! Presence lists are the bulk of what a server sends in a login storm: every tick's delta goes to every user, and
//! every `welcome` carries the list of everyone online. The core serialises each such list once per tick and hands
//! the same bytes to every connection; marking them as [`Shared`] lets the transport also *encode* them once (a
//! WebSocket connection with `permessage-deflate` compresses a shared list once for all its readers, not once per
//! reader). A `welcome` is the connection's own bytes around the shared lists, hence [`OutFrame::Pieces`].

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

/// Bytes that go to many connections, with room for the transport's encoding of them, made once.
#[derive(Debug, Clone)]
pub struct Shared(Arc<SharedBytes>);

#[derive(Debug)]
struct SharedBytes {
    bytes: Bytes,
    encoded: OnceLock<Bytes>,
}

impl Shared {
    /// Shares these bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(Arc::new(SharedBytes { bytes: bytes.into(), encoded: OnceLock::new() }))
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0.bytes
    }

    /// The transport's encoding of the bytes: `encode` runs for the first caller only, later callers (on any thread)
    /// get its result. Every caller must pass the same encoding.
    pub fn encoded(&self, encode: impl FnOnce(&[u8]) -> Bytes) -> &Bytes {
        self.0.encoded.get_or_init(|| encode(&self.0.bytes))
    }
}

/// One piece of a [`OutFrame::Pieces`] frame.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Bytes of this frame only.
    Own(Bytes),
    /// Bytes this frame shares with others.
    Shared(Shared),
}

impl Piece {
    /// The piece's bytes, and whether they are shared.
    pub fn parts(&self) -> (&[u8], Option<&Shared>) {
        match self {
            Piece::Own(bytes) => (bytes, None),
            Piece::Shared(shared) => (shared.bytes(), Some(shared)),
        }
    }
}

/// A complete JSON text for one connection.
#[derive(Debug, Clone)]
pub enum OutFrame {
    /// Bytes for this connection only (or shared without any use for encoding them once: small ones).
    Own(Bytes),
    /// The same bytes go to many connections (a presence delta).
    Shared(Shared),
    /// The concatenation of these pieces (a `welcome`: the connection's own fields around the shared lists).
    Pieces(Box<[Piece]>),
}

impl OutFrame {
    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        match self {
            OutFrame::Own(bytes) => bytes.len(),
            OutFrame::Shared(shared) => shared.bytes().len(),
            OutFrame::Pieces(pieces) => pieces.iter().map(|piece| piece.parts().0.len()).sum(),
        }
    }

    /// Whether the text is empty (it never is: frames are JSON objects).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `each` with the frame's pieces in order.
    pub fn for_each_piece(&self, mut each: impl FnMut(&[u8], Option<&Shared>)) {
        match self {
            OutFrame::Own(bytes) => each(bytes, None),
            OutFrame::Shared(shared) => each(shared.bytes(), Some(shared)),
            OutFrame::Pieces(pieces) => {
                for piece in pieces.iter() {
                    let (bytes, shared) = piece.parts();
                    each(bytes, shared);
                }
            }
        }
    }

    /// The whole text in one buffer (a copy only for `Pieces`).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            OutFrame::Own(bytes) => bytes.clone(),
            OutFrame::Shared(shared) => shared.bytes().clone(),
            OutFrame::Pieces(_) => {
                let mut joined = BytesMut::with_capacity(self.len());
                self.for_each_piece(|bytes, _| joined.extend_from_slice(bytes));
                joined.freeze()
            }
        }
    }
}

impl From<Vec<u8>> for OutFrame {
    fn from(bytes: Vec<u8>) -> Self {
        OutFrame::Own(Bytes::from(bytes))
    }
}

impl From<Bytes> for OutFrame {
    fn from(bytes: Bytes) -> Self {
        OutFrame::Own(bytes)
    }
}

/// Frames are equal when their texts are, however they are cut into pieces.
impl PartialEq for OutFrame {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.to_bytes() == other.to_bytes()
    }
}

impl Eq for OutFrame {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_into_the_text_and_compare_by_it() {
        let list = Shared::new(&b"[\"a\",\"b\""[..]);
        let frame = OutFrame::Pieces(
            vec![
                Piece::Own(Bytes::from_static(b"{\"idle\":")),
                Piece::Shared(list.clone()),
                Piece::Own(Bytes::from_static(b"]}")),
            ]
            .into_boxed_slice(),
        );
        assert_eq!(frame.len(), 18);
        assert_eq!(&frame.to_bytes()[..], b"{\"idle\":[\"a\",\"b\"]}");
        assert_eq!(frame, OutFrame::from(b"{\"idle\":[\"a\",\"b\"]}".to_vec()));
        let mut shared_pieces = 0;
        frame.for_each_piece(|_, shared| shared_pieces += usize::from(shared.is_some()));
        assert_eq!(shared_pieces, 1);
    }

    #[test]
    fn a_shared_encoding_is_made_once() {
        let shared = Shared::new(&b"abc"[..]);
        let copy = shared.clone();
        assert_eq!(&shared.encoded(|bytes| Bytes::from(bytes.to_ascii_uppercase()))[..], b"ABC");
        assert_eq!(&copy.encoded(|_| unreachable!("encoded already"))[..], b"ABC");
    }
}
