//! Batched UDP datagram IO: `recvmmsg` and `sendmmsg` (Linux), so that one system call moves up to [`BATCH`] datagrams.
//!
//! On loopback the kernel's per-packet work is the same either way; what batching saves is the fixed cost of every
//! system call (entry, file lookup, socket lock), which dominates a relay whose user-space work per packet is a table
//! lookup and a memcpy. `nix` wraps the two calls safely; the buffers here are allocated once per worker and reused,
//! so the relay path allocates nothing per packet.

#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per system call. Past ~32 the saving per datagram flattens while the latency of a batch grows.
pub const BATCH: usize = 32;

/// Room per received datagram: the largest UDP payload, so that nothing is ever truncated (pages of the buffer that
/// no datagram reaches are never touched, so they cost no memory).
pub const SLOT: usize = 65_536;

/// One received datagram of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Payload length.
    pub len: usize,
    /// Sender.
    pub from: SocketAddr,
}

/// Receive side: [`BATCH`] slots of [`SLOT`] bytes and their headers.
pub struct RecvBatch {
    buffer: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    received: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            buffer: vec![0; BATCH * SLOT],
            headers: MultiHeaders::preallocate(BATCH, None),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Reads up to [`BATCH`] datagrams without blocking. `Ok(0)` never happens: an empty socket is `WouldBlock`.
    /// Truncated datagrams and senders of other families are skipped, so the count may be below what was read.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        self.received.clear();
        let mut slots = self.buffer.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let results = recvmmsg(fd, &mut self.headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map_err(std::io::Error::from)?;
        let mut read = 0;
        for message in results {
            read += 1;
            let from = message.address.as_ref().and_then(socket_addr);
            match from {
                Some(from) if !message.flags.contains(MsgFlags::MSG_TRUNC) => {
                    self.received.push(Received { len: message.bytes, from });
                }
                // Keep slot indices aligned with the datagrams read.
                _ => self.received.push(Received { len: usize::MAX, from: SocketAddr::from(([0, 0, 0, 0], 0)) }),
            }
        }
        Ok(read)
    }

    /// The `index`th datagram of the last batch, unless it was unusable (truncated, unknown family).
    pub fn get(&self, index: usize) -> Option<(&[u8], SocketAddr)> {
        let received = self.received.get(index)?;
        let start = index * SLOT;
        let payload = self.buffer.get(start..start.checked_add(received.len)?)?;
        Some((payload, received.from))
    }
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    storage.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// Send side: datagrams queued for one socket, sent together by [`SendBatch::flush`].
pub struct SendBatch {
    /// One reusable buffer per queued datagram (they keep their capacity between batches).
    slots: Vec<Vec<u8>>,
    addresses: Vec<Option<SockaddrStorage>>,
    headers: MultiHeaders<SockaddrStorage>,
    queued: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    pub fn new() -> Self {
        Self {
            slots: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            addresses: vec![None; BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
            queued: 0,
        }
    }

    /// The buffer the next datagram is written into; [`SendBatch::commit`] queues it.
    pub fn next_buffer(&mut self) -> &mut Vec<u8> {
        // `queued < BATCH` always holds between calls: `commit` flushes a full batch.
        let index = self.queued.min(BATCH - 1);
        &mut self.slots[index]
    }

    /// Queues what was written into [`SendBatch::next_buffer`] for `to`; sends the batch when it is full.
    pub fn commit(&mut self, fd: RawFd, to: SocketAddr) {
        self.addresses[self.queued] = Some(SockaddrStorage::from(to));
        self.queued += 1;
        if self.queued == BATCH {
            self.flush(fd);
        }
    }

    /// Queues a copy of `payload` for `to`.
    pub fn push(&mut self, fd: RawFd, payload: &[u8], to: SocketAddr) {
        let buffer = self.next_buffer();
        buffer.clear();
        buffer.extend_from_slice(payload);
        self.commit(fd, to);
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Sends everything queued. A datagram the kernel refuses (unreachable peer, full socket buffer) is dropped, as
    /// the network would drop it; the rest still go out.
    pub fn flush(&mut self, fd: RawFd) {
        let mut sent = 0;
        // Each round sends at least one datagram or drops one, so this ends within `queued` rounds.
        while sent < self.queued {
            let pending = self.queued - sent;
            let iovs: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|index| [IoSlice::new(self.slots.get(sent + index).map_or(&[], |s| &s[..]))]);
            let result = sendmmsg(
                fd,
                &mut self.headers,
                iovs[..pending].iter(),
                &self.addresses[sent..self.queued],
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(results) => {
                    let count = results.count();
                    sent += count.max(1);
                }
                // A full send buffer will not drain within this call: drop what is left of the batch.
                Err(Errno::EAGAIN) => break,
                // This datagram cannot go (e.g. no route to its address): skip it, keep the others.
                Err(_) => sent += 1,
            }
        }
        self.queued = 0;
    }
}

/// The family of a socket address as nix sees it, for tests.
#[cfg(test)]
fn family_of(address: &SockaddrStorage) -> Option<nix::sys::socket::AddressFamily> {
    nix::sys::socket::SockaddrLike::family(address)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_round_trips_between_two_sockets() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let mut batch = SendBatch::new();
        for index in 0..(BATCH + 5) {
            batch.push(sender.as_raw_fd(), format!("datagram {index}").as_bytes(), to);
        }
        batch.flush(sender.as_raw_fd());
        assert!(batch.is_empty());

        let mut recv = RecvBatch::new();
        let mut seen = Vec::new();
        while seen.len() < BATCH + 5 {
            let count = recv.recv(receiver.as_raw_fd()).unwrap();
            for index in 0..count {
                let (payload, from) = recv.get(index).unwrap();
                assert_eq!(from, sender.local_addr().unwrap());
                seen.push(String::from_utf8(payload.to_vec()).unwrap());
            }
        }
        let expected: Vec<String> = (0..(BATCH + 5)).map(|index| format!("datagram {index}")).collect();
        assert_eq!(seen, expected, "order and content survive batching");
        let error = recv.recv(receiver.as_raw_fd()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn an_unsendable_datagram_costs_only_itself() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let mut batch = SendBatch::new();
        batch.push(sender.as_raw_fd(), b"before", to);
        // An IPv6 destination on an IPv4 socket fails with EAFNOSUPPORT/EINVAL.
        batch.push(sender.as_raw_fd(), b"wrong family", "[::1]:9".parse().unwrap());
        batch.push(sender.as_raw_fd(), b"after", to);
        assert_eq!(family_of(&SockaddrStorage::from(to)), Some(nix::sys::socket::AddressFamily::Inet));
        batch.flush(sender.as_raw_fd());
        let mut recv = RecvBatch::new();
        let mut seen = Vec::new();
        for _ in 0..100 {
            match recv.recv(receiver.as_raw_fd()) {
                Ok(count) => (0..count).for_each(|index| seen.push(recv.get(index).unwrap().0.to_vec())),
                Err(_) if seen.len() == 2 => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(seen, vec![b"before".to_vec(), b"after".to_vec()]);
    }
}
