//! TLS for the public listeners and the gateway-regiond mesh, with rustls.
//!
//! - [`TlsConfig`] (`[tls]`) and [`MeshTlsConfig`] (`[mesh_tls]`): the PEM
//!   files, read and checked at start-up so a bad file stops the process
//!   with the file's name instead of failing the first handshake.
//! - [`ReloadingCert`]: the certificate and key a server (or a mesh client)
//!   presents, re-read on SIGHUP and when the files change, so certificates
//!   rotate without a restart. A bad new file keeps the old certificate.
//! - [`server_config`], [`MeshTls`]: the rustls configurations. The mesh
//!   requires a client certificate that chains to the mesh CA on both
//!   sides: a stolen address or a plaintext client gets nothing.
//! - [`TlsIncoming`]: a listener's handshakes, done off the accept loop so
//!   one slow client delays nobody, each refused one logged with the peer
//!   and the reason.
//!
//! The crypto provider is always `ring`, named explicitly: it is what
//! async-nats already builds, and because reqwest (for OpenStack) enables
//! aws-lc-rs in the same rustls, rustls cannot pick a default by itself.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::coalesce::Coalesced;

/// ALPN for gRPC: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];

/// ALPN for the HTTP/JSON listener: HTTP/2, then HTTP/1.1.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How long a client may take over its handshake before it is dropped: a
/// client that opens connections and never speaks must not pile them up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default interval between two looks at the certificate files.
const DEFAULT_RELOAD_INTERVAL_MS: u64 = 5_000;

/// The provider every configuration here is built with.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

// ---------------------------------------------------------------------------
// Errors

/// What went wrong with a TLS setting or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// Some of the files a section needs are set and some are not.
    Incomplete,
    /// A file cannot be read.
    Unreadable,
    /// A file holds no PEM certificate or key where one was expected.
    BadPem,
    /// The private key is not the key of the certificate.
    KeyMismatch,
    /// rustls refused the certificates or the settings.
    Invalid,
}

/// A TLS setting or file that cannot be used; the message names the file.
#[derive(Debug)]
pub struct TlsError {
    kind: TlsErrorKind,
    message: String,
    source: Option<crate::BoxError>,
}

impl TlsError {
    fn new(kind: TlsErrorKind, message: impl Into<String>) -> TlsError {
        TlsError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn with(mut self, source: impl Into<crate::BoxError>) -> TlsError {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

// ---------------------------------------------------------------------------
// Settings

/// `[tls]`: the certificate a public listener presents. Both files or
/// neither; neither means plaintext.
///
/// ```toml
/// [tls]
/// cert_file = "/etc/nordlys/tls/gateway.crt"   # PEM chain, leaf first
/// key_file = "/etc/nordlys/tls/gateway.key"    # PEM private key (PKCS#8, PKCS#1 or SEC1)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM.
    pub key_file: Option<PathBuf>,
    /// How often the files are looked at for a new certificate, in
    /// milliseconds (SIGHUP reloads at once).
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            cert_file: None,
            key_file: None,
            reload_interval_ms: DEFAULT_RELOAD_INTERVAL_MS,
        }
    }
}

impl TlsConfig {
    /// Reads and checks the certificate and key; `None` when the section
    /// is empty (plaintext).
    pub fn load(&self) -> Result<Option<Arc<ReloadingCert>>, TlsError> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => ReloadingCert::load(cert, key).map(Some),
            (Some(cert), None) => Err(TlsError::new(
                TlsErrorKind::Incomplete,
                format!(
                    "cert_file {} is set but key_file is not: set both, or neither for plaintext",
                    cert.display()
                ),
            )),
            (None, Some(key)) => Err(TlsError::new(
                TlsErrorKind::Incomplete,
                format!(
                    "key_file {} is set but cert_file is not: set both, or neither for plaintext",
                    key.display()
                ),
            )),
        }
    }

    /// How often the files are looked at.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms.max(100))
    }
}

/// `[mesh_tls]`: mutual TLS on the direct gRPC route between gateways and
/// regiond. All three files or none; none means plaintext.
///
/// ```toml
/// [mesh_tls]
/// ca_file = "/etc/nordlys/mesh/ca.crt"      # the mesh CA: peers must chain to it
/// cert_file = "/etc/nordlys/mesh/node.crt"  # this process's certificate, PEM
/// key_file = "/etc/nordlys/mesh/node.key"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshTlsConfig {
    /// The mesh CA certificates, PEM: a peer's certificate must chain to one.
    pub ca_file: Option<PathBuf>,
    /// This process's certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM.
    pub key_file: Option<PathBuf>,
    /// How often the certificate and key files are looked at, in
    /// milliseconds (SIGHUP reloads at once). The CA is read at start only.
    pub reload_interval_ms: u64,
}

impl Default for MeshTlsConfig {
    fn default() -> MeshTlsConfig {
        MeshTlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            reload_interval_ms: DEFAULT_RELOAD_INTERVAL_MS,
        }
    }
}

impl MeshTlsConfig {
    /// Reads and checks the CA, certificate and key; `None` when the
    /// section is empty (plaintext).
    pub fn load(&self) -> Result<Option<MeshTls>, TlsError> {
        match (&self.ca_file, &self.cert_file, &self.key_file) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(MeshTls {
                roots: load_roots(ca)?,
                cert: ReloadingCert::load(cert, key)?,
            })),
            _ => {
                let set = |p: &Option<PathBuf>| match p {
                    Some(p) => p.display().to_string(),
                    None => "(not set)".to_string(),
                };
                Err(TlsError::new(
                    TlsErrorKind::Incomplete,
                    format!(
                        "ca_file, cert_file and key_file go together (or none for plaintext): ca_file {}, cert_file {}, key_file {}",
                        set(&self.ca_file),
                        set(&self.cert_file),
                        set(&self.key_file)
                    ),
                ))
            }
        }
    }

    /// How often the files are looked at.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms.max(100))
    }
}

// ---------------------------------------------------------------------------
// Files

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError::new(
            TlsErrorKind::Unreadable,
            format!("cannot read the {what} {}", path.display()),
        )
        .with(e)
    })
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                TlsErrorKind::BadPem,
                format!("bad PEM in the certificate file {}", path.display()),
            )
            .with(e)
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            TlsErrorKind::BadPem,
            format!("no certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        TlsError::new(
            TlsErrorKind::BadPem,
            format!("no usable private key in {}", path.display()),
        )
        .with(e)
    })
}

/// The certificate of `cert_pem` with the key of `key_pem`, checked to
/// belong together.
fn certified_key(
    cert_pem: &[u8],
    cert_path: &Path,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certs(cert_pem, cert_path)?;
    let key = parse_key(key_pem, key_path)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        let kind = match e {
            rustls::Error::InconsistentKeys(_) => TlsErrorKind::KeyMismatch,
            _ => TlsErrorKind::Invalid,
        };
        TlsError::new(
            kind,
            format!(
                "the key {} does not go with the certificate {}",
                key_path.display(),
                cert_path.display()
            ),
        )
        .with(e)
    })
}

/// The CA certificates of `path`, as a root store.
fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let pem = read(path, "CA file")?;
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(&pem, path)? {
        roots.add(cert).map_err(|e| {
            TlsError::new(
                TlsErrorKind::Invalid,
                format!("unusable CA certificate in {}", path.display()),
            )
            .with(e)
        })?;
    }
    Ok(Arc::new(roots))
}

// ---------------------------------------------------------------------------
// The reloading certificate

/// A certificate and key from PEM files, which new handshakes pick up when
/// [`ReloadingCert::reload`] (or the [`ReloadingCert::watch`] task) has
/// read new ones. Connections already open keep the one they began with.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The bytes last read from (cert, key), good or bad: a poll that finds
    /// them unchanged does nothing, so a bad file is reported once.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Reads `cert_file` and `key_file`; fails, naming the file, when
    /// either is unreadable, holds no PEM certificate or key, or the key is
    /// not the certificate's.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let cert_pem = read(cert_file, "certificate file")?;
        let key_pem = read(key_file, "key file")?;
        let key = certified_key(&cert_pem, cert_file, &key_pem, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// The certificate and key new handshakes use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again and, when they hold a good certificate and
    /// key, uses them from now on. Returns whether the files changed. On an
    /// error the current certificate stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.refresh(true)
    }

    /// Like [`ReloadingCert::reload`], but does nothing (and returns
    /// `Ok(false)`) when the files hold the bytes last read, good or bad.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.refresh(false)
    }

    fn refresh(&self, always: bool) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_file, "certificate file")?;
        let key_pem = read(&self.key_file, "key file")?;
        let changed = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let changed = seen.0 != cert_pem || seen.1 != key_pem;
            if !changed && !always {
                return Ok(false);
            }
            *seen = (cert_pem.clone(), key_pem.clone());
            changed
        };
        let key = certified_key(&cert_pem, &self.cert_file, &key_pem, &self.key_file)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(key);
        Ok(changed)
    }

    /// Reloads on SIGHUP and when the files change (looked at every
    /// `every`), logging each new certificate and each file it refuses.
    /// The SIGHUP handler is installed before this returns, so a SIGHUP
    /// sent afterwards reloads instead of ending the process. The task
    /// ends once the certificate is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let cert: Weak<ReloadingCert> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            // A file that stays bad (or missing) is reported once per change.
            let mut last_error: Option<String> = None;
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = signalled => true,
                };
                let Some(cert) = cert.upgrade() else { return };
                match cert.refresh(forced) {
                    Ok(false) if !forced => {}
                    Ok(changed) => {
                        last_error = None;
                        tracing::info!(
                            cert_file = %cert.cert_file.display(),
                            key_file = %cert.key_file.display(),
                            changed,
                            reason = if forced { "SIGHUP" } else { "files changed" },
                            "TLS certificate reloaded; new connections use it"
                        );
                    }
                    Err(e) => {
                        let message = e.to_string();
                        if forced || last_error.as_deref() != Some(message.as_str()) {
                            tracing::error!(
                                error = %message,
                                "cannot reload the TLS certificate; keeping the current one"
                            );
                        }
                        last_error = Some(message);
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// Configurations

/// A server configuration presenting `cert` (as it is at each handshake),
/// without client certificates, offering `alpn` ([`ALPN_GRPC`],
/// [`ALPN_HTTP`]).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn invalid(e: impl Into<crate::BoxError>) -> TlsError {
    TlsError::new(TlsErrorKind::Invalid, "cannot build the TLS configuration").with(e)
}

/// The mesh's trust: its CA, and this process's certificate.
#[derive(Debug, Clone)]
pub struct MeshTls {
    roots: Arc<RootCertStore>,
    cert: Arc<ReloadingCert>,
}

impl MeshTls {
    /// This process's certificate (to [`ReloadingCert::watch`]).
    pub fn cert(&self) -> &Arc<ReloadingCert> {
        &self.cert
    }

    /// regiond's side: presents our certificate and requires a client
    /// certificate that chains to the mesh CA and is valid now.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(invalid)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = ALPN_GRPC.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The gateway's side: verifies the server's certificate against the
    /// mesh CA (for the host the endpoint names, IP addresses included) and
    /// presents our certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(self.cert.clone());
        config.alpn_protocols = ALPN_GRPC.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------
// Serving

/// One accepted TLS connection: the handshake is done. Writes are
/// coalesced on the TCP socket underneath, as on plaintext connections:
/// rustls turns each write into records at once, and the socket holds them
/// back the same way.
#[derive(Debug)]
pub struct TlsConnection {
    io: tokio_rustls::server::TlsStream<Coalesced<TcpStream>>,
    peer: SocketAddr,
}

impl TlsConnection {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.io.get_ref().1.alpn_protocol()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.get_ref().0.connect_info()
    }
}

/// The TLS connections of a listener, handshakes done: the stream to give
/// tonic's `serve_with_incoming_shutdown` (or an axum listener). Each
/// handshake runs in its own task, bounded in time; a refused one is
/// logged (peer, reason) and never reaches the server. Dropping it closes
/// the listener.
#[derive(Debug)]
pub struct TlsIncoming {
    connections: mpsc::Receiver<TlsConnection>,
    local_addr: SocketAddr,
}

impl TlsIncoming {
    /// Accepts on `listener` with `config`; `name` names the listener in
    /// logs ("gRPC", "HTTP", "mesh gRPC").
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        name: &'static str,
    ) -> io::Result<TlsIncoming> {
        let local_addr = listener.local_addr()?;
        let (done, connections) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(accept_loop(listener, acceptor, done, name));
        Ok(TlsIncoming {
            connections,
            local_addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsConnection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().connections.poll_recv(cx).map(|c| c.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    done: mpsc::Sender<TlsConnection>,
    name: &'static str,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // The server stopped taking connections: close the port.
            () = done.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without it small gRPC frames wait on Nagle, tens of ms.
        let _ = tcp.set_nodelay(true);
        let (acceptor, done) = (acceptor.clone(), done.clone());
        tokio::spawn(async move {
            let handshake = acceptor.accept(Coalesced::new(tcp));
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(io)) => {
                    let _ = done.send(TlsConnection { io, peer }).await;
                }
                // Closed before a word: a TCP health probe, not a client.
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(listener = name, %peer, reason = %e, "connection closed during the TLS handshake");
                }
                Ok(Err(e)) => {
                    tracing::warn!(listener = name, %peer, reason = %e, "refused a TLS handshake");
                }
                Err(_) => {
                    tracing::warn!(listener = name, %peer, reason = "no handshake within 10 s", "refused a TLS handshake");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn files(cert_pem: &str, key_pem: &str) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, key_pem).expect("write key");
        Files {
            _dir: dir,
            cert,
            key,
        }
    }

    fn der(cert: &ReloadingCert) -> Vec<u8> {
        cert.current().cert[0].as_ref().to_vec()
    }

    #[test]
    fn an_empty_section_is_plaintext_and_half_a_section_is_refused() {
        assert!(TlsConfig::default().load().expect("loads").is_none());
        assert!(MeshTlsConfig::default().load().expect("loads").is_none());
        let half = TlsConfig {
            cert_file: Some("/etc/nordlys/tls.crt".into()),
            ..TlsConfig::default()
        };
        let err = half.load().expect_err("a cert without a key");
        assert_eq!(err.kind(), TlsErrorKind::Incomplete);
        assert!(err.to_string().contains("/etc/nordlys/tls.crt"), "{err}");
        let two_of_three = MeshTlsConfig {
            cert_file: Some("/a.crt".into()),
            key_file: Some("/a.key".into()),
            ..MeshTlsConfig::default()
        };
        let err = two_of_three.load().expect_err("no CA");
        assert_eq!(err.kind(), TlsErrorKind::Incomplete);
    }

    #[test]
    fn unreadable_files_bad_pem_and_a_foreign_key_are_refused_naming_the_file() {
        let (cert_pem, key_pem) = self_signed("localhost");
        let ok = files(&cert_pem, &key_pem);
        let missing = ok.cert.with_file_name("missing.key");
        let err = ReloadingCert::load(&ok.cert, &missing).expect_err("missing key");
        assert_eq!(err.kind(), TlsErrorKind::Unreadable);
        assert!(err.to_string().contains("missing.key"), "{err}");

        let garbage = files("not a certificate", &key_pem);
        let err = ReloadingCert::load(&garbage.cert, &garbage.key).expect_err("bad PEM");
        assert_eq!(err.kind(), TlsErrorKind::BadPem);
        assert!(err.to_string().contains("tls.crt"), "{err}");

        let (_, other_key) = self_signed("localhost");
        let mismatched = files(&cert_pem, &other_key);
        let err = ReloadingCert::load(&mismatched.cert, &mismatched.key).expect_err("mismatch");
        assert_eq!(err.kind(), TlsErrorKind::KeyMismatch);

        assert!(ReloadingCert::load(&ok.cert, &ok.key).is_ok());
    }

    #[test]
    fn a_reload_takes_new_files_and_keeps_the_old_certificate_over_bad_ones() {
        let (first_cert, first_key) = self_signed("one.example");
        let f = files(&first_cert, &first_key);
        let cert = ReloadingCert::load(&f.cert, &f.key).expect("loads");
        let first = der(&cert);
        assert!(!cert.reload_if_changed().expect("unchanged files"));

        let (second_cert, second_key) = self_signed("two.example");
        std::fs::write(&f.cert, &second_cert).expect("write");
        std::fs::write(&f.key, &second_key).expect("write");
        assert!(cert.reload_if_changed().expect("new files"));
        let second = der(&cert);
        assert_ne!(first, second);

        // A certificate whose key has not been replaced yet: refused once,
        // and the certificate in use stays.
        let (third_cert, _) = self_signed("three.example");
        std::fs::write(&f.cert, &third_cert).expect("write");
        let err = cert.reload_if_changed().expect_err("mismatched pair");
        assert_eq!(err.kind(), TlsErrorKind::KeyMismatch);
        assert_eq!(der(&cert), second);
        assert!(!cert
            .reload_if_changed()
            .expect("the same bad bytes are not retried"));
        assert_eq!(der(&cert), second);
        // An explicit reload (SIGHUP) tries again, and reports again.
        assert!(cert.reload().is_err());

        std::fs::remove_file(&f.key).expect("remove");
        assert_eq!(
            cert.reload_if_changed().expect_err("no key").kind(),
            TlsErrorKind::Unreadable
        );
        assert_eq!(der(&cert), second);
    }

    #[tokio::test]
    async fn a_refused_handshake_never_reaches_the_server_and_a_good_one_does() {
        use futures::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (cert_pem, key_pem) = self_signed("localhost");
        let f = files(&cert_pem, &key_pem);
        let cert = ReloadingCert::load(&f.cert, &f.key).expect("loads");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = server_config(cert, ALPN_HTTP).expect("config");
        let mut incoming = TlsIncoming::new(listener, config, "test").expect("incoming");
        let addr = incoming.local_addr();

        // Plaintext first: refused.
        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer).await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "a plaintext client got an HTTP answer"
        );

        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let ours = tcp.local_addr().expect("local addr");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"ping").await.expect("write");
        let mut served = tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("a connection within 5 s")
            .expect("open stream")
            .expect("connection");
        // The first connection out is the TLS one: the plaintext one never came.
        assert_eq!(served.peer_addr(), ours);
        assert_eq!(served.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut ping = [0u8; 4];
        served.read_exact(&mut ping).await.expect("read");
        assert_eq!(&ping, b"ping");
    }
}
