//! STUN/TURN over TLS (`turns:`): TCP connections, a TLS handshake, then the same per-connection handling as TCP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_turn::server::{FiveTuple, Shared, Transport};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts `turns:` connections until the task is aborted.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>, relay_ip: IpAddr) {
    let Ok(server) = listener.local_addr() else { return };
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "TURN TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                return;
            };
            let tuple = FiveTuple { client, server, transport: Transport::Tls };
            super::tcp::connection(tls, tuple, shared, relay_ip).await;
        });
    }
}
