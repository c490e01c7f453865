//! TLS configuration: certificate chains and keys (PEM: PKCS#8, RSA or SEC1 EC keys)
//! chosen by SNI, protocol versions, ALPN, session resumption, CA roots; the reloadable
//! acceptor of a listener and the connector of outbound connections.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, Connection, ServerConnection, SupportedProtocolVersion};

use super::{TlsLayer, TLS12, TLS13};
use crate::net::Transport;

/// A configuration error, with a message naming what failed (the file, for files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(String);

impl TlsError {
    fn new(msg: impl Into<String>) -> TlsError {
        TlsError(msg.into())
    }
    /// The message (e.g. "key.pem: does not match the certificate in cert.pem").
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// One certificate chain with its key and the DNS names it is valid for (lower case).
#[derive(Clone, Debug)]
struct Entry {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

/// What a TLS listener or connection is made with. Build one, then make a
/// [`TlsAcceptor`] (servers) or a [`TlsConnector`] (clients) from it.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    certs: Vec<Entry>,
    min: u16,
    max: u16,
    alpn: Option<Vec<Vec<u8>>>,
    tickets: bool,
    cache: usize,
    roots: Vec<CertificateDer<'static>>,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig::new()
    }
}

/// Whether certificate name `pattern` (lower case, maybe `*.` wildcard) covers `name`.
fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest == suffix,
        _ => false,
    }
}

impl TlsConfig {
    /// No certificate; TLS 1.2 and 1.3; ALPN `http/1.1` for servers (none for clients);
    /// TLS 1.3 tickets (keys rotated every 6 hours) and a stateful cache of 1,024 TLS
    /// 1.2 sessions; the system's CA roots for clients.
    pub fn new() -> TlsConfig {
        TlsConfig {
            certs: Vec::new(),
            min: TLS12,
            max: TLS13,
            alpn: None,
            tickets: true,
            cache: 1024,
            roots: Vec::new(),
        }
    }

    /// Adds a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, RSA
    /// or SEC1 EC). The first one added is the default; the others are chosen when the
    /// client's SNI names one of their DNS names. `cert_name` and `key_name` name the
    /// sources in error messages.
    pub fn add_cert_pem_named(
        &mut self,
        cert: &[u8],
        key: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<(), TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::new(format!("{cert_name}: bad PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::new(format!(
                "{cert_name}: no PEM certificate found"
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            TlsError::new(format!(
                "{key_name}: no private key found (PEM PKCS#8, RSA or EC): {e}"
            ))
        })?;
        let signer = provider::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::new(format!("{key_name}: unusable private key: {e}")))?;
        let ck = CertifiedKey::new(chain, signer);
        match ck.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(TlsError::new(format!(
                    "{key_name}: private key does not match the certificate in {cert_name}"
                )))
            }
        }
        let leaf = webpki::EndEntityCert::try_from(&ck.cert[0])
            .map_err(|e| TlsError::new(format!("{cert_name}: unusable certificate: {e}")))?;
        let names = leaf
            .valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        self.certs.push(Entry {
            key: Arc::new(ck),
            names,
        });
        Ok(())
    }

    /// [`TlsConfig::add_cert_pem_named`] for PEM bytes given directly.
    pub fn add_cert_pem(&mut self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        self.add_cert_pem_named(cert, key, "certificate PEM", "key PEM")
    }

    /// [`TlsConfig::add_cert_pem_named`] for two files (errors name the file).
    pub fn add_cert_files(&mut self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| TlsError::new(format!("{}: {e}", p.display())));
        let (c, k) = (read(cert)?, read(key)?);
        self.add_cert_pem_named(
            &c,
            &k,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Certificates added so far.
    pub fn cert_count(&self) -> usize {
        self.certs.len()
    }

    /// The protocol versions allowed, [`TLS12`] or [`TLS13`] each (`min` <= `max`).
    pub fn set_versions(&mut self, min: u16, max: u16) -> Result<(), TlsError> {
        let ok = |v| v == TLS12 || v == TLS13;
        if !ok(min) || !ok(max) || min > max {
            return Err(TlsError::new(format!(
                "unsupported TLS versions {min:#06x}..{max:#06x} (TLS 1.2 and 1.3 only)"
            )));
        }
        (self.min, self.max) = (min, max);
        Ok(())
    }

    /// The ALPN protocols offered (client) or accepted (server), in preference order.
    /// A server whose client offers ALPN without any of these refuses the handshake.
    pub fn set_alpn(&mut self, protocols: &[&[u8]]) {
        self.alpn = Some(protocols.iter().map(|p| p.to_vec()).collect());
    }

    /// Session resumption: TLS 1.3 tickets on or off, and the size of the stateful cache
    /// (TLS 1.2 session ids, and TLS 1.3 without tickets; 0: none).
    pub fn set_sessions(&mut self, tickets: bool, cache: usize) {
        self.tickets = tickets;
        self.cache = cache;
    }

    /// Adds the CA certificates of a PEM bundle that a client trusts (instead of the
    /// system's roots). `name` names the source in errors.
    pub fn add_ca_pem_named(&mut self, pem: &[u8], name: &str) -> Result<(), TlsError> {
        let before = self.roots.len();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| TlsError::new(format!("{name}: bad PEM certificate: {e}")))?;
            self.roots.push(c);
        }
        if self.roots.len() == before {
            return Err(TlsError::new(format!("{name}: no PEM certificate found")));
        }
        Ok(())
    }

    /// [`TlsConfig::add_ca_pem_named`] from a file.
    pub fn add_ca_file(&mut self, path: &Path) -> Result<(), TlsError> {
        let pem =
            std::fs::read(path).map_err(|e| TlsError::new(format!("{}: {e}", path.display())))?;
        self.add_ca_pem_named(&pem, &path.display().to_string())
    }

    fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.max >= TLS13 {
            v.push(&rustls::version::TLS13);
        }
        if self.min <= TLS12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }

    /// The rustls server configuration (at least one certificate is needed).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        if self.certs.is_empty() {
            return Err(TlsError::new("TLS server: no certificate configured"));
        }
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_protocol_versions(&self.versions())
                .map_err(|e| TlsError::new(format!("TLS server: {e}")))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Sni {
                    certs: self.certs.clone(),
                }));
        cfg.alpn_protocols = self
            .alpn
            .clone()
            .unwrap_or_else(|| vec![b"http/1.1".to_vec()]);
        cfg.session_storage = if self.cache > 0 {
            rustls::server::ServerSessionMemoryCache::new(self.cache)
        } else {
            Arc::new(NoServerSessionStorage {})
        };
        if self.tickets {
            cfg.ticketer = provider::Ticketer::new()
                .map_err(|e| TlsError::new(format!("TLS server: session tickets: {e}")))?;
        } else {
            cfg.send_tls13_tickets = if self.cache > 0 { 1 } else { 0 };
        }
        Ok(Arc::new(cfg))
    }

    /// The rustls client configuration: this configuration's CA roots, or the system's.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        if self.roots.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err(TlsError::new(
                    "TLS client: no CA certificate in the system's store (give a CA file)",
                ));
            }
        } else {
            for c in &self.roots {
                store
                    .add(c.clone())
                    .map_err(|e| TlsError::new(format!("TLS client: CA certificate: {e}")))?;
            }
        }
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_protocol_versions(&self.versions())
                .map_err(|e| TlsError::new(format!("TLS client: {e}")))?
                .with_root_certificates(store)
                .with_no_client_auth();
        cfg.alpn_protocols = self.alpn.clone().unwrap_or_default();
        Ok(Arc::new(cfg))
    }
}

/// The server's certificate choice: the first whose DNS names cover the client's SNI, or
/// the first of all.
#[derive(Debug)]
struct Sni {
    certs: Vec<Entry>,
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            let name = name.trim_end_matches('.');
            if let Some(e) = self
                .certs
                .iter()
                .find(|e| e.names.iter().any(|p| name_matches(p, name)))
            {
                return Some(e.key.clone());
            }
        }
        self.certs.first().map(|e| e.key.clone())
    }
}

/// What a TLS listener accepts with: a server configuration that can be replaced while
/// it serves ([`TlsAcceptor::reload`]: connections accepted from then on get the new
/// certificates; those already open keep theirs). Cheap to clone; shared by threads.
#[derive(Clone, Debug)]
pub struct TlsAcceptor {
    cfg: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl TlsAcceptor {
    /// An acceptor for `config` (which needs a certificate).
    pub fn new(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor {
            cfg: Arc::new(RwLock::new(config.server_config()?)),
        })
    }

    /// Replaces the configuration (certificates, versions, ALPN) for new connections.
    /// Sessions resumable before stay resumable (the session cache and ticket keys are
    /// kept) unless the session settings changed. On error nothing changes.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let mut fresh = config.server_config()?;
        let mut cur = self.cfg.write().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = Arc::get_mut(&mut fresh) {
            if f.ticketer.enabled() == cur.ticketer.enabled()
                && f.send_tls13_tickets == cur.send_tls13_tickets
            {
                f.ticketer = cur.ticketer.clone();
                f.session_storage = cur.session_storage.clone();
            }
        }
        *cur = fresh;
        Ok(())
    }

    /// A server-side TLS layer for a newly accepted connection (see
    /// [`crate::Io::set_transport`]).
    pub fn accept(&self) -> Option<Box<dyn Transport>> {
        let cfg = self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone();
        match ServerConnection::new(cfg) {
            Ok(c) => Some(Box::new(TlsLayer::new(Connection::Server(c)))),
            Err(e) => {
                log::warn!("TLS: cannot start a server connection: {e}");
                None
            }
        }
    }
}

/// What outbound TLS connections are made with (server verification against the CA
/// roots, SNI, ALPN, session resumption). Cheap to clone; shared by threads.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    cfg: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    /// A connector for `config`.
    pub fn new(config: &TlsConfig) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector {
            cfg: config.client_config()?,
        })
    }

    /// A client-side TLS layer for a connection to `server_name` (a DNS name, sent as
    /// SNI and verified against the certificate; or an IP address, verified only).
    pub fn connect(&self, server_name: &str) -> Result<Box<dyn Transport>, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::new(format!("TLS client: server name {server_name:?}: {e}")))?;
        let c = ClientConnection::new(self.cfg.clone(), name)
            .map_err(|e| TlsError::new(format!("TLS client: {e}")))?;
        Ok(Box::new(TlsLayer::new(Connection::Client(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("a.example", "a.example"));
        assert!(name_matches("*.example", "a.example"));
        assert!(!name_matches("*.example", "a.b.example"));
        assert!(!name_matches("*.example", "example"));
        assert!(!name_matches("*.example", ".example"));
        assert!(!name_matches("b.example", "a.example"));
    }

    #[test]
    fn bad_pem_is_named() {
        let mut c = TlsConfig::new();
        let e = c.add_cert_pem_named(b"junk", b"junk", "c.pem", "k.pem");
        assert_eq!(e.unwrap_err().message(), "c.pem: no PEM certificate found");
        let e = c.add_cert_files(Path::new("/nonexistent/c.pem"), Path::new("k.pem"));
        assert!(e.unwrap_err().message().starts_with("/nonexistent/c.pem: "));
        assert!(c.server_config().is_err());
        assert!(c.set_versions(TLS13, TLS12).is_err());
        assert!(c.set_versions(0x0301, TLS13).is_err());
        assert!(c.set_versions(TLS13, TLS13).is_ok());
    }
}
