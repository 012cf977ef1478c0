//! TLS helpers of the tests: certificates in temporary files, a client configuration that trusts them, and a
//! WebSocket over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;

use super::T;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into a directory of its own.
pub struct CertFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl CertFiles {
    /// A fresh certificate in a fresh directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let mut files = Self { dir, cert, key, der: CertificateDer::from(Vec::new()) };
        files.der = files.rotate();
        files
    }

    /// Writes a new certificate and key over the files; returns the new certificate.
    pub fn rotate(&mut self) -> CertificateDer<'static> {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        std::fs::write(&self.cert, generated.cert.pem()).unwrap();
        std::fs::write(&self.key, generated.key_pair.serialize_pem()).unwrap();
        self.der = generated.cert.der().clone();
        self.der.clone()
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// A client configuration that trusts exactly `roots`.
pub fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// A TLS connection to `addr` for the name 127.0.0.1.
pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::time::timeout(T, TcpStream::connect(addr)).await??;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(T, connector.connect(name, tcp)).await?
}

/// The certificate the server presented on `stream`.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// A WebSocket over TLS to `wss://addr/ws`.
pub async fn wss(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> WebSocketStream<TlsStream<TcpStream>> {
    let stream = connect(addr, config).await.unwrap();
    let url = format!("wss://{addr}/ws");
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::client_async(url, stream)).await.unwrap().unwrap();
    ws
}

/// Logs in as `name` over WSS and returns the `welcome`, with the socket.
pub async fn wss_login(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> (serde_json::Value, WebSocketStream<TlsStream<TcpStream>>) {
    use futures_util::{SinkExt, StreamExt};
    let mut ws = wss(addr, config).await;
    let login = serde_json::json!({"type": "login", "id": 1, "name": name}).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::text(login)).await.unwrap();
    let welcome = tokio::time::timeout(T, async {
        loop {
            let frame = ws.next().await.expect("the connection ended before welcome").unwrap();
            if let Ok(text) = frame.to_text() {
                let value: serde_json::Value = serde_json::from_str(text).unwrap();
                if value["type"] == "welcome" {
                    return value;
                }
                assert_ne!(value["type"], "error", "{value}");
            }
        }
    })
    .await
    .expect("no welcome in time");
    (welcome, ws)
}
