//! An HTTP test server with the demo's routes, and a small raw-socket HTTP client.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use myriad::{ListenOptions, Listener, Loop, Request, Response, Server, ServerOptions, Stats};

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

type Pumped = Rc<RefCell<(Option<Response>, u64)>>;

/// Writes until 256 KiB are queued, then waits for the connection to drain.
fn pump(st: Pumped, chunks: u64, bytes: usize) {
    let mut g = st.borrow_mut();
    let (res, i) = &mut *g;
    let Some(r) = res.as_mut() else { return };
    while *i < chunks && r.queued() <= 256 * 1024 {
        let _ = r.write(&vec![b'a' + (*i % 26) as u8; bytes]);
        *i += 1;
    }
    if *i == chunks {
        let _ = res.take().unwrap().finish();
        return;
    }
    let _ = r.flush();
    let again = st.clone();
    if r.on_drain(move || pump(again, chunks, bytes)).is_err() {
        *res = None;
    }
}

/// The demo's routes (plus /status and /early for protocol tests).
pub fn routes(lp: &mut Loop, req: &mut Request, mut res: Response) {
    let q = req.query().to_string();
    match (req.method(), req.path()) {
        ("GET" | "HEAD", "/") => {
            let _ = res.header("Content-Type", b"text/plain");
            let _ = res.write_static(b"Hello, World!");
            let _ = res.finish();
        }
        ("POST" | "PUT", "/echo") => {
            let ct = req
                .header("content-type")
                .unwrap_or(b"application/octet-stream")
                .to_vec();
            req.read_body(move |b| {
                if let Some(b) = b {
                    let _ = res.header("Content-Type", &ct);
                    let _ = res.write(&b);
                    let _ = res.finish();
                }
            });
        }
        ("POST", "/count") => {
            // Streams the body: counts bytes and a checksum without keeping it.
            let mut n = 0u64;
            let mut sum = 0u64;
            let mut res = Some(res);
            req.on_body(move |b| match b {
                myriad::Body::Data(d) => {
                    n += d.len() as u64;
                    sum = d
                        .iter()
                        .fold(sum, |s, &c| s.wrapping_mul(31).wrapping_add(c as u64));
                }
                myriad::Body::End => {
                    if let Some(r) = res.take() {
                        let _ = r.send(200, "text/plain", format!("{n} {sum}").as_bytes());
                    }
                }
                myriad::Body::Aborted => {}
            });
        }
        ("GET", "/env") => {
            let mut out = String::new();
            for (k, v) in req.cgi_vars() {
                out.push_str(&format!("{k}={v}\n"));
            }
            let _ = res.send(200, "text/plain", out.as_bytes());
        }
        ("GET", "/status") => {
            let code = param(&q, "code").unwrap_or(200) as u16;
            let _ = res.status(code);
            let _ = res.write(b"body that must not be sent for 204/304");
            let _ = res.finish();
        }
        ("POST", "/early") => {
            // Answers without wanting the body.
            let _ = res.send(403, "text/plain", b"no");
        }
        ("GET", "/stream") => {
            let chunks = param(&q, "chunks").unwrap_or(1);
            let bytes = param(&q, "bytes").unwrap_or(1) as usize;
            let mut res = Some(res);
            let mut i = 0u64;
            lp.repeat(Duration::ZERO, Duration::from_millis(1), move |lp, id| {
                let Some(r) = res.as_mut() else { return };
                if r.is_aborted() {
                    res = None;
                    lp.cancel_timer(id);
                    return;
                }
                if r.queued() > 256 * 1024 {
                    return;
                }
                let _ = r.write(&vec![b'a' + (i % 26) as u8; bytes]);
                let _ = r.flush();
                i += 1;
                if i == chunks {
                    let _ = res.take().unwrap().finish();
                    lp.cancel_timer(id);
                }
            });
        }
        ("GET", "/drained") => {
            // Like /stream, paced by Response::on_drain instead of a polling timer.
            let chunks = param(&q, "chunks").unwrap_or(1);
            let bytes = param(&q, "bytes").unwrap_or(1) as usize;
            pump(Rc::new(RefCell::new((Some(res), 0))), chunks, bytes);
        }
        ("GET", "/pace") => {
            // N pieces, M ms apart (to see streaming through a front end).
            let chunks = param(&q, "chunks").unwrap_or(1);
            let ms = param(&q, "ms").unwrap_or(1);
            let mut res = Some(res);
            let mut i = 0u64;
            lp.repeat(Duration::ZERO, Duration::from_millis(ms), move |lp, id| {
                let Some(r) = res.as_mut() else { return };
                let _ = r.write(format!("piece {i}\n").as_bytes());
                let _ = r.flush();
                i += 1;
                if i == chunks {
                    let _ = res.take().unwrap().finish();
                    lp.cancel_timer(id);
                }
            });
        }
        ("GET", "/cut") => {
            // Abandons the response: after writing "unsent" (never flushed) if `flushed`
            // is 0, else after `flushed` flushed pieces; at once, or `ms` later.
            let n = param(&q, "flushed").unwrap_or(0);
            if n == 0 {
                let _ = res.write(b"unsent");
            }
            for i in 0..n {
                let _ = res.write(format!("piece {i}\n").as_bytes());
                let _ = res.flush();
            }
            if let Some(ms) = param(&q, "ms") {
                lp.timer(Duration::from_millis(ms), move |_| res.abort().unwrap());
            } else {
                res.abort().unwrap();
            }
        }
        ("GET", "/dropmid") => {
            // Dropped unfinished once two pieces were flushed.
            for i in 0..2 {
                let _ = res.write(format!("piece {i}\n").as_bytes());
                let _ = res.flush();
            }
            drop(res);
        }
        ("GET", "/log") => {
            let _ = res.stderr(b"something to log");
            let _ = res.send(200, "text/plain", b"logged");
        }
        ("GET", "/delay") => {
            let ms = param(&q, "ms").unwrap_or(0);
            lp.timer(Duration::from_millis(ms), move |_| {
                let _ = res.send(200, "text/plain", format!("delayed {ms}").as_bytes());
            });
        }
        ("GET", "/work") => {
            let ms = param(&q, "ms").unwrap_or(0);
            let c = res.into_completion();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(ms));
                c.send(200, "text/plain", format!("worked {ms}").into_bytes());
            });
        }
        ("GET", "/workcut") => {
            // Abandoned from another thread (after a flushed piece if `flushed`).
            if param(&q, "flushed").is_some() {
                let _ = res.write(b"piece 0\npiece 1\n");
                let _ = res.flush();
            }
            let c = res.into_completion();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(10));
                c.abort();
            });
        }
        ("GET", "/stall") => {
            // Sends its head and a piece (if `flushed`), then nothing for `ms` (5 s by
            // default), then finishes: a response the response timeout must end.
            if param(&q, "flushed").is_some() {
                let _ = res.write(b"first piece\n");
                let _ = res.flush();
            }
            let ms = param(&q, "ms").unwrap_or(5000);
            lp.timer(Duration::from_millis(ms), move |_| {
                let _ = res.finish();
            });
        }
        ("GET", "/panic") => {
            // A bug in a handler: only this connection may suffer for it.
            panic!("handler panicked on purpose");
        }
        ("GET", "/drop") => {
            // A completion dropped unanswered on another thread: 500, never a hang.
            let c = res.into_completion();
            thread::spawn(move || drop(c));
        }
        _ => {
            let _ = res.send(404, "text/plain", b"Not Found");
        }
    }
}

/// An HTTP server on its own thread.
pub struct HttpSrv {
    pub inner: super::Server,
    pub server: std::sync::Arc<std::sync::Mutex<Option<SendServer>>>,
}

/// Server is not Send; it is only touched on the loop thread through this wrapper.
pub struct SendServer(pub Server);
// SAFETY: the wrapped server is created on the loop thread and only used there (from
// closures posted to that loop); other threads only move the Option around.
unsafe impl Send for SendServer {}

impl HttpSrv {
    pub fn start(opts: ServerOptions) -> HttpSrv {
        HttpSrv::start_proto(opts, myriad::Proto::Http, "127.0.0.1:0")
    }

    /// A server speaking `proto` on `addr`.
    pub fn start_proto(opts: ServerOptions, proto: myriad::Proto, addr: &str) -> HttpSrv {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let s2 = slot.clone();
        let inner = super::Server::start_with(addr, move |lp, l| {
            let srv = lp.server(opts, routes);
            srv.listen(lp, l, proto);
            *s2.lock().unwrap() = Some(SendServer(srv));
        });
        HttpSrv {
            inner,
            server: slot,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.inner.tcp()
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Starts a graceful shutdown; `done` gets a message when it completes.
    pub fn shutdown(&self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        let slot = self.server.clone();
        self.inner.on_loop(move |lp| {
            let s = slot.lock().unwrap();
            s.as_ref().unwrap().0.shutdown(lp, move |_| {
                let _ = tx.send(());
            });
        });
        rx
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that reads responses from a buffer.
pub struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(a: std::net::SocketAddr) -> Client {
        let s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// True if the server closed the connection (after any buffered bytes).
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }

    /// Reads one response (`head` = response to HEAD: no body).
    pub fn read(&mut self, head: bool) -> Resp {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.fill(),
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let text = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        self.buf.drain(..end);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 204 || status == 304 || status == 100 {
            return r;
        }
        if let Some(cl) = r.header("content-length") {
            let n: usize = cl.parse().unwrap();
            while self.buf.len() < n {
                assert!(self.fill(), "short body");
            }
            r.body = self.buf.drain(..n).collect();
        } else if r.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    assert!(self.fill(), "short chunked body");
                };
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap(), 16)
                        .unwrap();
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    assert!(self.fill(), "short chunk");
                }
                r.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill() {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }
}

/// One request on a fresh connection.
pub fn get(a: std::net::SocketAddr, path: &str) -> Resp {
    let mut c = Client::connect(a);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.read(false)
}

pub fn test_listener() -> Listener {
    Listener::bind(&"127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap()
}
