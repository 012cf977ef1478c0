//! What a WebSocket connection reads from and writes to: a plain TCP stream, or TLS over one.
//!
//! The connection task works with readiness and non-blocking reads and writes (see `connection`), so that it can read
//! into a buffer shared by its worker thread. TLS keeps that shape by driving rustls' sans-IO `ServerConnection`
//! directly over the socket: TLS records are read with `try_read`, decrypted into the caller's buffer, and written
//! with `try_write`, so a TLS connection adds only rustls' own state (a few KiB) to a plain one.

use std::future::Future;
use std::io::{self, Read as _, Write as _};

use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

/// A byte stream with readiness and non-blocking reads and writes.
pub trait Transport: Send + 'static {
    /// Waits until the stream may be read from or written to, as asked.
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;
    /// Reads what is available without waiting (`WouldBlock` when nothing is); `Ok(0)` at the end of the stream.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what the stream takes without waiting (`WouldBlock` when it takes nothing).
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Whether bytes accepted by `try_write` still wait to go out (encrypted TLS records).
    fn wants_write(&self) -> bool {
        false
    }
    /// Sends what `wants_write` reports, as far as the socket takes it (`WouldBlock` when it takes nothing).
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Ends the stream in the write direction (TLS: a `close_notify` first), so the peer reads an orderly end.
    fn close_write(&mut self);
    /// The TCP socket underneath.
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        TcpStream::ready(self, interest)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A read that does not fill the buffer has emptied the socket's receive queue, so the next read could only
        // return WouldBlock: one wasted system call per readable event, a third of the server's system calls under
        // relay load. So a short read also clears Tokio's readiness, as Tokio's own `poll_read` does, and the next
        // read fails without a system call. `try_io` takes the readiness tick before the closure reads and clears
        // only that tick when the closure says WouldBlock: data or a FIN arriving during the read is a new edge
        // with a new tick, so no wake-up is lost (and the closed states are never cleared).
        let capacity = buf.len();
        let mut read = None;
        let outcome = self.try_io(Interest::READABLE, || {
            let socket = socket2::SockRef::from(&*self);
            let n = (&*socket).read(buf)?;
            read = Some(n);
            if n > 0 && n < capacity {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (read, outcome) {
            (Some(n), _) => Ok(n),
            (None, Err(error)) => Err(error),
            // The closure returns Ok only after a read.
            (None, Ok(())) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn close_write(&mut self) {
        let _ = socket2::SockRef::from(&*self).shutdown(std::net::Shutdown::Write);
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

/// Blocking-style IO over a non-blocking socket, for rustls: `WouldBlock` passes through.
struct TryIo<'a>(&'a TcpStream);

impl io::Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS connection after its handshake: rustls' state and the socket.
pub struct TlsTransport {
    tcp: TcpStream,
    tls: rustls::ServerConnection,
    /// The last read returned data, so rustls may hold more already decrypted or received: the next `ready` for
    /// reading returns at once instead of waiting for the socket.
    maybe_buffered: bool,
}

impl TlsTransport {
    /// Wraps a connection whose handshake is done (the HTTP layer may have read from it already; what it left in
    /// rustls is read first).
    pub fn new(tcp: TcpStream, tls: rustls::ServerConnection) -> Self {
        Self { tcp, tls, maybe_buffered: true }
    }
}

impl Transport for TlsTransport {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        let buffered = self.maybe_buffered && interest.is_readable();
        let tcp = &self.tcp;
        async move {
            if buffered {
                return Ok(Ready::READABLE);
            }
            tcp.ready(interest).await
        }
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Records already in rustls' buffer are processed before the socket is read again: a record left
        // unprocessed while the socket has nothing new would otherwise wait for the peer's next write.
        let mut processed = false;
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => {
                    self.maybe_buffered = n > 0;
                    return Ok(n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            if !processed {
                processed = true;
                if let Err(error) = self.tls.process_new_packets() {
                    // rustls queued an alert saying why; send it if the socket takes it now.
                    let _ = self.tls.write_tls(&mut TryIo(&self.tcp));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
                // Post-handshake messages (key updates) may want an answer.
                if self.tls.wants_write() {
                    let _ = self.flush_pending();
                }
                continue;
            }
            match self.tls.read_tls(&mut TryIo(&self.tcp)) {
                // Ok(0) is the end of the TCP stream: processing it makes the reader report a clean or unclean end.
                Ok(_) => processed = false,
                Err(error) => {
                    self.maybe_buffered = false;
                    return Err(error);
                }
            }
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Take no more plaintext while encrypted bytes wait: rustls' buffer stays at one batch.
        self.flush_pending()?;
        if self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        match self.flush_pending() {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            _ => Ok(n),
        }
    }

    fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut TryIo(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    fn close_write(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_pending();
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write);
    }

    fn socket(&self) -> &TcpStream {
        &self.tcp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// Waits for readability as the connection task does, then reads once; `None` when nothing came within a second.
    async fn read_when_ready(stream: &mut TcpStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let ready = tokio::time::timeout(Duration::from_secs(1), Transport::ready(&*stream, Interest::READABLE)).await;
        ready.ok()?.ok()?;
        Some(Transport::try_read(stream, buf))
    }

    #[tokio::test]
    async fn a_short_read_spares_the_next_read_but_no_later_data_or_end() {
        let (mut server, mut client) = pair().await;
        let mut buf = vec![0; 4096];

        client.write_all(b"first").await.unwrap();
        assert_eq!(read_when_ready(&mut server, &mut buf).await.unwrap().unwrap(), 5);
        // The short read emptied the queue: the next read says so without asking the kernel.
        let again = Transport::try_read(&mut server, &mut buf).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);

        // Data after a short read is a new readiness event, not lost.
        client.write_all(b"second").await.unwrap();
        assert_eq!(read_when_ready(&mut server, &mut buf).await.unwrap().unwrap(), 6);
        assert_eq!(&buf[..6], b"second");

        // So is the end of the stream, even when it comes right behind data.
        client.write_all(b"last").await.unwrap();
        drop(client);
        let mut got = Vec::new();
        loop {
            match read_when_ready(&mut server, &mut buf).await.expect("readiness for the data and the end") {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(got, b"last");
    }

    #[tokio::test]
    async fn a_full_read_leaves_the_rest_readable() {
        let (mut server, mut client) = pair().await;
        client.write_all(&[7; 100]).await.unwrap();
        let mut small = [0; 60];
        let mut total = 0;
        while total < 100 {
            total += read_when_ready(&mut server, &mut small).await.expect("the rest stays readable").unwrap();
        }
        assert_eq!(total, 100);
    }
}
