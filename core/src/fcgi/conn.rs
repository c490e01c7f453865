//! The FastCGI connection driver: several requests multiplexed on one connection, each
//! answered as it completes; GET_VALUES answered without the application; never a record
//! the front end did not ask for.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::params::{index_params, Known};
use super::record::{self, kind, Decoder, Event};
use crate::app::{Body, Collected, Ctx, ExId, Phase, PieceRef, Protocol as Proto, Response};
use crate::http::{decimal, reason};
use crate::net::{Io, PeerAddr, Protocol};
use crate::reactor::{Loop, Token};
use crate::server::{finish_drain, Shared};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Receiving PARAMS.
    Params,
    /// Handler called; receiving STDIN.
    Stdin,
    /// STDIN complete (or ignored); waiting for the response.
    Wait,
}

struct Active {
    id: u16,
    ex: ExId,
    stage: Stage,
    keep: bool,
    /// The STDIN stream ended: the front end sends nothing more for this request.
    input_done: bool,
    params_len: usize,
    /// STDIN bytes received (against `max_body`).
    body_seen: u64,
    head_sent: bool,
    no_body: bool,
    /// When the request's current wait ends (PARAMS: the header timeout from BEGIN; STDIN:
    /// the body timeout from its last record; the response: the response timeout from its
    /// last output). None: no limit.
    deadline: Option<Instant>,
}

pub(crate) struct FcgiConn {
    sh: Rc<Shared>,
    dec: Decoder,
    reqs: Vec<Active>,
    /// Reused for building records.
    scratch: Vec<u8>,
    close_when_idle: bool,
    /// Close once idle, without lingering: every request that asked for the close had sent
    /// all its input (with `close_when_idle` too, the close lingers).
    close_done: bool,
    draining: bool,
    /// A response whose head was sent must be cut short: close once its records are out.
    cut: bool,
}

impl FcgiConn {
    pub(crate) fn new(sh: Rc<Shared>) -> FcgiConn {
        FcgiConn {
            sh,
            dec: Decoder::new(),
            reqs: Vec::new(),
            scratch: Vec::new(),
            close_when_idle: false,
            close_done: false,
            draining: false,
            cut: false,
        }
    }

    /// Whether this connection belongs to the server of `sh`.
    pub(crate) fn serves(&self, sh: &Rc<Shared>) -> bool {
        Rc::ptr_eq(&self.sh, sh)
    }

    pub(crate) fn ctx(&self) -> Rc<Ctx> {
        self.sh.ctx.clone()
    }

    pub(crate) fn start(&mut self, io: &mut Io<'_>) {
        io.set_timeout(Some(self.sh.opts.idle_timeout));
    }

    /// Graceful shutdown for a connection accepted while the server drains: it closes once
    /// the requests it brings are answered.
    pub(crate) fn drain_after_requests(&mut self) {
        self.draining = true;
    }

    pub(crate) fn drain(&mut self, io: &mut Io<'_>) {
        self.draining = true;
        if self.reqs.is_empty() {
            // Idle: nothing in flight to drain for (unless bytes are already waiting).
            io.close_no_linger();
        }
    }

    fn find(&self, id: u16) -> Option<usize> {
        self.reqs.iter().position(|r| r.id == id)
    }

    fn flush_scratch(&mut self, io: &mut Io<'_>) {
        if !self.scratch.is_empty() {
            io.write(&self.scratch);
            self.scratch.clear();
        }
    }

    fn event(&mut self, io: &mut Io<'_>, ev: Event<'_>) {
        match ev {
            Event::Begin { id, role, flags } => self.begin(io, id, role, flags),
            Event::Abort { id } => {
                if let Some(i) = self.find(id) {
                    let a = self.reqs.remove(i);
                    self.abort_exchange(&a);
                    record::put_end(&mut self.scratch, id, 0, record::REQUEST_COMPLETE);
                    self.flush_scratch(io);
                    if !a.keep {
                        self.close_when_idle = true;
                    }
                }
            }
            Event::Stream {
                id,
                kind: kind::PARAMS,
                data,
                end,
            } => self.params(io, id, data, end),
            Event::Stream {
                id,
                kind: kind::STDIN,
                data,
                end,
            } => self.stdin(io, id, data, end),
            // DATA belongs to the FILTER role, which is refused; records for inactive ids
            // (and an empty DATA for a responder) are ignored.
            Event::Stream { .. } => {}
            Event::Other {
                id: 0,
                kind: kind::GET_VALUES,
                content,
            } => self.get_values(io, content),
            Event::Other { id: 0, kind: k, .. } => {
                record::put_record(
                    &mut self.scratch,
                    kind::UNKNOWN_TYPE,
                    0,
                    &[k, 0, 0, 0, 0, 0, 0, 0],
                );
                self.flush_scratch(io);
            }
            Event::Other { .. } => {}
        }
    }

    fn begin(&mut self, io: &mut Io<'_>, id: u16, role: u16, flags: u8) {
        if self.find(id).is_some() {
            return; // a BEGIN for an active id: ignored
        }
        let keep = flags & record::KEEP_CONN != 0;
        let max = self.sh.opts.fcgi_max_requests;
        let refusal = if role != record::RESPONDER && role != record::AUTHORIZER {
            Some(record::UNKNOWN_ROLE)
        } else if self.reqs.len() >= max {
            // FastCGI 1.0 §5.5: a new request the application cannot take is refused with
            // END_REQUEST, FCGI_CANT_MPX_CONN from an application serving one request per
            // connection, FCGI_OVERLOADED when it runs out of a resource.
            log::warn!(
                "fcgi: {} requests open on the connection from {}: refusing request {id}",
                self.reqs.len(),
                io.peer()
            );
            Some(if max <= 1 {
                record::CANT_MPX_CONN
            } else {
                record::OVERLOADED
            })
        } else {
            None
        };
        if let Some(status) = refusal {
            record::put_end(&mut self.scratch, id, 0, status);
            self.flush_scratch(io);
            if !keep {
                self.close_when_idle = true;
            }
            return;
        }
        let ex = self.sh.ctx.alloc(io.token());
        self.sh.ctx.with(ex, |e| {
            e.rid = id;
            e.proto = Proto::Fcgi;
            if let Some(r) = e.req.as_mut() {
                r.proto = Proto::Fcgi;
            }
        });
        self.reqs.push(Active {
            id,
            ex,
            stage: Stage::Params,
            keep,
            input_done: false,
            params_len: 0,
            body_seen: 0,
            head_sent: false,
            no_body: false,
            deadline: Some(io.now() + self.sh.opts.header_timeout),
        });
    }

    fn params(&mut self, io: &mut Io<'_>, id: u16, data: &[u8], end: bool) {
        let Some(i) = self.find(id) else { return };
        if self.reqs[i].stage != Stage::Params {
            return;
        }
        let ex = self.reqs[i].ex;
        let new_len = self.reqs[i].params_len.checked_add(data.len());
        match new_len {
            Some(n) if n <= self.sh.opts.max_params => {
                self.reqs[i].params_len = n;
                self.sh.ctx.with(ex, |e| {
                    if let Some(r) = e.req.as_mut() {
                        r.buf.extend_from_slice(data);
                    }
                });
            }
            _ => {
                // Too large: answer 431 ourselves; the rest of this request is ignored.
                self.answer_now(io, i, 431);
                return;
            }
        }
        if end {
            self.call_handler(io, i);
        }
    }

    /// Turns the accumulated PARAMS into the request model and calls the handler.
    fn call_handler(&mut self, io: &mut Io<'_>, i: usize) {
        let ctx = self.sh.ctx.clone();
        let ex = self.reqs[i].ex;
        let Some(mut req) = ctx.with(ex, |e| e.req.take()).flatten() else {
            return;
        };
        let params_end = req.buf.len();
        let Some(known) = index_params(&mut req) else {
            // Malformed params: the front end is broken; end this request.
            ctx.with(ex, |e| e.req = Some(req));
            let a = self.reqs.remove(i);
            self.abort_exchange(&a);
            record::put_end(&mut self.scratch, a.id, 1, record::REQUEST_COMPLETE);
            self.flush_scratch(io);
            return;
        };
        let get = |k: Known| known[k as usize];
        let empty = (params_end as u32, params_end as u32);
        let method = get(Known::Method).unwrap_or_else(|| req.store(b"GET"));
        let target = get(Known::Uri)
            .or(get(Known::DocumentUri))
            .or(get(Known::ScriptName))
            .unwrap_or_else(|| req.store(b"/"));
        let qpos = req.span(target).iter().position(|&c| c == b'?');
        req.method = method;
        req.target = target;
        req.path = match qpos {
            Some(p) => (target.0, target.0 + p as u32),
            None => target,
        };
        req.query = get(Known::Query).unwrap_or(empty);
        req.minor = if get(Known::Protocol).is_some_and(|v| req.span(v) == b"HTTP/1.0") {
            0
        } else {
            1
        };
        req.content_length = get(Known::ContentLength)
            .and_then(|v| std::str::from_utf8(req.span(v)).ok()?.parse().ok());
        let addr = |a: Known, p: Known| -> Option<SocketAddr> {
            let ip = std::str::from_utf8(req.span(get(a)?)).ok()?.parse().ok()?;
            let port = std::str::from_utf8(req.span(get(p)?)).ok()?.parse().ok()?;
            Some(SocketAddr::new(ip, port))
        };
        let peer =
            addr(Known::RemoteAddr, Known::RemotePort).map_or(PeerAddr::Unix, PeerAddr::Inet);
        let local = addr(Known::ServerAddr, Known::ServerPort);
        req.peer = peer;
        req.local = local;
        req.proto = Proto::Fcgi;
        self.reqs[i].no_body = req.method() == "HEAD";
        let too_long = req
            .content_length
            .is_some_and(|n| n > self.sh.opts.max_body);
        ctx.with(ex, |e| e.req = Some(req));
        if too_long {
            // Refused before the handler sees it, as over HTTP.
            self.answer_now(io, i, 413);
            return;
        }
        let Some(mut req) = ctx.with(ex, |e| e.req.take()).flatten() else {
            return;
        };
        self.reqs[i].stage = Stage::Stdin;
        self.reqs[i].deadline = Some(io.now() + self.sh.opts.body_timeout);

        let res = Response {
            ctx: ctx.clone(),
            id: ex,
            done: false,
        };
        ctx.running.set(Some(io.token()));
        let handler = self.sh.handler.clone();
        handler(io.lp(), &mut req, res);
        ctx.running.set(None);
        ctx.with(ex, |e| e.req = Some(req));
    }

    fn deliver(&self, ex: ExId, b: Body<'_>) {
        self.sh.ctx.deliver_body(ex, b);
    }

    fn stdin(&mut self, io: &mut Io<'_>, id: u16, data: &[u8], end: bool) {
        let Some(i) = self.find(id) else { return };
        if self.reqs[i].stage != Stage::Stdin {
            return;
        }
        let ex = self.reqs[i].ex;
        let respond_by = self.response_deadline(io);
        let a = &mut self.reqs[i];
        a.body_seen += data.len() as u64;
        if a.body_seen > self.sh.opts.max_body {
            // Over the body limit: 413 and END_REQUEST now; the rest of this request's
            // STDIN finds no request and is dropped as it comes (nothing buffered).
            self.answer_now(io, i, 413);
            return;
        }
        a.deadline = Some(io.now() + self.sh.opts.body_timeout);
        if end {
            a.stage = Stage::Wait;
            a.input_done = true;
            a.deadline = respond_by;
        }
        if !data.is_empty() {
            self.deliver(ex, Body::Data(data));
        }
        if end {
            self.deliver(ex, Body::End);
        }
    }

    /// When a response waited for from now must have made progress (None: no limit).
    fn response_deadline(&self, io: &Io<'_>) -> Option<Instant> {
        let t = self.sh.opts.response_timeout;
        (!t.is_zero()).then(|| io.now() + t)
    }

    /// Ends request `i` with the library's own answer, at once: `status` with a text/plain
    /// reason (no body for HEAD), an empty STDOUT and END_REQUEST. Its exchange is aborted
    /// (the handler, if it was called, is told; its response handle goes stale). A request
    /// whose response head was already sent cannot be answered again: it is cut short
    /// instead (a STDERR record says why, then the connection closes, as after
    /// [`crate::Response::abort`]). Records still coming for it are ignored.
    fn answer_now(&mut self, io: &mut Io<'_>, i: usize, status: u16) {
        let a = self.reqs.remove(i);
        self.abort_exchange(&a);
        if a.head_sent {
            let msg = format!("myriad: response cut short: {status} {}", reason(status));
            record::put_record(&mut self.scratch, kind::STDERR, a.id, msg.as_bytes());
            self.cut = true;
        } else {
            let body = reason(status);
            record::put_record_with(&mut self.scratch, kind::STDOUT, a.id, |out| {
                let t = &mut [0; 20];
                out.extend_from_slice(b"Status: ");
                out.extend_from_slice(decimal(status.into(), t));
                out.push(b' ');
                out.extend_from_slice(body.as_bytes());
                out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
                out.extend_from_slice(decimal(body.len() as u64 + 1, t));
                out.extend_from_slice(b"\r\n\r\n");
                if !a.no_body {
                    out.extend_from_slice(body.as_bytes());
                    out.push(b'\n');
                }
            });
            record::put_record(&mut self.scratch, kind::STDOUT, a.id, b"");
            record::put_end(&mut self.scratch, a.id, 0, record::REQUEST_COMPLETE);
        }
        self.flush_scratch(io);
        if !a.keep {
            if a.input_done {
                self.close_done = true;
            } else {
                self.close_when_idle = true;
            }
        }
    }

    fn get_values(&mut self, io: &mut Io<'_>, content: &[u8]) {
        let Some(asked) = record::nv_pairs(content) else {
            return;
        };
        let mut out = Vec::new();
        let max = self.sh.opts.fcgi_max_requests.max(1);
        let mut t = [0; 20];
        let max_reqs = decimal(max as u64, &mut t);
        for (name, _) in asked {
            let v: &[u8] = match name {
                b"FCGI_MAX_CONNS" => b"10000",
                // Per connection: what one connection may have open at once.
                b"FCGI_MAX_REQS" => max_reqs,
                b"FCGI_MPXS_CONNS" if max > 1 => b"1",
                b"FCGI_MPXS_CONNS" => b"0",
                _ => continue,
            };
            record::put_pair(&mut out, name, v);
        }
        record::put_record(&mut self.scratch, kind::GET_VALUES_RESULT, 0, &out);
        self.flush_scratch(io);
    }

    fn abort_exchange(&self, a: &Active) {
        self.sh.ctx.abort(a.ex, a.stage == Stage::Stdin);
    }

    /// Moves every request's output into STDOUT/STDERR records; ends finished requests. A
    /// response abandoned by its handler ([`crate::Response::abort`]) gets no
    /// `END_REQUEST`: the connection closes once its records are written, which is how a
    /// front end learns of it (aborting the connection's other requests too).
    fn collect(&mut self, io: &mut Io<'_>) {
        let ctx = self.sh.ctx.clone();
        let mut cut = false;
        let mut i = 0;
        while i < self.reqs.len() {
            let a = &mut self.reqs[i];
            if a.stage == Stage::Params {
                i += 1;
                continue;
            }
            let scratch = &mut self.scratch;
            let before = scratch.len() + io.queued();
            let done = ctx
                .with(a.ex, |e| {
                    if e.drain_cb.is_some() {
                        io.notify_drained();
                    }
                    if !a.head_sent {
                        if e.cut_unsent() {
                            return Collected::Cut;
                        }
                        if e.phase == Phase::Open && !e.flush {
                            return Collected::Pending;
                        }
                        // The response head as CGI headers.
                        let bodiless = e.status == 204 || e.status == 304;
                        record::put_record_with(scratch, kind::STDOUT, a.id, |head| {
                            let t = &mut [0; 20];
                            head.extend_from_slice(b"Status: ");
                            head.extend_from_slice(decimal(e.status.into(), t));
                            head.push(b' ');
                            head.extend_from_slice(reason(e.status).as_bytes());
                            head.extend_from_slice(b"\r\n");
                            head.extend_from_slice(&e.hdrs);
                            if e.phase == Phase::Done && !e.cut && !bodiless {
                                head.extend_from_slice(b"Content-Length: ");
                                head.extend_from_slice(decimal(e.body_len, t));
                                head.extend_from_slice(b"\r\n");
                            }
                            head.extend_from_slice(b"\r\n");
                        });
                        a.head_sent = true;
                        a.no_body |= bodiless;
                    }
                    let no_body = a.no_body;
                    let id = a.id;
                    e.drain_pieces(|p| {
                        if no_body {
                            return;
                        }
                        match p {
                            PieceRef::Bytes(b) => record::put_record(scratch, kind::STDOUT, id, b),
                            PieceRef::Static(s) => {
                                put_big(scratch, io, id, s, |io| io.write_static(s))
                            }
                            PieceRef::Owned(o) => {
                                let len = (*o).as_ref().len();
                                if len <= 65535 {
                                    let pad = record::put_header(scratch, kind::STDOUT, id, len);
                                    io.write(scratch);
                                    scratch.clear();
                                    io.write_owned(o);
                                    scratch.extend_from_slice(&[0u8; 8][..pad]);
                                } else {
                                    record::put_record(scratch, kind::STDOUT, id, (*o).as_ref());
                                }
                            }
                            PieceRef::File(f, off, len) => {
                                // Read into STDOUT records a block at a time as the
                                // connection drains (no sendfile to a FastCGI socket).
                                io.write(scratch);
                                scratch.clear();
                                io.write_file_framed(f, off, len, id);
                            }
                        }
                    });
                    if !e.errs.is_empty() {
                        record::put_record(scratch, kind::STDERR, id, &e.errs);
                        e.errs.clear();
                    }
                    e.flush = false;
                    if e.cut {
                        return Collected::Cut;
                    }
                    if e.phase == Phase::Done {
                        record::put_record(scratch, kind::STDOUT, id, b"");
                        record::put_end(scratch, id, 0, record::REQUEST_COMPLETE);
                        return Collected::Complete;
                    }
                    Collected::Pending
                })
                .unwrap_or(Collected::Pending);
            if a.stage == Stage::Wait && self.scratch.len() + io.queued() > before {
                // Output moved: the response is alive; its timeout starts again.
                let t = self.sh.opts.response_timeout;
                a.deadline = (!t.is_zero()).then(|| io.now() + t);
            }
            if done == Collected::Cut {
                let a = self.reqs.remove(i);
                ctx.release(a.ex);
                // For the front end's log: a close alone looks like the end of the output
                // to nginx without keep_conn.
                record::put_record(
                    &mut self.scratch,
                    kind::STDERR,
                    a.id,
                    b"myriad: response abandoned by the application",
                );
                cut = true;
            } else if done == Collected::Complete {
                let a = self.reqs.remove(i);
                // A response finished before its STDIN ended: the rest is ignored (and
                // drained by a lingering close).
                ctx.release(a.ex);
                if !a.keep {
                    if a.input_done {
                        self.close_done = true;
                    } else {
                        self.close_when_idle = true;
                    }
                }
            } else {
                i += 1;
            }
        }
        self.flush_scratch(io);
        if cut || self.cut {
            // (The connection's other requests are aborted when it closes.)
            io.close();
            return;
        }
        if self.reqs.is_empty() {
            if self.close_when_idle || self.draining {
                io.close();
            } else if self.close_done {
                // Without KEEP_CONN the front end waits for our close, and sends nothing
                // more after the request's STDIN: no shutdown and drain first.
                io.close_no_linger();
            } else {
                io.set_timeout(Some(self.sh.opts.idle_timeout));
            }
        } else {
            // The earliest request deadline is the connection's (none: no timer).
            let next = self.reqs.iter().filter_map(|a| a.deadline).min();
            io.set_deadline(next);
        }
    }

    /// The requests whose deadline passed: PARAMS or STDIN that stopped coming gets 408, a
    /// response that did not come 504 (or is cut short if it had started).
    fn expire(&mut self, io: &mut Io<'_>) {
        let now = io.now();
        let mut i = 0;
        while i < self.reqs.len() {
            let a = &self.reqs[i];
            if a.deadline.is_none_or(|d| d > now) {
                i += 1;
                continue;
            }
            if a.stage == Stage::Wait && self.sh.ctx.with(a.ex, |e| e.has_output()) == Some(true) {
                // Output came in the same iteration as the timeout (a late loop): alive;
                // `collect` restarts its clock.
                i += 1;
                continue;
            }
            let (status, what, after): (u16, &str, Duration) = match a.stage {
                Stage::Params => (408, "params", self.sh.opts.header_timeout),
                Stage::Stdin => (408, "body", self.sh.opts.body_timeout),
                Stage::Wait => (504, "response", self.sh.opts.response_timeout),
            };
            log::warn!(
                "fcgi: request {} from {}: {what} timed out after {after:?}",
                a.id,
                io.peer()
            );
            self.answer_now(io, i, status);
        }
    }
}

/// Writes a static piece as STDOUT records without copying it when it fits one record.
fn put_big(
    scratch: &mut Vec<u8>,
    io: &mut Io<'_>,
    id: u16,
    s: &'static [u8],
    zero_copy: impl FnOnce(&mut Io<'_>),
) {
    if s.len() <= 65535 && s.len() > 1024 {
        let pad = record::put_header(scratch, kind::STDOUT, id, s.len());
        io.write(scratch);
        scratch.clear();
        zero_copy(io);
        scratch.extend_from_slice(&[0u8; 8][..pad]);
    } else {
        record::put_record(scratch, kind::STDOUT, id, s);
    }
}

impl Protocol for FcgiConn {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            match self.dec.next(&input[used..]) {
                Err(e) => {
                    log::warn!("fcgi: {e:?} from {}: closing", io.peer());
                    io.abort();
                    return input.len();
                }
                Ok((0, None)) => break,
                Ok((n, ev)) => {
                    used += n;
                    if let Some(ev) = ev {
                        self.event(io, ev);
                    }
                }
            }
        }
        self.collect(io);
        used
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        self.collect(io);
    }

    fn on_write_blocked(&mut self, io: &mut Io<'_>) {
        // One connection carries every request's output: each one's queue is all of it.
        let q = io.queued();
        for a in &self.reqs {
            self.sh.ctx.with(a.ex, |e| e.conn_queued = q);
        }
    }

    fn on_drained(&mut self, io: &mut Io<'_>) {
        for a in &self.reqs {
            self.sh.ctx.drained(io.lp(), a.ex);
        }
    }

    fn on_eof(&mut self, io: &mut Io<'_>) {
        // The front end closed: it reads nothing more either (nginx closes a connection it
        // gave up on; no front end half-closes one and waits for answers). Every request on
        // it is over: their handlers are told, and the connection goes now instead of
        // waiting for responses nobody will read.
        for a in std::mem::take(&mut self.reqs) {
            self.abort_exchange(&a);
        }
        io.close();
    }

    fn on_timeout(&mut self, io: &mut Io<'_>) {
        if self.reqs.is_empty() {
            // The idle timeout: closed at once, no lingering (nothing is in flight).
            io.close_no_linger();
            return;
        }
        self.expire(io);
        self.collect(io);
    }

    fn on_close(&mut self, lp: &mut Loop, token: Token, err: Option<&std::io::Error>) {
        if let Some(e) = err {
            log::debug!("fcgi connection {token:?} closed: {e}");
        }
        for a in std::mem::take(&mut self.reqs) {
            self.abort_exchange(&a);
        }
        self.sh.conns.set(self.sh.conns.get() - 1);
        finish_drain(lp, &self.sh);
    }
}
