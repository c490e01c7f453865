//! The protocol-neutral request/response model shared by HTTP/1.1 and FastCGI.
//!
//! A handler gets `&mut Request` (method, target, path, query, headers, CGI variables, peer,
//! a streamed body) and a [`Response`] handle (status, headers, write, flush, finish). The
//! response may be finished during the call, later on the loop (a timer, another event), or
//! from another thread through a [`Completion`]. Requests and responses live in pooled
//! exchanges owned by the server on each loop, so a warmed-up server allocates nothing per
//! request; an idle connection holds none of them.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::net::PeerAddr;
use crate::reactor::{Handle, Loop, Token};

/// Which protocol a request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http,
    /// FastCGI 1.0 (RESPONDER or AUTHORIZER role).
    Fcgi,
}

/// A byte range inside the request's storage.
pub(crate) type Span = (u32, u32);

/// A piece of the request body, delivered as it arrives.
#[derive(Debug)]
pub enum Body<'a> {
    /// Bytes of the body (in order; never empty).
    Data(&'a [u8]),
    /// The body is complete.
    End,
    /// The body will not complete: the client went away, timed out, or sent bad framing.
    Aborted,
}

/// How a request's body is delimited (see [`Request::body_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// No body (none declared, or a length of 0).
    None,
    /// A body of this many bytes (Content-Length, FastCGI CONTENT_LENGTH).
    Known(u64),
    /// A body whose end is only known when it comes: chunked over HTTP, or a FastCGI request
    /// without a (valid) CONTENT_LENGTH, whose body ends at the empty STDIN record (it may
    /// turn out empty).
    Unknown,
}

/// A body callback: called for each piece, then once with `End` or `Aborted`.
pub type BodyFn = Box<dyn FnMut(Body<'_>)>;

/// A request. Strings are views into storage owned by the request.
pub struct Request {
    pub(crate) buf: Vec<u8>,
    pub(crate) method: Span,
    pub(crate) target: Span,
    pub(crate) path: Span,
    pub(crate) query: Span,
    pub(crate) minor: u8,
    pub(crate) headers: Vec<(Span, Span)>,
    /// FastCGI parameters (CGI variables as the front end sent them).
    pub(crate) params: Vec<(Span, Span)>,
    pub(crate) peer: PeerAddr,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) proto: Protocol,
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) body_cb: Option<BodyFn>,
    pub(crate) abort_cb: Option<Box<dyn FnOnce()>>,
    pub(crate) expect_continue: bool,
    /// The method, target, path and query spans are known to be UTF-8: the HTTP parser
    /// sets them from `&str` views. (FastCGI's come unchecked from the front end.)
    pub(crate) str_spans: bool,
    /// The TLS facts of the connection (HTTPS), shared by its requests.
    pub(crate) tls: Option<std::sync::Arc<crate::net::TlsInfo>>,
}

fn ascii_eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Request {
    pub(crate) fn new() -> Request {
        Request {
            buf: Vec::new(),
            method: (0, 0),
            target: (0, 0),
            path: (0, 0),
            query: (0, 0),
            minor: 1,
            headers: Vec::new(),
            params: Vec::new(),
            peer: PeerAddr::Unix,
            local: None,
            proto: Protocol::Http,
            content_length: None,
            chunked: false,
            body_cb: None,
            abort_cb: None,
            expect_continue: false,
            str_spans: false,
            tls: None,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.headers.clear();
        self.params.clear();
        self.content_length = None;
        self.chunked = false;
        self.body_cb = None;
        self.abort_cb = None;
        self.expect_continue = false;
        self.local = None;
        self.str_spans = false;
        // Spans of an earlier request would point past the cleared storage.
        (self.method, self.target, self.path, self.query) = ((0, 0), (0, 0), (0, 0), (0, 0));
        self.tls = None;
    }

    pub(crate) fn span(&self, s: Span) -> &[u8] {
        &self.buf[s.0 as usize..s.1 as usize]
    }

    fn span_str(&self, s: Span) -> &str {
        let b = self.span(s);
        if self.str_spans {
            // SAFETY: `str_spans` is set only by the HTTP parser once these four spans
            // are views of `&str`s (split at ASCII bytes) copied whole into `buf`, which is
            // only appended to until `reset` clears the flag.
            unsafe { std::str::from_utf8_unchecked(b) }
        } else {
            std::str::from_utf8(b).unwrap_or("")
        }
    }

    /// Appends bytes to the request's storage, returning their span.
    pub(crate) fn store(&mut self, bytes: &[u8]) -> Span {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        (start, self.buf.len() as u32)
    }

    /// The method, e.g. "GET".
    pub fn method(&self) -> &str {
        self.span_str(self.method)
    }
    /// The request target as sent, e.g. "/a/b?x=1".
    pub fn target(&self) -> &str {
        self.span_str(self.target)
    }
    /// The path part of the target, e.g. "/a/b".
    pub fn path(&self) -> &str {
        self.span_str(self.path)
    }
    /// The query string without '?', "" when absent.
    pub fn query(&self) -> &str {
        self.span_str(self.query)
    }
    /// "HTTP/1.0" or "HTTP/1.1" (for FastCGI, from SERVER_PROTOCOL).
    pub fn version(&self) -> &'static str {
        if self.minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }
    /// Which protocol the request came over.
    pub fn protocol(&self) -> Protocol {
        self.proto
    }
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| ascii_eq(self.span(*n), name.as_bytes()))
            .map(|(_, v)| self.span(*v))
    }
    /// Every header, in order, duplicates kept.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers.iter().map(|(n, v)| {
            (
                std::str::from_utf8(self.span(*n)).unwrap_or(""),
                self.span(*v),
            )
        })
    }
    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
    /// The peer's address.
    pub fn peer(&self) -> PeerAddr {
        self.peer
    }
    /// The declared body length, if any (None for chunked or unknown).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
    /// How the body is delimited, as the server frames it: what a binding needs to know
    /// to decide when the body has ended (rather than re-deriving it from headers that
    /// FastCGI does not carry the same way).
    pub fn body_size(&self) -> BodySize {
        match (self.proto, self.chunked, self.content_length) {
            (Protocol::Http, true, _) => BodySize::Unknown,
            (_, _, Some(0)) | (Protocol::Http, false, None) => BodySize::None,
            (_, _, Some(n)) => BodySize::Known(n),
            (Protocol::Fcgi, _, None) => BodySize::Unknown,
        }
    }

    /// The TLS facts of the connection the request came on (HTTPS), or None.
    pub fn tls(&self) -> Option<&crate::net::TlsInfo> {
        self.tls.as_deref()
    }

    /// The URL scheme: "https" over TLS, else "http" (over FastCGI: from the front end's
    /// `HTTPS` / `REQUEST_SCHEME` parameters).
    pub fn scheme(&self) -> &'static str {
        let fcgi_https = || {
            self.proto == Protocol::Fcgi
                && self.params.iter().any(|(n, v)| {
                    let (n, v) = (self.span(*n), self.span(*v));
                    (n == b"HTTPS" && v.eq_ignore_ascii_case(b"on"))
                        || (n == b"REQUEST_SCHEME" && v == b"https")
                })
        };
        if self.tls.is_some() || fcgi_https() {
            "https"
        } else {
            "http"
        }
    }

    /// A CGI variable (RFC 3875 names plus HTTP_*): from the FastCGI parameters, or
    /// derived from the HTTP request.
    pub fn cgi(&self, name: &str) -> Option<String> {
        if self.proto == Protocol::Fcgi {
            return self
                .params
                .iter()
                .rev()
                .find(|(n, _)| self.span(*n) == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(self.span(*v)).into_owned());
        }
        self.cgi_vars()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Every CGI variable, sorted by name (last one wins for duplicates).
    pub fn cgi_vars(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        if self.proto == Protocol::Fcgi {
            for (n, val) in &self.params {
                let n = String::from_utf8_lossy(self.span(*n)).into_owned();
                let val = String::from_utf8_lossy(self.span(*val)).into_owned();
                v.retain(|(k, _)| *k != n);
                v.push((n, val));
            }
        } else {
            self.http_cgi_vars(&mut v);
        }
        v.sort();
        v
    }

    fn http_cgi_vars(&self, v: &mut Vec<(String, String)>) {
        let mut put = |k: &str, val: String| {
            v.retain(|(n, _)| n != k);
            v.push((k.to_string(), val));
        };
        put("REQUEST_METHOD", self.method().into());
        put("REQUEST_URI", self.target().into());
        put("SCRIPT_NAME", String::new());
        put("PATH_INFO", self.path().into());
        put("QUERY_STRING", self.query().into());
        put("SERVER_PROTOCOL", self.version().into());
        put("GATEWAY_INTERFACE", "CGI/1.1".into());
        put("REQUEST_SCHEME", self.scheme().into());
        if self.tls.is_some() {
            put("HTTPS", "on".into());
        }
        if let PeerAddr::Inet(a) = self.peer {
            put("REMOTE_ADDR", a.ip().to_string());
            put("REMOTE_PORT", a.port().to_string());
        }
        if let Some(a) = self.local {
            put("SERVER_ADDR", a.ip().to_string());
            put("SERVER_PORT", a.port().to_string());
        }
        if let Some(ct) = self.header("content-type") {
            put("CONTENT_TYPE", String::from_utf8_lossy(ct).into_owned());
        }
        if let Some(cl) = self.content_length {
            put("CONTENT_LENGTH", cl.to_string());
        }
        for (n, val) in self.headers() {
            if n.eq_ignore_ascii_case("content-type") || n.eq_ignore_ascii_case("content-length") {
                continue;
            }
            let key: String = std::iter::once("HTTP_".to_string())
                .chain(
                    n.chars()
                        .map(|c| {
                            if c == '-' {
                                '_'
                            } else {
                                c.to_ascii_uppercase()
                            }
                        })
                        .map(String::from),
                )
                .collect();
            let val = String::from_utf8_lossy(val).into_owned();
            // Repeated headers are joined, as CGI gateways do.
            if let Some(pos) = v.iter().position(|(k, _)| *k == key) {
                let sep = if key == "HTTP_COOKIE" { "; " } else { ", " };
                v[pos].1.push_str(sep);
                v[pos].1.push_str(&val);
            } else {
                v.push((key, val));
            }
        }
    }

    /// Streams the body to `f` as it arrives: `Data` pieces, then `End` (or `Aborted`).
    /// Registering it is what "wanting the body" means: only then does a client that sent
    /// `Expect: 100-continue` get its `100 Continue`. Without it the body is discarded.
    pub fn on_body(&mut self, f: impl FnMut(Body<'_>) + 'static) {
        self.body_cb = Some(Box::new(f));
    }

    /// Collects the whole body (the server's body limit applies) and calls `f` with it once
    /// complete, or with `None` if it was aborted.
    pub fn read_body(&mut self, f: impl FnOnce(Option<Vec<u8>>) + 'static) {
        let mut buf = Vec::with_capacity(self.content_length.unwrap_or(0).min(1 << 20) as usize);
        let mut f = Some(f);
        self.on_body(move |b| match b {
            Body::Data(d) => buf.extend_from_slice(d),
            Body::End => {
                if let Some(f) = f.take() {
                    f(Some(std::mem::take(&mut buf)))
                }
            }
            Body::Aborted => {
                if let Some(f) = f.take() {
                    f(None)
                }
            }
        });
    }

    /// Calls `f` if the request is aborted before its response finished (the client went
    /// away, or a FastCGI ABORT_REQUEST).
    pub fn on_abort(&mut self, f: impl FnOnce() + 'static) {
        self.abort_cb = Some(Box::new(f));
    }
}

/// Queued response output not yet handed to the connection.
pub(crate) enum Piece {
    /// `n` bytes of `Exchange::bytes`.
    Copied(usize),
    Static(&'static [u8]),
    Owned(Box<dyn AsRef<[u8]>>),
    /// `len` bytes of a file from `off` (see [`Response::write_file`]).
    File(Rc<std::fs::File>, u64, u64),
}

/// What a protocol's collect made of an exchange's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Collected {
    /// More is to come.
    Pending,
    /// The response is complete.
    Complete,
    /// Abandoned ([`Response::abort`]): what was flushed is queued; the connection must
    /// close without ending the response.
    Cut,
}

/// How the response body is being framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing sent yet: status and headers can still change.
    Open,
    /// Head sent; the body streams (chunked, close-delimited, or a fixed length).
    Streaming,
    /// Finished: everything is queued.
    Done,
}

/// One request/response exchange in a server's pool.
pub(crate) struct Exchange {
    pub(crate) gen: u32,
    pub(crate) live: bool,
    pub(crate) conn: Token,
    /// FastCGI request id (0 for HTTP).
    pub(crate) rid: u16,
    pub(crate) req: Option<Box<Request>>,
    pub(crate) status: u16,
    /// User headers, serialized as "Name: value\r\n".
    pub(crate) hdrs: Vec<u8>,
    pub(crate) has_content_type: bool,
    pub(crate) phase: Phase,
    /// Body bytes written while `Open` (sent with a Content-Length at finish).
    pub(crate) bytes: Vec<u8>,
    pub(crate) pieces: Vec<Piece>,
    pub(crate) body_len: u64,
    pub(crate) flush: bool,
    pub(crate) aborted: bool,
    /// The handler abandoned the response ([`Response::abort`]): once what was flushed is
    /// written, the connection closes without ending it.
    pub(crate) cut: bool,
    /// Output handed to the connection and not yet written (as last reported by it).
    pub(crate) conn_queued: usize,
    /// Bytes for the front end's error log (FastCGI STDERR).
    pub(crate) errs: Vec<u8>,
    pub(crate) proto: Protocol,
    /// Called once when the connection's output next empties (see [`Response::on_drain`]).
    pub(crate) drain_cb: Option<Box<dyn FnOnce()>>,
    /// Hands the connection to another protocol once this 101 response is written (see
    /// [`Response::upgrade`]).
    pub(crate) upgrade: Option<UpgradeFn>,
    /// The request may switch protocols (HTTP/1.1; set by the HTTP driver).
    pub(crate) upgradable: bool,
    /// Counted in flight in the supervisor's page (see `Ctx::probe`).
    pub(crate) probed: bool,
    /// Access log: when the request's first byte arrived (set only with a log).
    pub(crate) start: std::time::SystemTime,
    /// Access log: request body bytes received.
    pub(crate) body_in: u64,
    /// Access log: the status of an answer the connection gave itself (a rejected
    /// request: 400, 408, 413...), 0 for none.
    pub(crate) log_status: u16,
}

/// What [`Response::upgrade`] runs on the connection after the 101.
pub(crate) type UpgradeFn = Box<dyn FnOnce(&mut crate::net::Io<'_>)>;

impl Exchange {
    fn new() -> Exchange {
        Exchange {
            gen: 0,
            live: false,
            conn: Token::from_u64(0),
            rid: 0,
            req: Some(Box::new(Request::new())),
            status: 200,
            hdrs: Vec::new(),
            has_content_type: false,
            phase: Phase::Open,
            bytes: Vec::new(),
            pieces: Vec::new(),
            body_len: 0,
            flush: false,
            aborted: false,
            cut: false,
            conn_queued: 0,
            errs: Vec::new(),
            proto: Protocol::Http,
            drain_cb: None,
            upgrade: None,
            upgradable: false,
            probed: false,
            start: std::time::UNIX_EPOCH,
            body_in: 0,
            log_status: 0,
        }
    }

    /// Gives back to the allocator what a request or response made this (now free)
    /// exchange grow past the sizes a usual one needs, so that one large request does not
    /// leave its memory held for good in the pool; everything when `all` (the pool already
    /// keeps enough free exchanges, after a burst of connections).
    fn trim(&mut self, all: bool) {
        fn shrink<T>(v: &mut Vec<T>, keep: usize, all: bool) {
            if all || v.capacity() > keep {
                *v = Vec::new();
            }
        }
        shrink(&mut self.bytes, KEEP_BYTES, all);
        shrink(&mut self.hdrs, KEEP_HEAD, all);
        shrink(&mut self.errs, KEEP_HEAD, all);
        shrink(&mut self.pieces, KEEP_ITEMS, all);
        if all {
            self.req = None;
        } else if let Some(r) = self.req.as_mut() {
            shrink(&mut r.buf, KEEP_HEAD, false);
            shrink(&mut r.headers, KEEP_ITEMS, false);
            shrink(&mut r.params, KEEP_ITEMS, false);
        }
    }

    /// Whether the handler produced output the connection has not collected yet (a piece,
    /// a flush, the finish): the response is alive even if its timeout just passed.
    pub(crate) fn has_output(&self) -> bool {
        !self.pieces.is_empty() || self.flush || self.phase == Phase::Done || !self.errs.is_empty()
    }

    /// Access log: the request was answered `status` by the connection itself (it is
    /// logged even if no handler saw it).
    pub(crate) fn rejected(&mut self, status: u16) {
        self.log_status = status;
    }

    /// Access log: appends this exchange's line, if it had a request.
    fn log_to(&self, log: &mut crate::accesslog::LogBuf) {
        let Some(req) = self.req.as_deref() else {
            return;
        };
        if req.method.0 == req.method.1 && self.log_status == 0 {
            // Bytes that never made a request head (a connection closed mid-head).
            return;
        }
        let unsent = self.aborted && self.phase == Phase::Open;
        let status = match self.log_status {
            0 if unsent => 499,
            0 => self.status,
            s => s,
        };
        let no_body = unsent
            || self.log_status != 0
            || matches!(status, 204 | 304)
            || req.span(req.method) == b"HEAD";
        log.record(&crate::accesslog::Entry {
            req,
            status,
            body_bytes: if no_body { 0 } else { self.body_len },
            body_in: self.body_in,
            start: self.start,
            now: crate::accesslog::now(),
        });
    }

    /// Queues body bytes (copied), counting them in `body_len`.
    pub(crate) fn push_copy(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.body_len += b.len() as u64;
        self.bytes.extend_from_slice(b);
        match self.pieces.last_mut() {
            Some(Piece::Copied(n)) => *n += b.len(),
            _ => self.pieces.push(Piece::Copied(b.len())),
        }
    }

    /// Whether the response was abandoned before anything was flushed; if so its pending
    /// output is dropped (its head has not gone out: nothing will).
    pub(crate) fn cut_unsent(&mut self) -> bool {
        if !self.cut || self.flush {
            return false;
        }
        self.pieces.clear();
        self.bytes.clear();
        true
    }

    /// Replaces a response whose head was not sent with `status` and a text/plain `body`
    /// (the library's own answers: 500 for a dropped response, 431 for oversized params).
    pub(crate) fn canned(&mut self, status: u16, body: &[u8]) {
        self.status = status;
        self.hdrs.clear();
        self.hdrs.extend_from_slice(b"Content-Type: text/plain\r\n");
        self.has_content_type = true;
        self.bytes.clear();
        self.pieces.clear();
        self.body_len = 0;
        self.push_copy(body);
    }

    /// Takes queued pieces, calling `f` for each (with copied bytes as a slice).
    pub(crate) fn drain_pieces(&mut self, mut f: impl FnMut(PieceRef<'_>)) {
        let mut off = 0;
        let bytes = std::mem::take(&mut self.bytes);
        for p in self.pieces.drain(..) {
            match p {
                Piece::Copied(n) => {
                    f(PieceRef::Bytes(&bytes[off..off + n]));
                    off += n;
                }
                Piece::Static(s) => f(PieceRef::Static(s)),
                Piece::Owned(o) => f(PieceRef::Owned(o)),
                Piece::File(file, off, len) => f(PieceRef::File(file, off, len)),
            }
        }
        self.bytes = bytes;
        self.bytes.clear();
    }
}

/// A queued piece handed to the protocol.
pub(crate) enum PieceRef<'a> {
    Bytes(&'a [u8]),
    Static(&'static [u8]),
    Owned(Box<dyn AsRef<[u8]>>),
    File(Rc<std::fs::File>, u64, u64),
}

impl PieceRef<'_> {
    /// The piece's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            PieceRef::Bytes(b) => b.len() as u64,
            PieceRef::Static(s) => s.len() as u64,
            PieceRef::Owned(o) => (**o).as_ref().len() as u64,
            PieceRef::File(_, _, len) => *len,
        }
    }
}

/// Identifies an exchange in a server's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

/// Free exchanges kept with their buffers: beyond this many (after a burst of connections)
/// a released exchange keeps none.
const POOL_KEEP: usize = 256;
/// Response body bytes a free exchange keeps room for (a small response's; a larger one's
/// buffer goes back to the allocator when its request ends).
const KEEP_BYTES: usize = 64 * 1024;
/// Request head / response headers / STDERR bytes a free exchange keeps room for.
const KEEP_HEAD: usize = 16 * 1024;
/// Headers, params or queued pieces a free exchange keeps room for.
const KEEP_ITEMS: usize = 128;

/// Per-loop server state shared by its connections and response handles.
pub(crate) struct Ctx {
    pub(crate) ex: RefCell<Vec<Exchange>>,
    free: RefCell<Vec<u32>>,
    /// Connections with response output to collect (their tokens).
    pub(crate) kicks: Rc<RefCell<Vec<Token>>>,
    /// The connection whose protocol callback is running (it collects output itself).
    pub(crate) running: std::cell::Cell<Option<Token>>,
    pub(crate) handle: Handle,
    /// The supervisor's page of a supervised worker (requests in flight).
    probe: Option<&'static crate::supervisor::shm::Page>,
    /// The access log's buffer of this server on this loop.
    pub(crate) alog: Option<RefCell<crate::accesslog::LogBuf>>,
}

impl Ctx {
    pub(crate) fn new(lp: &mut Loop) -> Ctx {
        Ctx {
            ex: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            kicks: lp.kicker(),
            running: std::cell::Cell::new(None),
            handle: lp.handle(),
            probe: lp.probe,
            alog: None,
        }
    }

    /// With an access log.
    pub(crate) fn with_log(mut self, log: Option<crate::accesslog::AccessLog>) -> Ctx {
        self.alog = log.map(|l| RefCell::new(crate::accesslog::LogBuf::new(l)));
        self
    }

    /// Writes the access log's buffer out.
    pub(crate) fn flush_log(&self) {
        if let Some(l) = &self.alog {
            l.borrow_mut().flush();
        }
    }

    /// Takes an exchange from the pool for connection `conn`.
    pub(crate) fn alloc(&self, conn: Token) -> ExId {
        let mut ex = self.ex.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                ex.push(Exchange::new());
                (ex.len() - 1) as u32
            }
        };
        let e = &mut ex[slot as usize];
        e.live = true;
        e.conn = conn;
        e.rid = 0;
        e.status = 200;
        e.hdrs.clear();
        e.has_content_type = false;
        e.phase = Phase::Open;
        e.bytes.clear();
        e.pieces.clear();
        e.body_len = 0;
        e.flush = false;
        e.aborted = false;
        e.cut = false;
        e.conn_queued = 0;
        e.errs.clear();
        e.drain_cb = None;
        e.upgrade = None;
        e.upgradable = false;
        e.probed = false;
        e.body_in = 0;
        e.log_status = 0;
        if self.alog.is_some() {
            e.start = crate::accesslog::now();
        }
        e.req
            .get_or_insert_with(|| Box::new(Request::new()))
            .reset();
        ExId { slot, gen: e.gen }
    }

    /// Returns an exchange to the pool; response handles to it go stale. What a large
    /// request or response made it grow goes back to the allocator (see
    /// [`Exchange::trim`]); past [`POOL_KEEP`] free exchanges, all of it does.
    pub(crate) fn release(&self, id: ExId) {
        let mut free = self.free.borrow_mut();
        let (body_cb, abort_cb, drain_cb) = {
            let mut ex = self.ex.borrow_mut();
            let Some(e) = ex.get_mut(id.slot as usize) else {
                return;
            };
            if !e.live || e.gen != id.gen {
                return;
            }
            if let Some(l) = &self.alog {
                e.log_to(&mut l.borrow_mut());
            }
            e.live = false;
            e.gen = e.gen.wrapping_add(1);
            if std::mem::take(&mut e.probed) {
                if let Some(p) = self.probe {
                    p.end();
                }
            }
            e.pieces.clear();
            let req = e.req.as_mut();
            let cbs = (
                req.and_then(|r| r.body_cb.take()),
                e.req.as_mut().and_then(|r| r.abort_cb.take()),
                e.drain_cb.take(),
            );
            e.trim(free.len() >= POOL_KEEP);
            cbs
        };
        free.push(id.slot);
        drop(free);
        // A callback access log gets its line outside the borrows too.
        if let Some(l) = &self.alog {
            l.borrow_mut().deliver();
        }
        // User closures are dropped outside the borrow: they may hold Responses.
        drop(body_cb);
        drop(abort_cb);
        drop(drain_cb);
    }

    /// Runs `f` on a live exchange.
    pub(crate) fn with<R>(&self, id: ExId, f: impl FnOnce(&mut Exchange) -> R) -> Option<R> {
        let mut ex = self.ex.borrow_mut();
        let e = ex.get_mut(id.slot as usize)?;
        if !e.live || e.gen != id.gen {
            return None;
        }
        Some(f(e))
    }

    /// Passes a body event to the exchange's body callback, taken out of the pool while it
    /// runs (it may write the response); `Data` puts it back, `End`/`Aborted` drop it.
    pub(crate) fn deliver_body(&self, id: ExId, b: Body<'_>) {
        if let (Body::Data(d), Some(_)) = (&b, &self.alog) {
            self.with(id, |e| e.body_in += d.len() as u64);
        }
        let cb: Option<BodyFn> = self
            .with(id, |e| e.req.as_mut().and_then(|r| r.body_cb.take()))
            .flatten();
        let Some(mut cb) = cb else { return };
        let end = !matches!(b, Body::Data(_));
        cb(b);
        if !end {
            self.with(id, |e| {
                if let Some(r) = e.req.as_mut() {
                    if r.body_cb.is_none() {
                        r.body_cb = Some(cb);
                    }
                }
            });
        }
    }

    /// Ends an exchange that will not complete (client gone, front end abort, bad input):
    /// marks it aborted, tells the handler (abort callback if the response was not finished;
    /// body `Aborted` if `body_pending`), and returns it to the pool.
    pub(crate) fn abort(&self, id: ExId, body_pending: bool) {
        let cbs = self.with(id, |e| {
            e.aborted = true;
            let done = e.phase == Phase::Done;
            match e.req.as_mut() {
                Some(r) => (r.abort_cb.take(), r.body_cb.take(), done),
                None => (None, None, done),
            }
        });
        if let Some((abort, body, done)) = cbs {
            if let (false, Some(f)) = (done, abort) {
                f();
            }
            if let (true, Some(mut f)) = (body_pending, body) {
                f(Body::Aborted);
            }
        }
        self.release(id);
    }

    /// The connection's output emptied: runs the exchange's drain callback at the end of
    /// the iteration (outside the connection's own callback, so it may write freely).
    pub(crate) fn drained(&self, lp: &mut Loop, id: ExId) {
        if let Some(Some(f)) = self.with(id, |e| {
            e.conn_queued = 0;
            e.drain_cb.take()
        }) {
            lp.defer(move |_| f());
        }
    }

    fn kick(&self, conn: Token) {
        if self.running.get() != Some(conn) {
            self.kicks.borrow_mut().push(conn);
        }
    }
}

/// Why a response call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The exchange is over: finished, or its connection is gone.
    Gone,
    /// Status and headers can no longer change: the head was sent.
    HeadSent,
    /// A header name or value has forbidden bytes, or the status is out of range.
    Invalid,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResponseError::Gone => "the response is finished or its connection is gone",
            ResponseError::HeadSent => "the response head was already sent",
            ResponseError::Invalid => "invalid status, header name or header value",
        })
    }
}

impl std::error::Error for ResponseError {}

/// The response to one request, used on the loop's thread. Dropping it unfinished finishes
/// it with a 500, or cuts it short if the head was sent (see [`Response::abort`]), so no
/// client is left hanging or takes a truncated body for a whole one.
pub struct Response {
    pub(crate) ctx: Rc<Ctx>,
    pub(crate) id: ExId,
    pub(crate) done: bool,
}

/// Byte classes for response header checks: `TCHAR` (RFC 9110 token) and `VCHAR` (allowed
/// in a field value: visible ASCII, space, tab and obs-text).
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] |= TCHAR;
        }
        if b == b'\t' || (b >= 0x20 && b != 0x7f) {
            t[c] |= VCHAR;
        }
        c += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] |= TCHAR;
        i += 1;
    }
    t
};
/// An RFC 9110 tchar (header names are checked on every `header` call).
const TCHAR: u8 = 1;
/// A byte allowed in a field value.
const VCHAR: u8 = 2;

/// Whether every byte of `s` is in `class` (one table lookup per byte, no early exit:
/// names and values are short).
fn all_in(s: &[u8], class: u8) -> bool {
    s.iter().fold(class, |acc, &c| acc & CLASS[usize::from(c)]) != 0
}

fn valid_token(s: &[u8]) -> bool {
    !s.is_empty() && all_in(s, TCHAR)
}

fn valid_value(s: &[u8]) -> bool {
    all_in(s, VCHAR)
}

/// Whether the token `name` equals `lower` (lowercase letters and '-') ignoring case.
/// Setting bit 0x20 lowercases a letter; the only other byte it maps to one of `lower`'s
/// is CR (to '-'), and CR is not a token byte.
fn token_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .fold(0, |diff, (&a, &b)| diff | ((a | 0x20) ^ b))
            == 0
}

impl Response {
    fn with<R>(&self, f: impl FnOnce(&mut Exchange) -> R) -> Result<R, ResponseError> {
        if self.done {
            return Err(ResponseError::Gone);
        }
        self.ctx.with(self.id, f).ok_or(ResponseError::Gone)
    }

    /// Sets the status (200..=999 are accepted; 200 by default). Informational statuses
    /// (1xx) are not: the library sends `100 Continue` itself.
    pub fn status(&mut self, code: u16) -> Result<(), ResponseError> {
        if !(200..=999).contains(&code) {
            return Err(ResponseError::Invalid);
        }
        self.with(|e| {
            if e.phase != Phase::Open {
                return Err(ResponseError::HeadSent);
            }
            e.status = code;
            Ok(())
        })?
    }

    /// Adds a header. `Content-Length`, `Transfer-Encoding`, `Connection` and `Date` are
    /// managed by the server and refused as `Invalid`.
    pub fn header(&mut self, name: &str, value: &[u8]) -> Result<(), ResponseError> {
        self.header_bytes(name.as_bytes(), value)
    }

    /// [`Response::header`] with the name as bytes (a name that is not an RFC 9110 token,
    /// non-ASCII included, is refused as `Invalid`).
    pub fn header_bytes(&mut self, name: &[u8], value: &[u8]) -> Result<(), ResponseError> {
        if !valid_token(name) || !valid_value(value) {
            return Err(ResponseError::Invalid);
        }
        let managed: &[u8] = match name.len() {
            4 => b"date",
            10 => b"connection",
            14 => b"content-length",
            17 => b"transfer-encoding",
            _ => b"",
        };
        if token_is(name, managed) {
            return Err(ResponseError::Invalid);
        }
        let content_type = token_is(name, b"content-type");
        self.with(|e| {
            if e.phase != Phase::Open {
                return Err(ResponseError::HeadSent);
            }
            e.has_content_type |= content_type;
            e.hdrs.reserve(name.len() + value.len() + 4);
            e.hdrs.extend_from_slice(name);
            e.hdrs.extend_from_slice(b": ");
            e.hdrs.extend_from_slice(value);
            e.hdrs.extend_from_slice(b"\r\n");
            Ok(())
        })?
    }

    fn queue(&mut self, f: impl FnOnce(&mut Exchange)) -> Result<(), ResponseError> {
        let conn = self.with(|e| {
            f(e);
            e.conn
        })?;
        self.ctx.kick(conn);
        Ok(())
    }

    /// Queues body bytes (copied). Before a flush they are held so that `finish` can send a
    /// Content-Length; after one they stream.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ResponseError> {
        self.queue(|e| e.push_copy(bytes))
    }

    /// Queues body bytes that live forever, without copying.
    pub fn write_static(&mut self, bytes: &'static [u8]) -> Result<(), ResponseError> {
        self.queue(|e| {
            if !bytes.is_empty() {
                e.body_len += bytes.len() as u64;
                e.pieces.push(Piece::Static(bytes));
            }
        })
    }

    /// Queues an owned buffer without copying; it is dropped once written.
    pub fn write_owned(&mut self, bytes: Box<dyn AsRef<[u8]>>) -> Result<(), ResponseError> {
        self.queue(|e| {
            let n = (*bytes).as_ref().len();
            if n > 0 {
                e.body_len += n as u64;
                e.pieces.push(Piece::Owned(bytes));
            }
        })
    }

    /// Queues `len` bytes of `file` from offset `off` as body, without reading them: on a
    /// plain HTTP connection they go from the page cache to the socket by `sendfile(2)`
    /// (counted in [`crate::Stats::file_sent`]); over FastCGI they are read a block at a
    /// time into STDOUT records, and through a transport layer (TLS) a block at a time
    /// into it, each block only once the previous one was written (memory stays bounded
    /// for a slow reader). In order with everything else written, composable with
    /// `write` and `flush` (a streamed response frames the range as one chunk). The file
    /// is shared, not moved: it is let go once its bytes are written or the exchange is
    /// over; its offset is never used. The file must hold the range until then: one that
    /// shrinks meanwhile fails the connection (the client was promised the bytes).
    pub fn write_file(
        &mut self,
        file: Rc<std::fs::File>,
        off: u64,
        len: u64,
    ) -> Result<(), ResponseError> {
        self.queue(|e| {
            if len > 0 {
                e.body_len += len;
                e.pieces.push(Piece::File(file, off, len));
            }
        })
    }

    /// Sends the head and what was written so far; the rest of the body streams (chunked
    /// to HTTP/1.1 clients, close-delimited to HTTP/1.0, STDOUT records over FastCGI).
    pub fn flush(&mut self) -> Result<(), ResponseError> {
        self.queue(|e| {
            e.flush = true;
            if e.phase == Phase::Open {
                e.phase = Phase::Streaming;
            }
        })
    }

    /// Finishes the response. Idempotent errors: a second call gives `Gone`.
    pub fn finish(mut self) -> Result<(), ResponseError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<(), ResponseError> {
        let r = self.queue(|e| e.phase = Phase::Done);
        self.done = true;
        r
    }

    /// Abandons the response, for a handler that cannot complete it (an upstream failed
    /// mid-body): the client must not take it for a whole one. What was flushed is still
    /// written; then the connection closes without ending the response: an HTTP/1.1
    /// chunked body lacks its last chunk, and a response whose head was not sent gets
    /// nothing at all (nginx's 444). Over FastCGI there is no `END_REQUEST`: a `STDERR`
    /// record says the response was abandoned and the connection closes, ending any other
    /// request on it. nginx passes the cut on with `fastcgi_keep_conn on` ("upstream
    /// prematurely closed connection"); with keep_conn or buffering off it takes the close
    /// for the end of the output, and only its error log tells. Nor can an HTTP/1.0 client
    /// tell a body delimited by the close from a whole one. A second call gives `Gone`.
    pub fn abort(mut self) -> Result<(), ResponseError> {
        let _ = self.with(|e| e.cut = true);
        self.finish_inner()
    }

    /// Switches protocols (HTTP/1.1 `101`, as for a WebSocket): answers `101 Switching
    /// Protocols` with `Upgrade: {upgrade}`, `Connection: upgrade` and the headers added so
    /// far, then hands the live connection to `next` ([`crate::Io::hand_off`]): what the
    /// client sent after this request's head (and body) is `next`'s first input. The
    /// exchange ends here. `Invalid` over FastCGI, for an HTTP/1.0 request, or for an
    /// `upgrade` that is not a valid header value; `HeadSent` after a flush.
    pub fn upgrade<P: crate::net::Protocol>(
        mut self,
        upgrade: &str,
        next: P,
    ) -> Result<(), ResponseError> {
        let ok = self.with(|e| e.upgradable)?;
        if !ok || upgrade.is_empty() {
            return Err(ResponseError::Invalid);
        }
        self.header("Upgrade", upgrade.as_bytes())?;
        self.with(|e| {
            e.hdrs.extend_from_slice(b"Connection: upgrade\r\n");
            e.status = 101;
            e.upgrade = Some(Box::new(move |io: &mut crate::net::Io<'_>| {
                io.hand_off(next)
            }));
        })?;
        self.finish()
    }

    /// Convenience: status, Content-Type, body, finish.
    pub fn send(
        mut self,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), ResponseError> {
        self.status(status)?;
        self.header("Content-Type", content_type.as_bytes())?;
        self.write(body)?;
        self.finish()
    }

    /// Writes to the front end's error log: STDERR records over FastCGI; over HTTP, a
    /// `log` record at warn level.
    pub fn stderr(&mut self, msg: &[u8]) -> Result<(), ResponseError> {
        let proto = self.with(|e| e.proto)?;
        if proto == Protocol::Http {
            log::warn!("{}", String::from_utf8_lossy(msg));
            return Ok(());
        }
        self.queue(|e| e.errs.extend_from_slice(msg))
    }

    /// Whether the client went away (or the front end aborted the request).
    pub fn is_aborted(&self) -> bool {
        self.ctx.with(self.id, |e| e.aborted).unwrap_or(true)
    }

    /// Calls `f` once, on the loop, when the response's output has all been written to the
    /// connection (at once if nothing is queued): with [`Response::queued`], this paces a
    /// body produced faster than the client reads (a proxy pauses its upstream, writes
    /// again from `f`). Replaces an earlier callback; dropped unused if the exchange ends.
    pub fn on_drain(&mut self, f: impl FnOnce() + 'static) -> Result<(), ResponseError> {
        let conn = self
            .ctx
            .with(self.id, |e| {
                e.drain_cb = Some(Box::new(f));
                e.conn
            })
            .ok_or(ResponseError::Gone)?;
        self.ctx.kick(conn);
        Ok(())
    }

    /// Whether `finish` was called (or the handle was turned into a completion).
    pub fn is_finished(&self) -> bool {
        self.done
    }

    /// Response bytes written by the handler but not yet sent to the client: pace a
    /// streamed body with it (write more only while it is small) to bound memory when the
    /// client reads slowly.
    pub fn queued(&self) -> usize {
        self.ctx
            .with(self.id, |e| {
                let pending: usize = e
                    .pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Copied(n) => *n,
                        Piece::Static(s) => s.len(),
                        Piece::Owned(o) => (**o).as_ref().len(),
                        Piece::File(_, _, len) => usize::try_from(*len).unwrap_or(usize::MAX),
                    })
                    .sum();
                pending + e.conn_queued
            })
            .unwrap_or(0)
    }

    /// Runs `f` with this response's request, while the exchange is live and outside the
    /// handler call (during it, use the `&mut Request` the handler got). The request's
    /// storage does not move until the exchange ends, so views taken here stay valid until
    /// the response is finished or the request aborted.
    pub fn with_request<R>(&self, f: impl FnOnce(&Request) -> R) -> Option<R> {
        let ex = self.ctx.ex.borrow();
        let e = ex.get(self.id.slot as usize)?;
        if !e.live || e.gen != self.id.gen {
            return None;
        }
        e.req.as_deref().map(f)
    }

    /// Turns this response into a handle that another thread can finish. The bytes are
    /// still written by the loop's thread; each use costs one post (one wakeup at most).
    pub fn into_completion(mut self) -> Completion {
        self.done = true;
        let conn = self
            .ctx
            .with(self.id, |e| e.conn)
            .unwrap_or(Token::from_u64(0));
        Completion {
            handle: self.ctx.handle.clone(),
            conn,
            id: self.id,
            used: false,
        }
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.ctx.with(self.id, |e| e.phase == Phase::Open) {
            Some(true) => {
                log::warn!("response dropped unfinished: answering 500");
                let _ = self.with(|e| e.canned(500, b"Internal Server Error\n"));
            }
            Some(false) => {
                // The head is out: cut the body short rather than pass it off as whole.
                log::warn!("response dropped unfinished after its head: cutting it short");
                let _ = self.with(|e| e.cut = true);
            }
            None => {}
        }
        let _ = self.finish_inner();
    }
}

/// A thread-safe handle that finishes a response from any thread (the bytes are written by
/// the loop's thread). Dropping it unused answers 500.
pub struct Completion {
    handle: Handle,
    conn: Token,
    id: ExId,
    used: bool,
}

impl Completion {
    /// Runs `f` with the response on the loop's thread. If the connection is gone by then,
    /// `f` is not called. Returns false if the loop no longer exists.
    pub fn post(mut self, f: impl FnOnce(Response) + Send + 'static) -> bool {
        self.used = true;
        let (conn, id) = (self.conn, self.id);
        self.handle
            .post(move |lp| {
                if let Some(res) = crate::server::response_for(lp, conn, id) {
                    f(res)
                }
            })
            .is_ok()
    }

    /// Sends a whole response: status, Content-Type and body.
    pub fn send(self, status: u16, content_type: &str, body: Vec<u8>) -> bool {
        let ct = content_type.to_string();
        self.post(move |res| {
            let _ = res.send(status, &ct, &body);
        })
    }

    /// Abandons the response (see [`Response::abort`]), from any thread.
    pub fn abort(self) -> bool {
        self.post(|res| {
            let _ = res.abort();
        })
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.used {
            let (conn, id) = (self.conn, self.id);
            // The Response rebuilt on the loop answers 500 when dropped unfinished.
            let _ = self.handle.post(move |lp| {
                drop(crate::server::response_for(lp, conn, id));
            });
        }
    }
}

/// A request handler: called on the loop's thread when a request head is complete, with the
/// loop (to arm timers, watch fds, post work).
pub type HandlerFn = Rc<dyn Fn(&mut Loop, &mut Request, Response)>;

#[cfg(test)]
mod tests {
    use super::{token_is, valid_token, valid_value, BodySize, Protocol, Request};

    #[test]
    fn body_size_follows_the_framing_of_each_protocol() {
        let mut r = Request::new();
        let mut size = |proto, chunked, cl| {
            r.proto = proto;
            r.chunked = chunked;
            r.content_length = cl;
            r.body_size()
        };
        use Protocol::{Fcgi, Http};
        assert_eq!(size(Http, false, None), BodySize::None);
        assert_eq!(size(Http, false, Some(0)), BodySize::None);
        assert_eq!(size(Http, false, Some(5)), BodySize::Known(5));
        assert_eq!(size(Http, true, None), BodySize::Unknown);
        // FastCGI: no (or an empty, or a bad) CONTENT_LENGTH still has a body, which ends
        // at the empty STDIN record.
        assert_eq!(size(Fcgi, false, None), BodySize::Unknown);
        assert_eq!(size(Fcgi, false, Some(0)), BodySize::None);
        assert_eq!(size(Fcgi, false, Some(7)), BodySize::Known(7));
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(valid_token(b"Content-Type"));
        assert!(valid_token(b"x!#$%&'*+-.^_`|~09AZaz"));
        assert!(!valid_token(b""));
        for bad in [
            &b"a b"[..],
            b"a:b",
            b"a\r",
            b"a\n",
            b"a\0",
            b"a\x7f",
            b"\xc3\xa9",
            b"(a)",
        ] {
            assert!(!valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn header_values_refuse_controls_only() {
        assert!(valid_value(b""));
        assert!(valid_value(b"text/plain; charset=utf-8"));
        assert!(valid_value(b"a\tb c"));
        assert!(valid_value(b"caf\xc3\xa9 \x80\xff"));
        for bad in [&b"a\r\nb"[..], b"a\nb", b"a\0", b"\x7f", b"\x1f", b"ok\x01"] {
            assert!(!valid_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn managed_names_match_in_any_case() {
        assert!(token_is(b"CONTENT-length", b"content-length"));
        assert!(token_is(b"Date", b"date"));
        assert!(!token_is(b"Dates", b"date"));
        assert!(!token_is(b"Dat\r", b"date"));
    }
}
