//! TLS on rustls (crypto from `ring`), as a [`crate::net::Transport`] layer: HTTPS
//! listeners ([`crate::Server::listen_tls`]), TLS on any accepted or outbound connection
//! ([`TlsAcceptor::accept`], [`TlsConnector::connect`]).
//!
//! - [`config`]: [`TlsConfig`] (certificate chains and keys from PEM, protocol versions,
//!   ALPN, session resumption, CA roots for clients), the SNI certificate choice, the
//!   reloadable [`TlsAcceptor`] and the [`TlsConnector`];
//! - [`layer`]: [`TlsLayer`], rustls's buffered connection driven sans-IO over the
//!   connection's bytes (`read_tls` / `process_new_packets` / `reader` on input, `writer` /
//!   `write_tls` on output), and the facts it reports ([`crate::net::TlsInfo`]).
//!
//! Only TLS 1.2 and 1.3 exist here (rustls has nothing older), renegotiation is refused
//! (rustls answers `no_renegotiation`), and only rustls's default cipher suites (AEADs with
//! forward secrecy) are offered, so a client offering only weak suites gets a
//! `handshake_failure` alert.

pub mod config;
pub mod layer;

pub use config::{TlsAcceptor, TlsConfig, TlsConnector, TlsError};
pub use layer::TlsLayer;

/// TLS 1.2, as [`TlsConfig::set_versions`] takes it (the wire value 0x0303).
pub const TLS12: u16 = 0x0303;
/// TLS 1.3 (0x0304).
pub const TLS13: u16 = 0x0304;
