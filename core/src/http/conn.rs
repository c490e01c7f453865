//! The HTTP/1.1 connection driver: parses heads, streams bodies to the handler, frames
//! responses, and keeps pipelined responses in order (one request is served at a time;
//! later requests wait in the input buffer while a response is pending, without holding
//! back any other connection). Everything answered from one read leaves in one write.

use std::rc::Rc;

use super::chunked::{self, ChunkError, Decoder};
use super::head::Fixed;
use super::parse::{self, BodyKind, Limits};
use super::reason;
use crate::app::{Body, Collected, Ctx, ExId, Phase, Piece, PieceRef, Protocol as Proto, Response};
use crate::net::{Io, Protocol, SMALL_STATIC};
use crate::reactor::{Loop, Token};
use crate::server::{finish_drain, Shared};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading the request body.
    Body,
    /// Body done (or skipped); waiting for the response to finish.
    Wait,
    /// Closing: input is discarded.
    Dead,
    /// Handed to another protocol after a 101 ([`Response::upgrade`]): input is left for it.
    Gone,
}

enum BodyState {
    None,
    Length(u64),
    Chunked(Box<Decoder>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    None,
    Header,
    Body,
    Idle,
    Write,
    /// The handler's response is late (see `ServerOptions::response_timeout`).
    Response,
}

/// What a response head says (see [`HttpConn::write_head`]).
struct Head<'a> {
    status: u16,
    /// The user's header lines, CRLF-terminated.
    hdrs: &'a [u8],
    /// Whether the response is finished (its length known).
    done: bool,
    /// Body length, when `done`.
    len: u64,
}

// Flags.
const KEEP_ALIVE: u16 = 1;
const IS_HEAD: u16 = 2;
const HEAD_SENT: u16 = 4;
const CHUNKED_OUT: u16 = 8;
const NO_BODY: u16 = 16;
const HEAD_STARTED: u16 = 32;
const TRAILER_SENT: u16 = 64;
const DRAINING: u16 = 128;
const BLOCKED: u16 = 256;
/// The client asked to close after this request (`Connection: close`, or HTTP/1.0 without
/// keep-alive): it must send nothing more, so once the request is read whole the close
/// needs no lingering.
const CLIENT_CLOSE: u16 = 512;

pub(crate) struct HttpConn {
    sh: Rc<Shared>,
    cur: Option<ExId>,
    st: St,
    body: BodyState,
    body_seen: u64,
    flags: u16,
    minor: u8,
    timer: Timer,
    listener: u8,
    /// The local address, as an index into the server's interned addresses (0: the
    /// listener's own).
    local: u16,
}

impl HttpConn {
    pub(crate) fn new(sh: Rc<Shared>, listener: u8, local: u16) -> HttpConn {
        HttpConn {
            sh,
            cur: None,
            st: St::Head,
            body: BodyState::None,
            body_seen: 0,
            flags: 0,
            minor: 1,
            timer: Timer::None,
            listener,
            local,
        }
    }

    /// Whether this connection belongs to the server of `sh`.
    pub(crate) fn serves(&self, sh: &Rc<Shared>) -> bool {
        Rc::ptr_eq(&self.sh, sh)
    }

    fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }
    fn set(&mut self, f: u16, on: bool) {
        if on {
            self.flags |= f
        } else {
            self.flags &= !f
        }
    }

    pub(crate) fn ctx(&self) -> Rc<Ctx> {
        self.sh.ctx.clone()
    }

    /// A new connection: the first request head must arrive within the header timeout.
    pub(crate) fn start(&mut self, io: &mut Io<'_>) {
        self.arm(io, Timer::Header);
        self.set(HEAD_STARTED, true);
    }

    fn arm(&mut self, io: &mut Io<'_>, t: Timer) {
        let o = &self.sh.opts;
        let d = match t {
            Timer::None => None,
            Timer::Header => Some(o.header_timeout),
            Timer::Body => Some(o.body_timeout),
            Timer::Idle => Some(o.idle_timeout),
            Timer::Write => Some(o.write_timeout),
            Timer::Response if o.response_timeout.is_zero() => None,
            Timer::Response => Some(o.response_timeout),
        };
        self.timer = t;
        io.set_timeout(d);
    }

    /// Graceful shutdown: close now if idle, else after the current response.
    pub(crate) fn drain(&mut self, io: &mut Io<'_>) {
        self.set(DRAINING, true);
        let grace = self.sh.opts.drain_idle_grace;
        if self.st == St::Head && self.cur.is_none() && !self.has(HEAD_STARTED) && !grace.is_zero()
        {
            // Idle between requests, with a grace: a request that comes in it is answered
            // (Connection: close, DRAINING), else the idle timer closes the connection.
            self.timer = Timer::Idle;
            io.set_timeout(Some(grace));
        } else if self.st == St::Head && self.cur.is_none() && !self.has(HEAD_STARTED) {
            // Idle between requests: like nginx closing its keep-alive connections, no
            // lingering (unless bytes are already waiting).
            self.st = St::Dead;
            io.close_no_linger();
        } else if !self.has(HEAD_SENT) {
            self.set(KEEP_ALIVE, false);
        }
    }

    /// Answers an error the connection found itself, then closes.
    fn reject(&mut self, io: &mut Io<'_>, status: u16) {
        log::debug!("rejecting request from {}: {status}", io.peer());
        if let Some(id) = self.cur.take() {
            self.sh.ctx.with(id, |e| e.rejected(status));
            self.abort_exchange(id);
        }
        if !self.has(HEAD_SENT) {
            let body = reason(status).as_bytes();
            let mut t = Fixed::<96>::new();
            t.put(b"Content-Type: text/plain\r\nContent-Length: ");
            t.put(super::decimal(body.len() as u64 + 1, &mut [0; 20]));
            t.put(b"\r\nConnection: close\r\n\r\n");
            let mut cache = self.sh.head.borrow_mut();
            let prefix = cache.prefix(io.now(), 1, status);
            if self.has(IS_HEAD) {
                // RFC 9110 §9.3.2: the answer to HEAD has no content, errors included.
                io.write_parts(&[prefix, t.bytes()]);
            } else {
                io.write_parts(&[prefix, t.bytes(), body, b"\n"]);
            }
            io.close();
        } else {
            io.abort();
        }
        self.st = St::Dead;
        self.arm(io, Timer::None);
    }

    /// Tells the exchange's owner it is over and frees it.
    fn abort_exchange(&mut self, id: ExId) {
        self.sh.ctx.abort(id, self.st == St::Body);
    }

    /// Parses a head at the start of `input`; returns bytes consumed (0 = need more).
    fn read_head(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        if !self.has(HEAD_STARTED) {
            self.set(HEAD_STARTED, true);
            self.arm(io, Timer::Header);
        }
        let ctx = self.sh.ctx.clone();
        let id = *self.cur.get_or_insert_with(|| ctx.alloc(io.token()));
        let limits = Limits {
            max_head: self.sh.opts.max_head,
            max_line: self.sh.opts.max_line,
        };
        let Some(mut req) = ctx.with(id, |e| e.req.take()).flatten() else {
            self.reject(io, 500);
            return input.len();
        };
        let parsed = parse::parse_head(input, &limits, &mut req);
        let (n, fr) = match parsed {
            Ok(Some(x)) => x,
            Ok(None) => {
                ctx.with(id, |e| e.req = Some(req));
                return 0;
            }
            Err(status) => {
                ctx.with(id, |e| e.req = Some(req));
                // (The head did not parse: its method is what it starts with.)
                let start = input.iter().position(|&c| c != b'\r' && c != b'\n');
                let is_head = start.is_some_and(|i| input[i..].starts_with(b"HEAD "));
                self.set(IS_HEAD, is_head);
                self.reject(io, status);
                return input.len();
            }
        };
        self.set(HEAD_STARTED, false);
        self.minor = req.minor;
        self.set(KEEP_ALIVE, fr.keep_alive && !self.has(DRAINING));
        self.set(CLIENT_CLOSE, !fr.keep_alive);
        self.set(IS_HEAD, fr.is_head);
        self.set(HEAD_SENT | CHUNKED_OUT | NO_BODY | TRAILER_SENT, false);
        self.body_seen = 0;
        self.body = match fr.body {
            BodyKind::None => BodyState::None,
            BodyKind::Length(len) => {
                if len > self.sh.opts.max_body {
                    ctx.with(id, |e| e.req = Some(req));
                    self.reject(io, 413);
                    return input.len();
                }
                BodyState::Length(len)
            }
            BodyKind::Chunked => BodyState::Chunked(Box::new(Decoder::new())),
        };
        req.peer = io.peer();
        req.proto = Proto::Http;
        req.tls = io.transport().and_then(|t| t.info());
        req.local = self.sh.locals.borrow().get(self.local).or_else(|| {
            self.sh
                .listeners
                .borrow()
                .get(self.listener as usize)
                .and_then(|l| l.1)
        });
        self.arm(io, Timer::None);
        ctx.with(id, |e| e.upgradable = req.minor == 1);

        // Call the handler, with the request out of the pool's RefCell.
        let res = Response {
            ctx: ctx.clone(),
            id,
            done: false,
        };
        ctx.running.set(Some(io.token()));
        let handler = self.sh.handler.clone();
        handler(io.lp(), &mut req, res);
        ctx.running.set(None);
        let wants_body = req.body_cb.is_some();
        let expect = req.expect_continue;
        let alive = ctx.with(id, |e| e.req = Some(req)).is_some();
        if !alive {
            return n;
        }
        let started = ctx
            .with(id, |e| e.phase != Phase::Open || e.flush)
            .unwrap_or(true);
        match self.body {
            BodyState::None => {
                if wants_body {
                    self.deliver(Body::End);
                }
                self.st = St::Wait;
            }
            _ if expect && !wants_body => {
                // The client waits for 100 before sending a body nobody wants: answer
                // without reading it, then close.
                self.set(KEEP_ALIVE, false);
                self.st = St::Wait;
            }
            _ => {
                if expect && !started {
                    io.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                self.st = St::Body;
                self.arm(io, Timer::Body);
            }
        }
        n
    }

    /// Passes a body event to the handler's callback.
    fn deliver(&mut self, b: Body<'_>) {
        if let Some(id) = self.cur {
            self.sh.ctx.deliver_body(id, b);
        }
    }

    /// Consumes body bytes; returns bytes consumed.
    fn read_body(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        let max = self.sh.opts.max_body;
        match &mut self.body {
            BodyState::None => {
                self.st = St::Wait;
                0
            }
            BodyState::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                *left -= n as u64;
                let done = *left == 0;
                self.body_seen += n as u64;
                if n > 0 {
                    self.deliver(Body::Data(&input[..n]));
                }
                if done {
                    self.deliver(Body::End);
                    self.body = BodyState::None;
                    self.st = St::Wait;
                    self.arm(io, Timer::None);
                } else {
                    self.arm(io, Timer::Body);
                }
                n
            }
            BodyState::Chunked(dec) => {
                let mut dec = std::mem::replace(dec, Box::new(Decoder::new()));
                let mut seen = self.body_seen;
                let mut over = false;
                // Every data piece goes to the handler as the decoder finds it, in order
                // (however many one read brings: 20,000 one-byte chunks in one read are
                // 20,000 pieces), until the body limit is passed.
                let (ctx, cur) = (&self.sh.ctx, self.cur);
                let r = dec.decode(input, |d| {
                    seen += d.len() as u64;
                    over |= seen > max;
                    if let (false, Some(id)) = (over, cur) {
                        ctx.deliver_body(id, Body::Data(d));
                    }
                });
                let (consumed, err) = match r {
                    Ok(n) => (n, None),
                    Err(e) => (input.len(), Some(e)),
                };
                self.body_seen = seen;
                if over {
                    self.deliver(Body::Aborted);
                    self.reject(io, 413);
                    return input.len();
                }
                match err {
                    Some(ChunkError::TooLarge) => {
                        self.deliver(Body::Aborted);
                        self.reject(io, 413);
                        return input.len();
                    }
                    Some(ChunkError::Syntax) => {
                        self.deliver(Body::Aborted);
                        self.reject(io, 400);
                        return input.len();
                    }
                    None => {}
                }
                if dec.is_done() {
                    self.deliver(Body::End);
                    self.body = BodyState::None;
                    self.st = St::Wait;
                    self.arm(io, Timer::None);
                } else {
                    self.body = BodyState::Chunked(dec);
                    self.arm(io, Timer::Body);
                }
                consumed
            }
        }
    }

    /// Moves the current response's output to the connection. Returns whether the
    /// response is complete. An abandoned one ([`crate::Response::abort`]) ends the
    /// exchange and closes the connection once its output is written (not complete).
    fn collect(&mut self, io: &mut Io<'_>) -> bool {
        let Some(id) = self.cur else { return false };
        if matches!(self.st, St::Head | St::Dead | St::Gone) {
            return false;
        }
        let ctx = self.sh.ctx.clone();
        let queued_before = io.queued();
        let r = ctx.with(id, |e| {
            if e.drain_cb.is_some() {
                io.notify_drained();
            }
            if !self.has(HEAD_SENT) {
                if e.cut_unsent() {
                    return Collected::Cut;
                }
                if e.phase == Phase::Open && !e.flush {
                    return Collected::Pending;
                }
                // (A cut response streams what was flushed, never with a length.)
                let done = e.phase == Phase::Done && !e.cut;
                // A finished response whose body is one copied or small static piece goes
                // out with its head in one copy.
                let inline: Option<&[u8]> = match (done, e.pieces.as_slice()) {
                    (true, []) => Some(&[]),
                    (true, [Piece::Copied(n)]) => Some(&e.bytes[..*n]),
                    (true, [Piece::Static(s)]) if s.len() <= SMALL_STATIC => Some(s),
                    _ => None,
                };
                let head = Head {
                    status: e.status,
                    hdrs: &e.hdrs,
                    done,
                    len: e.body_len,
                };
                self.write_head(io, head, inline.unwrap_or_default());
                if inline.is_some() {
                    e.pieces.clear();
                    e.bytes.clear();
                }
            }
            let no_body = self.has(NO_BODY);
            let chunked = self.has(CHUNKED_OUT);
            let mut framing = Vec::new();
            e.drain_pieces(|p| {
                if no_body {
                    return;
                }
                if chunked {
                    framing.clear();
                    chunked::size_line(p.len() as usize, &mut framing);
                    io.write(&framing);
                }
                match p {
                    PieceRef::Bytes(b) => io.write(b),
                    PieceRef::Static(s) => io.write_static(s),
                    PieceRef::Owned(o) => io.write_owned(o),
                    PieceRef::File(f, off, len) => io.write_file(f, off, len),
                }
                if chunked {
                    io.write(b"\r\n");
                }
            });
            e.flush = false;
            if self.has(BLOCKED) {
                e.conn_queued = io.queued();
            }
            if io.queued() > queued_before && self.timer == Timer::Response {
                // Output moved: the response is alive; its timeout starts again.
                self.arm(io, Timer::Response);
            }
            if e.cut {
                // Without the last chunk.
                return Collected::Cut;
            }
            if e.phase == Phase::Done {
                if chunked && !self.has(TRAILER_SENT) {
                    io.write(b"0\r\n\r\n");
                    self.set(TRAILER_SENT, true);
                }
                return Collected::Complete;
            }
            Collected::Pending
        });
        match r.unwrap_or(Collected::Pending) {
            Collected::Complete => true,
            Collected::Pending => false,
            Collected::Cut => {
                self.cur = None;
                ctx.release(id);
                self.st = St::Dead;
                io.close();
                false
            }
        }
    }

    /// Writes the response head, followed by `body` (the whole body of a finished response,
    /// or empty) unless the response has none.
    fn write_head(&mut self, io: &mut Io<'_>, head: Head<'_>, body: &[u8]) {
        let Head {
            status,
            hdrs,
            done,
            len,
        } = head;
        let no_body = self.has(IS_HEAD) || status == 204 || status == 304 || status < 200;
        self.set(NO_BODY, no_body);
        // The framing: at most 38 (Content-Length) + 24 (Connection) + 2 bytes.
        let mut t = Fixed::<96>::new();
        if done {
            if status != 204 && status != 304 && status >= 200 {
                t.put(b"Content-Length: ");
                t.put(super::decimal(len, &mut [0; 20]));
                t.put(b"\r\n");
            }
        } else if !no_body || self.has(IS_HEAD) {
            if self.minor == 1 {
                t.put(b"Transfer-Encoding: chunked\r\n");
                self.set(CHUNKED_OUT, !no_body);
            } else {
                // HTTP/1.0 streaming: the body ends when the connection closes.
                self.set(KEEP_ALIVE, false);
            }
        }
        if self.sh.draining.get() {
            self.set(KEEP_ALIVE, false);
        }
        if status == 101 {
            // Switching protocols: its `Connection: upgrade` is among the user's headers.
        } else if !self.has(KEEP_ALIVE) {
            t.put(b"Connection: close\r\n");
        } else if self.minor == 0 {
            t.put(b"Connection: keep-alive\r\n");
        }
        t.put(b"\r\n");
        self.set(HEAD_SENT, true);
        let mut cache = self.sh.head.borrow_mut();
        let prefix = cache.prefix(io.now(), self.minor, status);
        let body = if no_body { &[][..] } else { body };
        io.write_parts(&[prefix, hdrs, t.bytes(), body]);
    }

    /// A request read whole whose response is not complete: from now on the response
    /// timeout runs (restarted by each piece of output, see `collect`). Armed only here, at
    /// the end of a callback, so a response finished by its handler at once costs no timer.
    fn await_response(&mut self, io: &mut Io<'_>) {
        if self.st == St::Wait && self.cur.is_some() && self.timer == Timer::None {
            self.arm(io, Timer::Response);
        }
    }

    /// Finishes the current exchange if its response is complete and its body read.
    fn try_complete(&mut self, io: &mut Io<'_>) -> bool {
        if self.st != St::Wait {
            return false;
        }
        if !self.collect(io) {
            return false;
        }
        if let Some(id) = self.cur.take() {
            let upgrade = self.sh.ctx.with(id, |e| e.upgrade.take()).flatten();
            self.sh.ctx.release(id);
            if let Some(up) = upgrade {
                // The connection leaves this server: it no longer counts for a drain.
                self.st = St::Gone;
                self.arm(io, Timer::None);
                self.sh.conns.set(self.sh.conns.get() - 1);
                finish_drain(io.lp(), &self.sh);
                up(io);
                return false;
            }
        }
        // The response is out: until the next head is parsed, no response head is sent
        // (an error answered to a bad pipelined request after this one, or a 408, is a
        // whole answer, not a cut) and there is no HEAD request.
        self.set(
            IS_HEAD | HEAD_SENT | CHUNKED_OUT | NO_BODY | TRAILER_SENT,
            false,
        );
        if self.has(KEEP_ALIVE) && !self.sh.draining.get() {
            self.st = St::Head;
            self.arm(io, Timer::Idle);
        } else {
            self.st = St::Dead;
            if self.has(CLIENT_CLOSE) || self.sh.draining.get() {
                // The request was read whole (St::Wait): like nginx's lingering_close on,
                // no lingering unless more input is already here (`on_data` and the
                // connection check that). So too in a graceful shutdown, which would
                // otherwise wait out the lingering timeout of every client that keeps its
                // socket open after the `Connection: close` answer.
                io.close_no_linger();
            } else {
                io.close();
            }
        }
        true
    }
}

impl Protocol for HttpConn {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            match self.st {
                St::Gone => return used,
                St::Dead => {
                    if used < input.len() && (self.has(CLIENT_CLOSE) || self.sh.draining.get()) {
                        // Bytes after a request that asked to close: drain them before
                        // closing, lest the close turn into a reset.
                        io.close();
                    }
                    return input.len();
                }
                St::Head => {
                    if used == input.len() {
                        break;
                    }
                    let n = self.read_head(io, &input[used..]);
                    if n == 0 {
                        break;
                    }
                    used = (used + n).min(input.len());
                }
                St::Body => {
                    if used == input.len() {
                        break;
                    }
                    let n = self.read_body(io, &input[used..]);
                    if n == 0 && self.st == St::Body {
                        break;
                    }
                    used = (used + n).min(input.len());
                }
                St::Wait => {
                    if !self.try_complete(io) {
                        break;
                    }
                }
            }
        }
        self.collect(io);
        self.await_response(io);
        used
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        if self.st == St::Wait {
            self.try_complete(io);
        } else {
            self.collect(io);
        }
        self.await_response(io);

        // Draining: an idle connection closes (after its grace, by the idle timer, when
        // there is one); one accepted but not read from yet (its request may be on the
        // way) waits for its request like any other.
        if self.st == St::Head
            && self.cur.is_none()
            && self.sh.draining.get()
            && !self.has(HEAD_STARTED)
            && self.sh.opts.drain_idle_grace.is_zero()
        {
            self.st = St::Dead;
            io.close_no_linger();
        }
    }

    fn on_eof(&mut self, io: &mut Io<'_>) {
        self.set(KEEP_ALIVE, false);
        match self.st {
            St::Head | St::Dead => {
                self.st = St::Dead;
                io.close();
            }
            St::Body => {
                // The body can never complete.
                self.deliver(Body::Aborted);
                if let Some(id) = self.cur.take() {
                    self.abort_exchange(id);
                }
                self.st = St::Dead;
                io.close();
            }
            // A half-closed client still gets its response; then we close.
            St::Wait => {}
            St::Gone => {}
        }
    }

    fn on_timeout(&mut self, io: &mut Io<'_>) {
        match self.timer {
            Timer::Header if self.has(HEAD_STARTED) && self.cur.is_some() => self.reject(io, 408),
            Timer::Body => {
                self.deliver(Body::Aborted);
                self.reject(io, 408);
            }
            Timer::Write => io.abort(),
            Timer::Response => {
                let id = self.cur;
                if id.is_some_and(|id| self.sh.ctx.with(id, |e| e.has_output()) == Some(true)) {
                    // Output came in the same iteration as the timeout (a late loop): the
                    // response is alive.
                    self.arm(io, Timer::Response);
                    if self.st == St::Wait {
                        self.try_complete(io);
                    } else {
                        self.collect(io);
                    }
                    return;
                }
                log::warn!(
                    "response to {} timed out after {:?}: {}",
                    io.peer(),
                    self.sh.opts.response_timeout,
                    if self.has(HEAD_SENT) {
                        "cutting it short"
                    } else {
                        "answering 504"
                    }
                );
                self.reject(io, 504);
            }
            _ => {
                // An idle keep-alive connection (or one that never sent a byte) times out:
                // closed at once, as nginx does, without the lingering drain.
                self.st = St::Dead;
                io.close_no_linger();
            }
        }
    }

    fn on_write_blocked(&mut self, io: &mut Io<'_>) {
        self.set(BLOCKED, true);
        if let Some(id) = self.cur {
            let q = io.queued();
            self.sh.ctx.with(id, |e| e.conn_queued = q);
        }
        if self.timer != Timer::Body && self.timer != Timer::Header {
            self.arm(io, Timer::Write);
        }
    }

    fn on_drained(&mut self, io: &mut Io<'_>) {
        self.set(BLOCKED, false);
        if let Some(id) = self.cur {
            self.sh.ctx.drained(io.lp(), id);
        }
        if self.timer == Timer::Write {
            let next = match self.st {
                St::Head if self.has(HEAD_STARTED) => Timer::Header,
                St::Head => Timer::Idle,
                St::Wait if self.cur.is_some() => Timer::Response,
                _ => Timer::None,
            };
            self.arm(io, next);
        }
    }

    fn on_close(&mut self, lp: &mut Loop, token: Token, err: Option<&std::io::Error>) {
        if let Some(e) = err {
            log::debug!("http connection {token:?} closed: {e}");
        }
        if let Some(id) = self.cur.take() {
            self.abort_exchange(id);
        }
        self.sh.conns.set(self.sh.conns.get() - 1);
        finish_drain(lp, &self.sh);
    }
}
