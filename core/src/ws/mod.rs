//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692) and per-loop pub/sub, on the
//! HTTP upgrade hand-off ([`crate::Response::upgrade`]), over any HTTP listener (and so
//! under any transport layer: TLS) on every backend.
//!
//! By concern: `frame.rs` (one frame's head, masking, close payloads, UTF-8 checks),
//! `handshake.rs` (the upgrade request, accept key, subprotocol and extension
//! negotiation), `reader.rs` (the receiving rules across frames; sans-IO), `deflate.rs`
//! (compression), `conn.rs` (the connection's protocol driver: close handshake, automatic
//! pongs, keep-alive pings, timeouts, backpressure), `pubsub.rs` (topics).
//!
//! A handler accepts with [`upgrade`], giving [`Options`] and a [`Handler`]; it gets a
//! [`WebSocket`], a cheap handle (an `Rc`) usable anywhere on the loop's thread: sends are
//! queued on the connection and written at the end of the current callback or loop
//! iteration, one write for everything queued meanwhile.

mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
mod pubsub;
pub mod reader;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::app::{Protocol as ReqProtocol, Request, Response};
use crate::reactor::{Loop, Token};

pub use conn::WsConn;
pub use frame::{
    CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_INVALID_DATA, CLOSE_NORMAL,
    CLOSE_NO_STATUS, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_TOO_BIG,
};
pub use handshake::Reject;
pub use pubsub::{publish, stats, subscribers, WsStats};

/// How a WebSocket connection behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest message accepted, after inflating, over all its fragments (bytes; 16 MiB).
    /// A larger one closes the connection with 1009.
    pub max_message: usize,
    /// Accept permessage-deflate when the client offers it (true).
    pub deflate: bool,
    /// Messages shorter than this are sent uncompressed even with deflate (bytes; 1024,
    /// the `ws` package's `threshold`).
    pub compress_threshold: usize,
    /// Subprotocols the server speaks; the first the client offers (in its order) is
    /// chosen and answered in `Sec-WebSocket-Protocol`.
    pub protocols: Vec<String>,
    /// Bytes queued for a connection (written or not) past which a send is refused
    /// ([`Sent::Dropped`]), or the connection closed if `close_on_backpressure`
    /// (1 MiB). Control frames (pong, close) are always queued.
    pub max_backpressure: usize,
    /// Close the connection (with 1008, output dropped) instead of dropping the message
    /// when a send or a publish would pass `max_backpressure` (false).
    pub close_on_backpressure: bool,
    /// Send a ping after this long without input from the client, and close the
    /// connection (1006) if nothing arrives within the same time after it (None: no pings).
    pub ping_interval: Option<Duration>,
    /// Close (1001) a connection that sent nothing for this long (None: never; 120 s).
    pub idle_timeout: Option<Duration>,
    /// How long to wait for the client's close frame after sending ours (5 s).
    pub close_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_message: 16 << 20,
            deflate: true,
            compress_threshold: 1024,
            protocols: Vec::new(),
            max_backpressure: 1 << 20,
            close_on_backpressure: false,
            ping_interval: None,
            idle_timeout: Some(Duration::from_secs(120)),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// What the application does with a connection's events. All calls are on the loop's
/// thread, with its loop (timers, other sources); the [`WebSocket`] they get can be kept
/// and used later.
pub trait Handler: 'static {
    /// The connection is open (the 101 is queued): sends may start.
    fn on_open(&mut self, lp: &mut Loop, ws: &WebSocket) {
        let _ = (lp, ws);
    }
    /// A whole message (text: valid UTF-8), borrowed for the call.
    fn on_message(&mut self, lp: &mut Loop, ws: &WebSocket, data: &[u8], binary: bool);
    /// A ping arrived (the pong is sent automatically).
    fn on_ping(&mut self, lp: &mut Loop, ws: &WebSocket, data: &[u8]) {
        let _ = (lp, ws, data);
    }
    /// A pong arrived.
    fn on_pong(&mut self, lp: &mut Loop, ws: &WebSocket, data: &[u8]) {
        let _ = (lp, ws, data);
    }
    /// Output that had to wait for the client has all been written (after a send that
    /// found the socket full, see [`WebSocket::buffered_amount`]).
    fn on_drain(&mut self, lp: &mut Loop, ws: &WebSocket) {
        let _ = (lp, ws);
    }
    /// The connection ended: the client's close code and reason (echoed), the code this
    /// side closed with (a protocol error: 1002, 1007, 1009; a timeout), or 1006 for a
    /// connection that ended without a close frame. Called once; no sends after it.
    fn on_close(&mut self, lp: &mut Loop, ws: &WebSocket, code: u16, reason: &[u8]) {
        let _ = (lp, ws, code, reason);
    }
}

/// What a send did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued.
    Queued,
    /// Not queued: the connection's queue would pass `max_backpressure` (with
    /// `close_on_backpressure` the connection is closing too).
    Dropped,
    /// Not queued: the connection is closing or closed.
    Closed,
    /// Refused: an invalid close code.
    Invalid,
}

/// The options a connection keeps after the handshake, packed (an idle connection pays
/// for these bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_backpressure: usize,
    pub(crate) compress_threshold: u32,
    /// In milliseconds; 0: none.
    ping_ms: u32,
    idle_ms: u32,
    close_ms: u32,
    pub(crate) close_on_backpressure: bool,
}

fn ms(d: Option<Duration>) -> u32 {
    d.map_or(0, |d| d.as_millis().clamp(1, u128::from(u32::MAX)) as u32)
}

impl Limits {
    fn of(o: &Options) -> Limits {
        Limits {
            max_backpressure: o.max_backpressure,
            compress_threshold: o.compress_threshold.min(u32::MAX as usize) as u32,
            ping_ms: ms(o.ping_interval),
            idle_ms: ms(o.idle_timeout),
            close_ms: ms(Some(o.close_timeout)),
            close_on_backpressure: o.close_on_backpressure,
        }
    }
    pub(crate) fn ping(&self) -> Option<Duration> {
        (self.ping_ms > 0).then(|| Duration::from_millis(self.ping_ms.into()))
    }
    pub(crate) fn idle(&self) -> Option<Duration> {
        (self.idle_ms > 0).then(|| Duration::from_millis(self.idle_ms.into()))
    }
    pub(crate) fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_ms.into())
    }
}

/// Output waiting for the connection's next callback.
pub(crate) enum Pending {
    Bytes(Vec<u8>),
    Shared(Rc<[u8]>),
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// This side sent its close frame and waits for the client's.
    Closing,
    /// Over: no more sends.
    Closed,
}

/// A close asked for: code and reason.
pub(crate) type CloseReq = (u16, Vec<u8>);

/// The state a [`WebSocket`] handle shares with its connection.
pub(crate) struct Core {
    pub(crate) token: Cell<Option<Token>>,
    pub(crate) kicks: std::cell::OnceCell<Rc<RefCell<Vec<Token>>>>,
    /// A callback of the connection is running: what is queued is written when it returns.
    pub(crate) in_cb: Cell<bool>,
    pub(crate) phase: Cell<Phase>,
    /// Bytes the connection's output queue held at its last callback.
    pub(crate) queued: Cell<usize>,
    pub(crate) pending_bytes: Cell<usize>,
    pub(crate) pending: RefCell<Vec<Pending>>,
    /// A close asked for by the application (code, reason), or a drop (backpressure).
    pub(crate) close_req: Cell<Option<Box<CloseReq>>>,
    pub(crate) abort_req: Cell<bool>,
    pub(crate) pause: Cell<Option<bool>>,
    pub(crate) compress: bool,
    pub(crate) lim: Limits,
    pub(crate) protocol: Option<Box<str>>,
    pub(crate) topics: RefCell<Vec<Rc<str>>>,
}

/// A WebSocket connection, as the application holds it: clone it freely (an `Rc`); use it
/// on the loop's thread only. Sends after the close are refused ([`Sent::Closed`]).
#[derive(Clone)]
pub struct WebSocket(pub(crate) Rc<Core>);

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("token", &self.0.token.get())
            .field("phase", &self.0.phase.get())
            .finish()
    }
}

impl WebSocket {
    /// Sends a text (`binary` false: `data` should be UTF-8) or binary message.
    pub fn send(&self, data: &[u8], binary: bool) -> Sent {
        let op = if binary {
            frame::OP_BINARY
        } else {
            frame::OP_TEXT
        };
        self.send_frame(op, true, data, true)
    }

    /// Sends one fragment of a message: the first with `first` true and the kind in
    /// `binary`, continuations with `first` false, the last with `fin` true. Fragments
    /// are never compressed. Other messages must not be sent between the fragments.
    pub fn send_fragment(&self, data: &[u8], binary: bool, first: bool, fin: bool) -> Sent {
        let op = match (first, binary) {
            (false, _) => frame::OP_CONT,
            (true, true) => frame::OP_BINARY,
            (true, false) => frame::OP_TEXT,
        };
        self.send_frame(op, fin, data, false)
    }

    /// Sends a ping (`data`: at most 125 bytes; longer is cut).
    pub fn ping(&self, data: &[u8]) -> Sent {
        self.control(frame::OP_PING, &data[..data.len().min(125)])
    }

    /// Starts the close handshake with `code` (1000-1003, 1007-1014, 3000-4999, or 1005 for
    /// a close frame without a code; another is refused with [`Sent::Invalid`]) and
    /// `reason` (cut to fit 123 bytes). The connection closes once the client answers, or
    /// after `close_timeout`.
    pub fn close(&self, code: u16, reason: &[u8]) -> Sent {
        if self.0.phase.get() != Phase::Open {
            return Sent::Closed;
        }
        if code != CLOSE_NO_STATUS && !frame::valid_close_code(code) {
            return Sent::Invalid;
        }
        self.0
            .close_req
            .set(Some(Box::new((code, reason.to_vec()))));
        self.0.phase.set(Phase::Closing);
        self.kick();
        Sent::Queued
    }

    /// Closes the TCP connection now, without a close handshake (queued output dropped).
    pub fn terminate(&self) {
        if self.0.phase.get() != Phase::Closed {
            self.0.abort_req.set(true);
            self.kick();
        }
    }

    /// Stops (true) or resumes (false) reading the client's messages.
    pub fn pause(&self, paused: bool) {
        self.0.pause.set(Some(paused));
        self.kick();
    }

    /// Bytes queued and not yet written to the socket (the `ws` package's
    /// `bufferedAmount`).
    pub fn buffered_amount(&self) -> usize {
        self.0.queued.get() + self.0.pending_bytes.get()
    }

    /// The subprotocol chosen in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.0.protocol.as_deref()
    }

    /// Whether permessage-deflate is in use.
    pub fn deflate(&self) -> bool {
        self.0.compress
    }

    /// Whether the connection is open (not closing or closed).
    pub fn is_open(&self) -> bool {
        self.0.phase.get() == Phase::Open
    }

    /// Subscribes to `topic` (this loop's topics; see [`publish`]). Subscribing twice is
    /// once. Returns false once the connection is closed.
    pub fn subscribe(&self, topic: &str) -> bool {
        pubsub::subscribe(self, topic)
    }

    /// Unsubscribes from `topic`; false if it was not subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        pubsub::unsubscribe(self, topic)
    }

    /// Whether the connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.0.topics.borrow().iter().any(|t| &**t == topic)
    }

    /// Publishes to every subscriber of `topic` but this connection (uWebSockets'
    /// `ws.publish`); returns how many got the message.
    pub fn publish(&self, topic: &str, data: &[u8], binary: bool) -> usize {
        pubsub::publish_from(Some(self), topic, data, binary)
    }

    fn send_frame(&self, op: u8, fin: bool, data: &[u8], may_compress: bool) -> Sent {
        if self.0.phase.get() != Phase::Open {
            return Sent::Closed;
        }
        let compress =
            may_compress && self.0.compress && data.len() >= self.0.lim.compress_threshold as usize;
        let bytes = if compress {
            frame::encode(fin, true, op, &deflate::compress(data))
        } else {
            frame::encode(fin, false, op, data)
        };
        self.queue(Pending::Bytes(bytes))
    }

    fn control(&self, op: u8, data: &[u8]) -> Sent {
        if self.0.phase.get() != Phase::Open {
            return Sent::Closed;
        }
        self.push(Pending::Bytes(frame::encode(true, false, op, data)));
        Sent::Queued
    }

    /// Queues a data frame under the backpressure limit.
    pub(crate) fn queue(&self, p: Pending) -> Sent {
        let len = match &p {
            Pending::Bytes(b) => b.len(),
            Pending::Shared(b) => b.len(),
        };
        if self.buffered_amount() + len > self.0.lim.max_backpressure {
            if self.0.lim.close_on_backpressure {
                self.0.abort_req.set(true);
                self.0
                    .close_req
                    .set(Some(Box::new((CLOSE_POLICY, b"backpressure".to_vec()))));
                self.kick();
            }
            return Sent::Dropped;
        }
        self.push(p);
        Sent::Queued
    }

    pub(crate) fn push(&self, p: Pending) {
        let len = match &p {
            Pending::Bytes(b) => b.len(),
            Pending::Shared(b) => b.len(),
        };
        self.0.pending_bytes.set(self.0.pending_bytes.get() + len);
        {
            let mut q = self.0.pending.borrow_mut();
            match (q.last_mut(), p) {
                (Some(Pending::Bytes(last)), Pending::Bytes(b))
                    if last.len() + b.len() <= 16 * 1024 =>
                {
                    last.extend_from_slice(&b)
                }
                (_, p) => q.push(p),
            }
        }
        self.kick();
    }

    /// Has the connection look at its queue at the end of this iteration (unless one of
    /// its callbacks is running: it looks when that returns).
    fn kick(&self) {
        if self.0.in_cb.get() {
            return;
        }
        if let (Some(t), Some(k)) = (self.0.token.get(), self.0.kicks.get()) {
            k.borrow_mut().push(t);
        }
    }
}

/// Checks the upgrade request `req` and answers it: on success `101` with
/// `Sec-WebSocket-Accept` (and the chosen subprotocol and permessage-deflate parameters),
/// and the connection is handed to the WebSocket protocol with `handler`; the bytes the
/// client sent after the request are its first input. On failure the request is answered
/// with the refusal's status (426 with `Sec-WebSocket-Version: 13` for a wrong version) and
/// the refusal returned. ([`prepare`] then [`accept`] or [`refuse`], in one call.)
pub fn upgrade(
    req: &Request,
    res: Response,
    opts: Options,
    handler: impl Handler,
) -> Result<WebSocket, Reject> {
    match prepare(req, &opts) {
        Ok(p) => accept(p, res, opts, handler),
        Err(r) => {
            refuse(res, r);
            Err(r)
        }
    }
}

/// What the handshake decided for an upgrade request (see [`prepare`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    accept: String,
    protocol: Option<String>,
    deflate: Option<(handshake::Deflate, String)>,
}

impl Prepared {
    /// The subprotocol that will be answered, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

/// Checks the upgrade request `req` against `opts` (the first step of [`upgrade`], for a
/// caller that cannot hold the request and its response at once).
pub fn prepare(req: &Request, opts: &Options) -> Result<Prepared, Reject> {
    let joined = |name: &str| -> Option<Vec<u8>> {
        let mut v: Option<Vec<u8>> = None;
        for (n, val) in req.headers() {
            if n.eq_ignore_ascii_case(name) {
                let v = v.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(val);
            }
        }
        v
    };
    let upgrade_h = joined("upgrade");
    let connection = joined("connection");
    let offer = handshake::Offer {
        method: req.method(),
        version: if req.protocol() == ReqProtocol::Fcgi {
            "FastCGI"
        } else {
            req.version()
        },
        upgrade: upgrade_h.as_deref(),
        connection: connection.as_deref(),
        ws_version: req.header("sec-websocket-version"),
        key: req.header("sec-websocket-key"),
    };
    let accept = handshake::check(&offer)?;
    let protocol =
        handshake::choose_protocol(joined("sec-websocket-protocol").as_deref(), &opts.protocols)
            .map(str::to_string);
    let deflate = if opts.deflate {
        handshake::negotiate_deflate(joined("sec-websocket-extensions").as_deref())
    } else {
        None
    };
    Ok(Prepared {
        accept,
        protocol,
        deflate,
    })
}

/// Answers a refused upgrade: the refusal's status, `Sec-WebSocket-Version: 13` for a
/// wrong version, `Upgrade: websocket` with a 426, a short text body.
pub fn refuse(mut res: Response, r: Reject) {
    let _ = res.status(r.status());
    if r == Reject::Version {
        let _ = res.header("Sec-WebSocket-Version", b"13");
    }
    if r.status() == 426 {
        let _ = res.header("Upgrade", b"websocket");
        let _ = res.header("Connection", b"Upgrade");
    }
    let _ = res.header("Content-Type", b"text/plain");
    let _ = res.write(r.text().as_bytes());
    let _ = res.finish();
}

/// Answers `101` for a [`prepare`]d request and hands the connection to the WebSocket
/// protocol with `handler`. `Err(Reject::Protocol)` if the response cannot switch
/// protocols (FastCGI, HTTP/1.0, or its head was already sent); the response is then gone.
pub fn accept(
    p: Prepared,
    mut res: Response,
    opts: Options,
    handler: impl Handler,
) -> Result<WebSocket, Reject> {
    let _ = res.header("Sec-WebSocket-Accept", p.accept.as_bytes());
    if let Some(proto) = &p.protocol {
        let _ = res.header("Sec-WebSocket-Protocol", proto.as_bytes());
    }
    if let Some((_, resp)) = &p.deflate {
        let _ = res.header("Sec-WebSocket-Extensions", resp.as_bytes());
    }
    let core = Rc::new(Core {
        token: Cell::new(None),
        kicks: std::cell::OnceCell::new(),
        in_cb: Cell::new(false),
        phase: Cell::new(Phase::Open),
        queued: Cell::new(0),
        pending_bytes: Cell::new(0),
        pending: RefCell::new(Vec::new()),
        close_req: Cell::new(None),
        abort_req: Cell::new(false),
        pause: Cell::new(None),
        compress: p.deflate.is_some(),
        lim: Limits::of(&opts),
        protocol: p.protocol.map(String::into_boxed_str),
        topics: RefCell::new(Vec::new()),
    });
    let ws = WebSocket(core);
    let inflater = p
        .deflate
        .map(|(d, _)| deflate::Inflater::new(d.client_no_context_takeover));
    let conn = WsConn::new(
        ws.clone(),
        Box::new(handler),
        reader::Reader::new(opts.max_message, inflater),
    );
    match res.upgrade("websocket", conn) {
        Ok(()) => Ok(ws),
        Err(_) => {
            ws.0.phase.set(Phase::Closed);
            Err(Reject::Protocol)
        }
    }
}
