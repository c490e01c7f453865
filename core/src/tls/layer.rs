//! The TLS transport layer: a rustls connection (server or client side) between the
//! socket and the protocol.

use std::any::Any;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::Connection;

use crate::net::{Plain, TlsInfo, Transport, Wire};

/// A TLS connection as a [`Transport`] layer (made by [`super::TlsAcceptor::accept`] or
/// [`super::TlsConnector::connect`]).
pub struct TlsLayer {
    conn: Connection,
    /// The facts of the handshake, once it is done.
    info: Option<Arc<TlsInfo>>,
    /// The peer sent close_notify.
    peer_closed: bool,
}

impl TlsLayer {
    pub(crate) fn new(conn: Connection) -> TlsLayer {
        TlsLayer {
            conn,
            info: None,
            peer_closed: false,
        }
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn learn(&mut self) {
        if self.info.is_some() || self.conn.is_handshaking() {
            return;
        }
        let version = match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .map(|s| {
                s.strip_prefix("TLS13_")
                    .map_or(s.to_string(), |r| format!("TLS_{r}"))
            })
            .unwrap_or_default();
        let sni = match &self.conn {
            Connection::Server(s) => s.server_name().map(Box::from),
            Connection::Client(_) => None,
        };
        let alpn = self.conn.alpn_protocol().map(Box::from);
        self.info = Some(Arc::new(TlsInfo {
            version,
            cipher: cipher.into_boxed_str(),
            sni,
            alpn,
        }));
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Transport for TlsLayer {
    fn recv(&mut self, mut wire: &[u8], plain: &mut Plain<'_>) -> io::Result<()> {
        while !wire.is_empty() {
            // rustls takes what fits its record buffer; the rest goes in on the next round,
            // once the records it completed were processed and their plaintext taken.
            if self.conn.read_tls(&mut wire)? == 0 {
                break;
            }
            let st = self.conn.process_new_packets().map_err(invalid)?;
            let mut left = st.plaintext_bytes_to_read();
            while left > 0 {
                let space = plain.spare(left);
                let n = match self.conn.reader().read(space) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                plain.filled(n);
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
            if st.peer_has_closed() {
                self.peer_closed = true;
                break;
            }
        }
        self.learn();
        Ok(())
    }

    fn send(&mut self, plain: &[u8], wire: &mut Wire<'_>) -> io::Result<usize> {
        let n = if plain.is_empty() || self.peer_closed && self.conn.is_handshaking() {
            0
        } else {
            self.conn.writer().write(plain)?
        };
        while self.conn.wants_write() {
            if self.conn.write_tls(wire)? == 0 {
                break;
            }
        }
        Ok(n)
    }

    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    fn close(&mut self) {
        self.conn.send_close_notify();
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    fn info(&self) -> Option<Arc<TlsInfo>> {
        self.info.clone()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
