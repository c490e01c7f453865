//! The HTTP connection state machine, fuzzed as it is today (in the driver,
//! core/src/http/conn.rs): a real server on a loop in this thread answers a stream of
//! generated and raw requests written in arbitrary pieces, and the answer is checked
//! against a model built with the same head parser and chunked decoder:
//! - it never panics and always closes once the client has half-closed;
//! - responses come in request order (each carries its request's target) with the status
//!   the route gives, or the status a rejected request deserves, then nothing more;
//! - each response's framing agrees with its headers: Content-Length and the body, a
//!   well-formed chunked body, no body for HEAD, 1xx, 204 and 304, a close-delimited body
//!   only with `Connection: close`; `Connection: close` is the last response;
//! - an echoed body is the request's body; no connection is left open afterwards.

use std::cell::RefCell;
use std::path::PathBuf;

use arbitrary::Arbitrary;
use myriad::fuzzing::{self, BodyFraming, ChunkedDecoder, HeadOutcome};
use myriad::{Loop, Proto, Request, Response, Server, ServerOptions};

/// Server limits (small, so that the fuzzer reaches them).
pub const MAX_HEAD: usize = 4096;
/// Longest request line.
pub const MAX_LINE: usize = 1024;
/// Largest body.
pub const MAX_BODY: u64 = 4096;

static BIG: [u8; 100_000] = [b'B'; 100_000];

/// A request the fuzzer builds from parts.
#[derive(Arbitrary, Debug)]
pub struct Req {
    method: Method,
    route: Route,
    query: Option<u8>,
    http10: bool,
    connection: Option<bool>,
    expect: bool,
    no_host: bool,
    body: BodySpec,
    extra: Vec<(u8, Vec<u8>)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Route {
    Root,
    Echo,
    Stream,
    NoContent,
    NotModified,
    Big,
    Missing,
}

#[derive(Arbitrary, Debug)]
enum BodySpec {
    None,
    Length(Vec<u8>),
    /// A declared length that may not match the data.
    Declared(u16, Vec<u8>),
    Chunked(Vec<Vec<u8>>),
    /// `Transfer-Encoding: chunked` followed by raw bytes.
    ChunkedRaw(Vec<u8>),
}

/// One piece of the stream.
#[derive(Arbitrary, Debug)]
pub enum Item {
    /// A request built from parts.
    Req(Req),
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// A fuzz input: the stream's pieces, and where the writes are cut.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// What is sent.
    pub items: Vec<Item>,
    /// Write boundaries.
    pub cuts: Vec<u16>,
}

impl Input {
    /// The input for fuzzer bytes: "=" then a raw stream (the seeds from the unit tests;
    /// written in thirds), else a structured input built by `arbitrary`.
    pub fn from_fuzz(data: &[u8]) -> Input {
        if let Some(raw) = data.strip_prefix(b"=") {
            let third = (raw.len() / 3).max(1) as u16;
            return Input {
                items: vec![Item::Raw(raw.to_vec())],
                cuts: vec![third - 1, third - 1],
            };
        }
        Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)).unwrap_or(Input {
            items: Vec::new(),
            cuts: Vec::new(),
        })
    }
}

const NAMES: [&str; 8] = [
    "X-A",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Host",
    "Expect",
    "Accept",
    "X-Long-Header-Name",
];

impl Req {
    fn encode(&self, out: &mut Vec<u8>) {
        let m = match self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        };
        let path = match self.route {
            Route::Root => "/",
            Route::Echo => "/echo",
            Route::Stream => "/stream",
            Route::NoContent => "/204",
            Route::NotModified => "/304",
            Route::Big => "/big",
            Route::Missing => "/nope",
        };
        out.extend_from_slice(m.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = self.query {
            out.extend_from_slice(format!("?q={q}").as_bytes());
        }
        out.extend_from_slice(if self.http10 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        if !self.no_host {
            out.extend_from_slice(b"Host: fuzz\r\n");
        }
        match self.connection {
            Some(true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            Some(false) => out.extend_from_slice(b"Connection: close\r\n"),
            None => {}
        }
        if self.expect {
            out.extend_from_slice(b"Expect: 100-continue\r\n");
        }
        for (n, v) in &self.extra {
            out.extend_from_slice(NAMES[*n as usize % NAMES.len()].as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        match &self.body {
            BodySpec::None => out.extend_from_slice(b"\r\n"),
            BodySpec::Length(d) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", d.len()).as_bytes());
                out.extend_from_slice(d);
            }
            BodySpec::Declared(n, d) => {
                out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
                out.extend_from_slice(d);
            }
            BodySpec::Chunked(chunks) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    fuzzing::chunk_size_line(c.len(), out);
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            BodySpec::ChunkedRaw(raw) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                out.extend_from_slice(raw);
            }
        }
    }
}

impl Input {
    /// The byte stream.
    pub fn stream(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for it in &self.items {
            match it {
                Item::Req(r) => r.encode(&mut out),
                Item::Raw(b) => out.extend_from_slice(b),
            }
        }
        out
    }
}

fn route_status(path: &str) -> u16 {
    match path {
        "/" | "/echo" | "/stream" | "/big" => 200,
        "/204" => 204,
        "/304" => 304,
        _ => 404,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn handler(lp: &mut Loop, req: &mut Request, mut res: Response) {
    let _ = res.header("X-Target", hex(req.target().as_bytes()).as_bytes());
    let path = req.path().to_owned();
    match path.as_str() {
        "/" => {
            let _ = res.send(200, "text/plain", b"hello\n");
        }
        "/echo" => req.read_body(move |b| match b {
            Some(b) => {
                let _ = res.send(200, "application/octet-stream", &b);
            }
            None => drop(res),
        }),
        "/stream" => {
            // The head goes out before the end is known: chunked (or, HTTP/1.0,
            // close-delimited), the rest from a deferred call.
            let _ = res.write(b"abc");
            let _ = res.flush();
            lp.defer(move |_| {
                let _ = res.write(b"defgh");
                let _ = res.finish();
            });
        }
        "/204" => {
            let _ = res.status(204);
            let _ = res.finish();
        }
        "/304" => {
            let _ = res.status(304);
            let _ = res.header("ETag", b"\"x\"");
            let _ = res.finish();
        }
        "/big" => {
            let _ = res.write_static(&BIG);
            let _ = res.finish();
        }
        _ => {
            let _ = res.send(404, "text/plain", b"nope\n");
        }
    }
}

struct Harness {
    lp: Loop,
    srv: Server,
    path: PathBuf,
}

thread_local! {
    static H: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn with_harness<R>(f: impl FnOnce(&mut Harness) -> R) -> R {
    H.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| {
            let mut lp = Loop::new().expect("loop");
            let opts = ServerOptions {
                max_head: MAX_HEAD,
                max_line: MAX_LINE,
                max_body: MAX_BODY,
                // Far away: nothing in one input may depend on the clock.
                header_timeout: std::time::Duration::from_secs(600),
                body_timeout: std::time::Duration::from_secs(600),
                idle_timeout: std::time::Duration::from_secs(600),
                write_timeout: std::time::Duration::from_secs(600),
                ..Default::default()
            };
            let srv = lp.server(opts, handler);
            let path = crate::wire::socket_path("http");
            srv.listen(&mut lp, crate::wire::bind(&path), Proto::Http);
            Harness { lp, srv, path }
        });
        f(h)
    })
}

/// What the model expects for one request.
#[derive(Debug)]
enum Exp {
    /// Answered by the route.
    Served {
        target: String,
        path: String,
        head: bool,
        expect: bool,
        body: Vec<u8>,
    },
    /// The route's answer or, the body being bad, this rejection (possibly cut short).
    ServedOr {
        target: String,
        path: String,
        head: bool,
        expect: bool,
        reject: u16,
    },
    /// The body never completes: maybe the route's answer (possibly cut), maybe nothing.
    Maybe {
        target: String,
        path: String,
        head: bool,
        expect: bool,
    },
    /// Rejected with this status (the request a HEAD or not), then closed.
    Reject(u16, bool),
    /// Rejected with this status, then closed; bodiless or not: the head starts with
    /// empty-line bytes before `HEAD `, and a stray CR among them may be refused before
    /// the method has arrived (it depends on where the reads were cut).
    RejectEither(u16),
}

/// The expected answers to `stream`.
fn model(stream: &[u8]) -> Vec<Exp> {
    let mut exp = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let h = match fuzzing::parse_head(&stream[pos..], MAX_HEAD, MAX_LINE) {
            HeadOutcome::Partial => break,
            HeadOutcome::Reject(s) => {
                // A head that did not parse is taken for HEAD if it starts so.
                let rest = &stream[pos..];
                let start = rest.iter().position(|&c| c != b'\r' && c != b'\n');
                let head = start.is_some_and(|i| rest[i..].starts_with(b"HEAD "));
                if head && start != Some(0) {
                    exp.push(Exp::RejectEither(s));
                } else {
                    exp.push(Exp::Reject(s, head));
                }
                break;
            }
            HeadOutcome::Complete(h) => h,
        };
        pos += h.consumed;
        let target = hex(h.target.as_bytes());
        let path = h.path.clone();
        let wants_body = path == "/echo";
        let rest = &stream[pos..];
        let mut keep = h.keep_alive;
        let (t, p, hd) = (target.clone(), path.clone(), h.is_head);
        match h.body {
            BodyFraming::None => exp.push(Exp::Served {
                target,
                path,
                head: h.is_head,
                expect: false,
                body: Vec::new(),
            }),
            BodyFraming::Length(n) if n > MAX_BODY => {
                exp.push(Exp::Reject(413, h.is_head));
                break;
            }
            _ if h.expect_continue && !wants_body => {
                // Answered without reading the body, then closed.
                exp.push(Exp::Served {
                    target,
                    path,
                    head: h.is_head,
                    expect: false,
                    body: Vec::new(),
                });
                break;
            }
            BodyFraming::Length(n) => {
                if (rest.len() as u64) < n {
                    exp.push(Exp::Maybe {
                        target: t,
                        path: p,
                        head: hd,
                        expect: h.expect_continue,
                    });
                    break;
                }
                pos += n as usize;
                exp.push(Exp::Served {
                    target,
                    path,
                    head: h.is_head,
                    expect: h.expect_continue,
                    body: rest[..n as usize].to_vec(),
                });
            }
            BodyFraming::Chunked => {
                let mut d = ChunkedDecoder::default();
                let mut body = Vec::new();
                let r = d.decode(rest, |b| body.extend_from_slice(b));
                let over = body.len() as u64 > MAX_BODY;
                match r {
                    Ok(_) | Err(fuzzing::ChunkError::TooLarge) if over => {
                        exp.push(Exp::ServedOr {
                            target,
                            path,
                            head: h.is_head,
                            expect: h.expect_continue,
                            reject: 413,
                        });
                        break;
                    }
                    Err(e) => {
                        exp.push(Exp::ServedOr {
                            target,
                            path,
                            head: h.is_head,
                            expect: h.expect_continue,
                            reject: match e {
                                fuzzing::ChunkError::Syntax => 400,
                                fuzzing::ChunkError::TooLarge => 413,
                            },
                        });
                        break;
                    }
                    Ok(_) if !d.is_done() => {
                        exp.push(Exp::Maybe {
                            target: t,
                            path: p,
                            head: hd,
                            expect: h.expect_continue,
                        });
                        break;
                    }
                    Ok(n) => {
                        pos += n;
                        exp.push(Exp::Served {
                            target,
                            path,
                            head: h.is_head,
                            expect: h.expect_continue,
                            body,
                        });
                    }
                }
            }
        }
        // HTTP/1.0 streaming ends with the connection.
        if h.minor == 0 && h.path == "/stream" {
            keep = false;
        }
        if !keep {
            break;
        }
    }
    exp
}

/// A response read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    target: Option<String>,
    close: bool,
    body: Vec<u8>,
}

/// Reads one response at `out[*pos..]`; `Ok(None)` if the output ends there, `Err` if it
/// is malformed or cut short (`cut` is set for the latter).
fn read_resp(
    out: &[u8],
    pos: &mut usize,
    head: bool,
    cut: &mut bool,
) -> Result<Option<Resp>, String> {
    if *pos == out.len() {
        return Ok(None);
    }
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hs);
    let n = match r.parse(&out[*pos..]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            *cut = true;
            return Err("response head cut short".into());
        }
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let minor = r.version.unwrap_or(1);
    let mut cl = None;
    let mut te = None;
    let mut close = minor == 0;
    let mut target = None;
    for h in r.headers.iter() {
        let v = std::str::from_utf8(h.value).map_err(|_| "non-UTF-8 header")?;
        match h.name.to_ascii_lowercase().as_str() {
            "content-length" => {
                if cl.is_some() {
                    return Err("two Content-Length".into());
                }
                cl = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("bad Content-Length {v:?}"))?,
                );
            }
            "transfer-encoding" => te = Some(v.to_owned()),
            "connection" => {
                close = v.eq_ignore_ascii_case("close");
            }
            "x-target" => target = Some(v.to_owned()),
            _ => {}
        }
    }
    let no_body = head || status < 200 || status == 204 || status == 304;
    if cl.is_some() && te.is_some() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if (status == 204 || status < 200) && (cl.is_some() || te.is_some()) {
        return Err(format!("{status} with framing headers"));
    }
    let mut p = *pos + n;
    let mut body = Vec::new();
    if !no_body {
        if let Some(te) = te {
            if te != "chunked" {
                return Err(format!("Transfer-Encoding {te:?}"));
            }
            let mut d = ChunkedDecoder::default();
            let used = d
                .decode(&out[p..], |b| body.extend_from_slice(b))
                .map_err(|e| format!("bad chunked response body: {e:?}"))?;
            if !d.is_done() {
                *cut = true;
                return Err("chunked response body cut short".into());
            }
            p += used;
        } else if let Some(len) = cl {
            if ((out.len() - p) as u64) < len {
                *cut = true;
                return Err(format!("body of {len} cut short at {}", out.len() - p));
            }
            body.extend_from_slice(&out[p..p + len as usize]);
            p += len as usize;
        } else {
            if !close {
                return Err("close-delimited body without Connection: close".into());
            }
            body.extend_from_slice(&out[p..]);
            p = out.len();
        }
    }
    *pos = p;
    Ok(Some(Resp {
        status,
        target,
        close,
        body,
    }))
}

/// Runs `input` through a server; panics with a description on any broken invariant.
pub fn run(input: &Input) {
    let stream = input.stream();
    let exp = model(&stream);
    let pieces = crate::pieces(&stream, &input.cuts);
    let o = with_harness(|h| {
        let o = crate::wire::exchange(&mut h.lp, &h.path, &pieces);
        for _ in 0..10 {
            if h.srv.connection_count() == 0 {
                break;
            }
            h.lp.run_once_nowait().expect("loop");
        }
        assert_eq!(h.srv.connection_count(), 0, "a connection left open");
        o
    });
    if let Err(e) = check(&exp, &o) {
        panic!(
            "{e}\nexpected: {exp:?}\nstream: {:?}\noutput: {:?}",
            String::from_utf8_lossy(&stream),
            String::from_utf8_lossy(&o.output)
        );
    }
}

fn check(exp: &[Exp], o: &crate::wire::Outcome) -> Result<(), String> {
    if !o.closed {
        return Err("the server did not close after the client's EOF".into());
    }
    let out = &o.output;
    let mut pos = 0;
    let mut closed_at = None;
    for (i, e) in exp.iter().enumerate() {
        if let Some(j) = closed_at {
            return Err(format!("response {j} said close, yet {i} was expected"));
        }
        let mut cut = false;
        // A 100 Continue goes only to a request that asked for it, before its answer.
        let asked = matches!(
            e,
            Exp::Served { expect: true, .. }
                | Exp::ServedOr { expect: true, .. }
                | Exp::Maybe { expect: true, .. }
        );
        if out[pos..].starts_with(b"HTTP/1.1 100 ") {
            let mut c = false;
            let r = read_resp(out, &mut pos, false, &mut c)?.ok_or("cut 100")?;
            if !asked || r.status != 100 {
                return Err(format!("response {i}: a 100 Continue nobody asked for"));
            }
        }
        let matches = |r: &Resp, target: &str, path: &str| {
            r.status == route_status(path) && r.target.as_deref() == Some(target)
        };
        match e {
            Exp::Served {
                target,
                path,
                head,
                body,
                ..
            } => {
                let r =
                    read_resp(out, &mut pos, *head, &mut cut)?.ok_or(format!("no response {i}"))?;
                if !matches(&r, target, path) {
                    return Err(format!("response {i}: {r:?}, wanted {e:?}"));
                }
                if path == "/echo" && !head && r.body != *body {
                    return Err(format!("response {i}: echoed body differs"));
                }
                if r.close {
                    closed_at = Some(i);
                }
            }
            Exp::ServedOr {
                target,
                path,
                head,
                reject,
                ..
            } => match read_resp(out, &mut pos, *head, &mut cut) {
                Ok(Some(r)) if matches(&r, target, path) || r.status == *reject => {
                    closed_at = Some(i);
                }
                Ok(Some(r)) => return Err(format!("response {i}: {r:?}, wanted {e:?}")),
                Ok(None) => return Err(format!("no response {i}")),
                // Cut short by the reset that follows a rejection mid-response.
                Err(_) if cut => return Ok(()),
                Err(x) => return Err(x),
            },
            Exp::Maybe {
                target, path, head, ..
            } => match read_resp(out, &mut pos, *head, &mut cut) {
                Ok(Some(r)) if matches(&r, target, path) => closed_at = Some(i),
                Ok(Some(r)) => return Err(format!("response {i}: {r:?}, wanted {e:?}")),
                Ok(None) => {}
                Err(_) if cut => return Ok(()),
                Err(x) => return Err(x),
            },
            Exp::RejectEither(s) => {
                // With a body if one follows, else as the answer to a HEAD.
                let at = pos;
                let (mut c1, mut c2) = (cut, cut);
                let r = match read_resp(out, &mut pos, false, &mut c1) {
                    Ok(Some(r)) if pos == out.len() => r,
                    _ => {
                        pos = at;
                        read_resp(out, &mut pos, true, &mut c2)?
                            .ok_or(format!("no rejection {s}"))?
                    }
                };
                if r.status != *s || !r.close || r.target.is_some() {
                    return Err(format!(
                        "response {i}: {r:?}, wanted rejection {s} and close"
                    ));
                }
                closed_at = Some(i);
            }
            Exp::Reject(s, head) => {
                let r = read_resp(out, &mut pos, *head, &mut cut)?
                    .ok_or(format!("no rejection {s}"))?;
                if r.status != *s || !r.close || r.target.is_some() {
                    return Err(format!(
                        "response {i}: {r:?}, wanted rejection {s} and close"
                    ));
                }
                closed_at = Some(i);
            }
        }
    }
    if pos != out.len() {
        return Err(format!(
            "{} bytes after the expected responses",
            out.len() - pos
        ));
    }
    Ok(())
}
