//! The FastCGI connection driver: several requests multiplexed on one connection, each
//! answered as it completes; GET_VALUES answered without the application; never a record
//! the front end did not ask for.

use std::net::SocketAddr;
use std::rc::Rc;

use super::record::{self, kind, Decoder, Event};
use crate::app::{Body, Collected, Ctx, ExId, Phase, PieceRef, Protocol as Proto, Response, Span};
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
    head_sent: bool,
    no_body: bool,
    /// Answered by the library (params too large): later records are ignored.
    rejected: bool,
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
}

fn span_in(base: &[u8], part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// The parameters the request model is built from.
#[derive(Clone, Copy)]
enum Known {
    Method,
    Uri,
    DocumentUri,
    ScriptName,
    Query,
    Protocol,
    ContentLength,
    RemoteAddr,
    RemotePort,
    ServerAddr,
    ServerPort,
}

const KNOWN: [(&[u8], Known); 11] = [
    (b"REQUEST_METHOD", Known::Method),
    (b"REQUEST_URI", Known::Uri),
    (b"DOCUMENT_URI", Known::DocumentUri),
    (b"SCRIPT_NAME", Known::ScriptName),
    (b"QUERY_STRING", Known::Query),
    (b"SERVER_PROTOCOL", Known::Protocol),
    (b"CONTENT_LENGTH", Known::ContentLength),
    (b"REMOTE_ADDR", Known::RemoteAddr),
    (b"REMOTE_PORT", Known::RemotePort),
    (b"SERVER_ADDR", Known::ServerAddr),
    (b"SERVER_PORT", Known::ServerPort),
];

/// One pass over the params stream in `req.buf`: fills `req.params` (spans into the
/// buffer) and `req.headers` (HTTP_* names turned back into lower-case header names,
/// stored after the params; CONTENT_TYPE and CONTENT_LENGTH when not empty), and returns
/// the last value of each [`Known`] parameter. `None`: the stream is malformed.
fn index_params(req: &mut crate::app::Request) -> Option<[Option<Span>; KNOWN.len()]> {
    let mut known = [None; KNOWN.len()];
    let end = req.buf.len();
    req.params.clear();
    req.headers.clear();
    let mut at = 0;
    while at < end {
        let (left, (name, value)) = record::nv_pair(&req.buf[at..end]).ok()?;
        let (n, v) = (span_in(&req.buf, name), span_in(&req.buf, value));
        let http = name.starts_with(b"HTTP_");
        let header: Option<&'static [u8]> = match name {
            b"CONTENT_TYPE" if v.0 != v.1 => Some(b"content-type"),
            b"CONTENT_LENGTH" if v.0 != v.1 => Some(b"content-length"),
            _ => None,
        };
        if let Some(&(_, k)) = KNOWN.iter().find(|(kn, _)| *kn == name) {
            known[k as usize] = Some(v);
        }
        at = end - left.len();
        req.params.push((n, v));
        if http {
            let start = req.buf.len();
            for k in n.0 as usize + 5..n.1 as usize {
                let c = req.buf[k];
                req.buf.push(if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                });
            }
            req.headers.push(((start as u32, req.buf.len() as u32), v));
        } else if let Some(h) = header {
            let hn = req.store(h);
            req.headers.push((hn, v));
        }
    }
    Some(known)
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
            io.close();
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
        if role != record::RESPONDER && role != record::AUTHORIZER {
            record::put_end(&mut self.scratch, id, 0, record::UNKNOWN_ROLE);
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
            head_sent: false,
            no_body: false,
            rejected: false,
        });
        io.set_timeout(None);
    }

    fn params(&mut self, io: &mut Io<'_>, id: u16, data: &[u8], end: bool) {
        let Some(i) = self.find(id) else { return };
        if self.reqs[i].stage != Stage::Params || self.reqs[i].rejected {
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
                // Too large: answer 431 ourselves and ignore the rest of this request.
                self.reqs[i].rejected = true;
                self.reqs[i].stage = Stage::Wait;
                self.sh.ctx.with(ex, |e| {
                    e.canned(431, b"Request Header Fields Too Large\n");
                    e.phase = Phase::Done;
                });
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
        self.reqs[i].stage = Stage::Stdin;

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

    fn stdin(&mut self, _io: &mut Io<'_>, id: u16, data: &[u8], end: bool) {
        let Some(i) = self.find(id) else { return };
        if self.reqs[i].stage != Stage::Stdin {
            return;
        }
        let ex = self.reqs[i].ex;
        if !data.is_empty() {
            self.deliver(ex, Body::Data(data));
        }
        if end {
            if let Some(i) = self.find(id) {
                self.reqs[i].stage = Stage::Wait;
                self.reqs[i].input_done = true;
            }
            self.deliver(ex, Body::End);
        }
    }

    fn get_values(&mut self, io: &mut Io<'_>, content: &[u8]) {
        let Some(asked) = record::nv_pairs(content) else {
            return;
        };
        let mut out = Vec::new();
        for (name, _) in asked {
            let v: &[u8] = match name {
                b"FCGI_MAX_CONNS" => b"10000",
                b"FCGI_MAX_REQS" => b"10000",
                b"FCGI_MPXS_CONNS" => b"1",
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
            if a.stage == Stage::Params && !a.rejected {
                i += 1;
                continue;
            }
            let scratch = &mut self.scratch;
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
        if cut {
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
        // The front end will send nothing more: requests still reading STDIN cannot
        // complete; the others may still answer (a half-closed connection).
        let mut i = 0;
        while i < self.reqs.len() {
            if self.reqs[i].stage != Stage::Wait {
                let a = self.reqs.remove(i);
                self.abort_exchange(&a);
            } else {
                i += 1;
            }
        }
        self.close_when_idle = true;
        if self.reqs.is_empty() {
            io.close();
        }
    }

    fn on_timeout(&mut self, io: &mut Io<'_>) {
        if self.reqs.is_empty() {
            io.close();
        }
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
