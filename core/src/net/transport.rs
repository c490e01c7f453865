//! The transport seam: an optional layer between a connection's socket and its protocol
//! (TLS; a test's rot13). Without one (the default) the protocol reads and writes the
//! socket's bytes directly and nothing here costs anything.
//!
//! With one, every byte read from the socket (by `recv`, or handed over by the io_uring
//! backend's receives) goes to [`Transport::recv`], which appends what the protocol is to
//! see to the connection's input; the protocol's output is handed to [`Transport::send`]
//! a window at a time, as the socket takes the layer's previous output, and what the
//! layer produces is what is written. The layer's own records (a TLS handshake reply,
//! an alert, `close_notify`) are asked for by [`Transport::wants_write`].

use std::any::Any;
use std::io;
use std::sync::Arc;

use super::conn::{In, Out};
use crate::reactor::Loop;

/// A layer between a connection's socket and its protocol (see the module docs). Set on a
/// connection with [`super::Io::set_transport`]; it lives and dies with the connection.
pub trait Transport: 'static {
    /// Bytes `wire` arrived from the peer: take all of them (keep what cannot be decoded
    /// yet) and append what the protocol is to see to `plain`. An error ends the
    /// connection: what [`Transport::send`] still produces (an alert) is written first,
    /// nothing more is read, and the protocol gets the error in `on_close`.
    fn recv(&mut self, wire: &[u8], plain: &mut Plain<'_>) -> io::Result<()>;

    /// Encodes output: appends to `wire` the layer's own pending records, then as much of
    /// `plain` (which may be empty) as it takes now, and returns how many bytes of `plain`
    /// it took (the rest is offered again once `wire` has been written).
    fn send(&mut self, plain: &[u8], wire: &mut Wire<'_>) -> io::Result<usize>;

    /// Whether the layer has records of its own to write (`send(&[])` produces them).
    fn wants_write(&self) -> bool;

    /// The connection is closing gracefully (its protocol's output is all written): queue
    /// the end of the stream (TLS `close_notify`). Not called when it is aborted.
    fn close(&mut self) {}

    /// Whether the peer ended its stream at this layer (TLS `close_notify`): the
    /// connection takes it for the peer's EOF.
    fn peer_closed(&self) -> bool {
        false
    }

    /// What the layer tells the request model about the connection (the TLS facts, once
    /// the handshake is done). None by default.
    fn info(&self) -> Option<Arc<TlsInfo>> {
        None
    }

    /// The layer as `Any`, for a protocol to downcast it.
    fn as_any(&self) -> &dyn Any;
}

/// The facts of a TLS connection (see [`crate::Request::tls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version: "TLSv1.2" or "TLSv1.3" (as nginx's `$ssl_protocol`).
    pub version: &'static str,
    /// The cipher suite's IANA name, e.g. "TLS_AES_128_GCM_SHA256".
    pub cipher: Box<str>,
    /// The server name the client asked for (SNI), if it sent one (server side).
    pub sni: Option<Box<str>>,
    /// The application protocol agreed by ALPN (e.g. "http/1.1"), if any.
    pub alpn: Option<Box<[u8]>>,
}

/// Where a [`Transport`] puts the bytes its protocol is to see: the connection's input.
pub struct Plain<'a> {
    pub(crate) lp: &'a mut Loop,
    pub(crate) input: &'a mut In,
}

impl Plain<'_> {
    /// Appends a copy of `bytes`.
    pub fn append(&mut self, bytes: &[u8]) {
        self.input.append(self.lp, bytes);
    }

    /// Free space of at least `min` bytes at the end of the input, to decode into
    /// directly; [`Plain::filled`] then says how much of it was written.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        self.input.spare(self.lp, min)
    }

    /// The first `n` bytes of the last [`Plain::spare`] now hold input.
    pub fn filled(&mut self, n: usize) {
        self.input.filled(n);
    }

    /// Input held and not yet consumed by the protocol.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    /// Whether no input is held.
    pub fn is_empty(&self) -> bool {
        self.input.len() == 0
    }
}

/// Where a [`Transport`] puts the bytes to write to the socket (pool blocks, written in
/// order with the connection's usual sends).
pub struct Wire<'a> {
    pub(crate) lp: &'a mut Loop,
    pub(crate) out: &'a mut Out,
}

impl Wire<'_> {
    /// Queues a copy of `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.copy(self.lp, bytes);
    }

    /// Bytes queued for the socket.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing is queued for the socket.
    pub fn is_empty(&self) -> bool {
        self.out.len() == 0
    }
}

impl io::Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.copy(self.lp, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's layer and the bytes it produced that the socket has not taken yet.
pub(crate) struct Layer {
    pub(crate) t: Box<dyn Transport>,
    pub(crate) wire: Out,
}
