//! TLS: one certificate store for HTTPS/WSS and `turns:`, reloaded from its PEM files without a restart, or a
//! self-signed certificate made at start for trials on a LAN (browsers only give pages on secure origins the camera).
//!
//! The store is a rustls [`ResolvesServerCert`]: every handshake asks it for the current certificate, so swapping the
//! certificate affects new handshakes at once and established connections never.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Where the certificate comes from.
#[derive(Debug)]
enum Source {
    /// PEM files, watched for changes.
    Files {
        cert: PathBuf,
        key: PathBuf,
        /// The files' modification stamps at the last load attempt (successful or not): a broken file is reported
        /// once, and tried again when it changes.
        seen: Mutex<Option<Stamps>>,
    },
    /// Made at start; nothing to reload.
    SelfSigned,
}

/// Modification time and length of the certificate and key files.
type Stamps = [(Option<SystemTime>, u64); 2];

/// The certificate shared by every TLS listener.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    source: Source,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("source", &self.source).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl CertStore {
    /// Loads a certificate chain and its private key from PEM files; they are read again by [`CertStore::reload`].
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamps(cert, key);
        let certified = load(cert, key, &provider)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(certified)),
            source: Source::Files { cert: cert.to_owned(), key: key.to_owned(), seen: Mutex::new(Some(stamps)) },
            provider,
        }))
    }

    /// Makes a self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[String]) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(!names.is_empty(), "a self-signed certificate needs at least one name");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let generated = rcgen::generate_simple_self_signed(names.to_vec())
            .with_context(|| format!("cannot make a self-signed certificate for {names:?}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
        let certified = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider)
            .context("the self-signed certificate is not usable")?;
        Ok(Arc::new(Self { current: RwLock::new(Arc::new(certified)), source: Source::SelfSigned, provider }))
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The end-entity certificate new handshakes get.
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        self.current().cert.first().cloned()
    }

    /// SHA-256 of the end-entity certificate, as browsers show it (`AB:CD:...`).
    pub fn fingerprint(&self) -> String {
        self.certificate().map(|der| fingerprint(&der)).unwrap_or_default()
    }

    /// Whether the certificate is self-signed (made at start, never reloaded).
    pub fn is_self_signed(&self) -> bool {
        matches!(self.source, Source::SelfSigned)
    }

    /// Reads the files again and, if they hold a usable certificate and key, serves them from the next handshake on.
    /// On error the current certificate stays. Returns false for a self-signed certificate, which has no files.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let Source::Files { cert, key, seen } = &self.source else { return Ok(false) };
        *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stamps(cert, key));
        let certified = load(cert, key, &self.provider)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(certified);
        Ok(true)
    }

    /// Reloads if either file changed since the last attempt; None when nothing changed.
    pub fn reload_if_changed(&self) -> Option<anyhow::Result<bool>> {
        let Source::Files { cert, key, seen } = &self.source else { return None };
        let now = stamps(cert, key);
        if *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == Some(now) {
            return None;
        }
        Some(self.reload())
    }

    /// Polls the files every `interval` until `stopped` resolves, reloading when they change; errors are logged and
    /// keep the old certificate.
    pub async fn watch(self: Arc<Self>, interval: Duration, stopped: impl std::future::Future<Output = ()>) {
        if self.is_self_signed() {
            return;
        }
        tokio::pin!(stopped);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = &mut stopped => return,
            }
            match self.reload_if_changed() {
                None => {}
                Some(result) => self.log_reload(result),
            }
        }
    }

    /// Logs the outcome of a reload.
    pub fn log_reload(&self, result: anyhow::Result<bool>) {
        match result {
            Ok(true) => tracing::info!(fingerprint = %self.fingerprint(), "TLS certificate reloaded"),
            Ok(false) => {}
            Err(error) => tracing::error!("TLS certificate not reloaded, the previous one stays: {error:#}"),
        }
    }

    /// A server configuration for HTTPS and WSS (ALPN `http/1.1`).
    pub fn https_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = self.config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A server configuration for `turns:` (no ALPN: TURN clients may offer `stun.turn` or nothing).
    pub fn turn_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(Arc::new(self.config()?))
    }

    fn config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        Ok(rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone()))
    }
}

fn stamps(cert: &Path, key: &Path) -> Stamps {
    [cert, key].map(|path| match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    })
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls-cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls-cert: {} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "tls-cert: {} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls-key: {} is not a PEM private key", key.display()))?;
    CertifiedKey::from_der(chain, key, provider).context("tls-cert and tls-key do not form a usable certificate")
}

/// SHA-256 of a DER certificate as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut text = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

/// A rustls server configuration from a certificate chain and a private key, both PEM (loaded once, never reloaded).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    CertStore::from_files(cert, key)?.turn_config()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_look_like_browsers_show_them() {
        let text = fingerprint(b"abc");
        assert_eq!(text.len(), 95);
        assert!(text.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{text}");
    }

    #[test]
    fn self_signed_certificates_cover_their_names() {
        let store = CertStore::self_signed(&["localhost".into(), "192.0.2.7".into()]).unwrap();
        assert!(store.is_self_signed());
        assert!(store.certificate().is_some());
        assert!(!store.reload().unwrap());
        assert!(store.reload_if_changed().is_none());
        assert!(store.https_config().is_ok());
    }
}
