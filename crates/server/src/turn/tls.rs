//! STUN/TURN over TLS (`turns:`): TCP connections, a TLS handshake, then the same per-connection handling as TCP.

use std::time::Duration;

use switchboard_turn::server::{FiveTuple, Transport};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts `turns:` connections until the task is aborted.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, context: super::tcp::StreamContext) {
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
        let Some(admitted) = context.admit(client) else { continue };
        let _ = stream.set_nodelay(true);
        let (acceptor, context) = (acceptor.clone(), context.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                return;
            };
            let tuple = FiveTuple { client, server, transport: Transport::Tls };
            super::tcp::connection(tls, tuple, context).await;
            drop(admitted);
        });
    }
}
