//! The demo app on the Rust API (the twin of examples/hello.c):
//! `hello [--http ADDR]... [--fcgi ADDR]... [--threads N] [--backend NAME] [--workers N]
//! [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]... [--access-log PATH]
//! [--https ADDR]... [--cert FILE --key FILE]...`.
//!
//! Routes, on a `myriad::router::Router`: `/` hello, `/hello/:name`, `/echo` body echo,
//! `/env` CGI variables, `/stream?chunks=N&bytes=B` paced by a loop timer, `/delay?ms=M`
//! from a loop timer, `/work?ms=M` on the library's work
//! pool (`Loop::queue_work`), `/stats` the serving loop's
//! counters as JSON, `/pid` the serving process's pid, `/hang` (with --watchdog) a handler
//! that never returns, `POST /form` (urlencoded or multipart), `GET /ws` a WebSocket echo
//! (each message back as the same kind; a plain GET is 426), anything else 404 (405 with
//! Allow for a known path), the same over HTTP and FastCGI. Prints `listening http ADDR`
//! or `listening fcgi ADDR` per listener; with no listener flag it serves FastCGI on fd 0
//! when started by spawn-fcgi, else HTTP on 127.0.0.1:8080 — unless socket-activated
//! (LISTEN_FDS: "fcgi" by name FastCGI, the others HTTP). With NOTIFY_SOCKET: READY=1 and
//! STATUS= once serving, STOPPING=1 at drain, WATCHDOG=1 pings. SIGTERM/SIGINT stop accepting,
//! finish in-flight requests and exit 0; bad flags exit 2. With --workers (or any of the
//! supervisor's flags) a supervisor runs N worker processes: SIGHUP replaces them,
//! SIGUSR2 re-executes the program in place, SIGTERM drains them; an unknown user exits 2.
//! `--access-log PATH` logs each request (combined format) to PATH, `-` for stderr; SIGUSR1
//! opens PATH again (under the supervisor, in every worker).
//! `--https` serves HTTPS with the `--cert`/`--key` pairs (the first the default, the others
//! by SNI; a bad file: its name on stderr, exit 2); SIGHUP reloads them (under the
//! supervisor, every worker is replaced and the new ones read them).
//! `--root DIR`: `GET`/`HEAD /static/PATH` serves DIR/PATH with `myriad::files::FileServer`
//! (one per loop thread); without it /static/ is 404; a DIR that is not a directory exits 2.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use myriad::files::{FileServer, FilesOptions};
use myriad::form::{Event, Form, Limits};
use myriad::router::{Match, Params, Router};
use myriad::tls::{TlsAcceptor, TlsConfig};
use myriad::{
    systemd, AccessLog, Addr, Body, ListenOptions, Listener, Loop, Proto, Request, Response,
    Server, ServerOptions, Supervisor, SupervisorOptions,
};

/// The library's errors (an access log that cannot be written) on stderr.
struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Error
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("hello: {}", r.args());
        }
    }
    fn flush(&self) {}
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "hello: {msg}\nusage: hello [--http ADDR]... [--fcgi ADDR]... [--threads N] [--backend NAME] [--max-body BYTES]\n\
         \x20      [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]...\n\
         \x20      [--access-log PATH] [--https ADDR]... [--cert FILE --key FILE]... [--root DIR]\n\
         \x20      [--chroot DIR] [--max-workers N] [--idle-timeout-ms MS] [--max-rss BYTES]\n\
         ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N"
    );
    std::process::exit(2);
}

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The demo's routes (the router maps method + pattern to these).
#[derive(Clone, Copy)]
enum Route {
    Root,
    Hello,
    Echo,
    Env,
    Stream,
    Delay,
    Work,
    Stats,
    Pid,
    Hang,
    Form,
    Static,
    Ws,
}

/// GET /ws: each text or binary message back as the same kind (pings, closes and
/// permessage-deflate are the library's).
struct WsEcho;

impl myriad::ws::Handler for WsEcho {
    fn on_message(&mut self, _: &mut Loop, ws: &myriad::ws::WebSocket, data: &[u8], binary: bool) {
        ws.send(data, binary);
    }
}

fn routes() -> Router<Route> {
    let mut r = Router::new();
    for (m, p, v) in [
        ("GET", "/", Route::Root),
        ("GET", "/hello/:name", Route::Hello),
        ("POST", "/echo", Route::Echo),
        ("PUT", "/echo", Route::Echo),
        ("GET", "/env", Route::Env),
        ("GET", "/stream", Route::Stream),
        ("GET", "/delay", Route::Delay),
        ("GET", "/work", Route::Work),
        ("GET", "/stats", Route::Stats),
        ("GET", "/pid", Route::Pid),
        ("GET", "/hang", Route::Hang),
        ("POST", "/form", Route::Form),
        ("GET", "/ws", Route::Ws),
    ] {
        r.add(m, p, v).expect("route");
    }
    if ROOT.get().is_some() {
        r.add("GET", "/static/*path", Route::Static).expect("route");
    }
    r
}

/// POST /form: one line per field in the order received, `NAME=VALUE`, or for a file
/// `NAME: FILENAME (SIZE bytes)` (file data counted as it streams in, never kept).
fn form(req: &mut Request, res: Response) {
    let ct = req
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    let mut parser = match Form::new(ct, Limits::default()) {
        Ok(f) => f,
        Err(e) => {
            let _ = res.send(e.status(), "text/plain", e.to_string().as_bytes());
            return;
        }
    };
    let mut res = Some(res);
    let mut out = String::new();
    let (mut file, mut size, mut name) = (None::<String>, 0u64, String::new());
    let mut on = move |ev: Event<'_>, out: &mut String| match ev {
        Event::Part(p) => {
            name = p.name.clone();
            file = p.filename.clone();
            size = 0;
            if file.is_none() {
                out.push_str(&name);
                out.push('=');
            }
        }
        Event::Data(d) if file.is_some() => size += d.len() as u64,
        Event::Data(d) => out.push_str(&String::from_utf8_lossy(d)),
        Event::PartEnd => match &file {
            Some(f) => out.push_str(&format!("{name}: {f} ({size} bytes)\n")),
            None => out.push('\n'),
        },
        Event::End => {}
    };
    req.on_body(move |b| {
        let r = match b {
            Body::Data(d) => parser.feed(d, |e| on(e, &mut out)),
            Body::End => parser.finish(|e| on(e, &mut out)),
            Body::Aborted => {
                res.take();
                return;
            }
        };
        match r {
            Err(e) => {
                if let Some(res) = res.take() {
                    let _ = res.send(e.status(), "text/plain", e.to_string().as_bytes());
                }
            }
            Ok(()) if matches!(b, Body::End) => {
                if let Some(res) = res.take() {
                    let _ = res.send(200, "text/plain", out.as_bytes());
                }
            }
            Ok(()) => {}
        }
    });
}

fn handle(
    lp: &mut Loop,
    req: &mut Request,
    mut res: Response,
    router: &Router<Route>,
    files: Option<&FileServer>,
) {
    let mut params = Params::new();
    let route = match router.find(req.method(), req.path(), &mut params) {
        Match::Found(r) => *r,
        Match::NotFound => {
            let _ = res.send(404, "text/plain", b"Not Found");
            return;
        }
        Match::MethodNotAllowed(allow) => {
            let _ = res.header("Allow", allow.as_bytes());
            let _ = res.send(405, "text/plain", b"Method Not Allowed");
            return;
        }
        Match::BadRequest => {
            let _ = res.send(400, "text/plain", b"Bad Request");
            return;
        }
    };
    match route {
        Route::Hello => {
            let body = format!("Hello, {}!", params.get("name").unwrap_or(""));
            let _ = res.send(200, "text/plain", body.as_bytes());
        }
        Route::Form => form(req, res),
        // The raw (still percent-encoded) path below /static/: the handler decodes and
        // checks it once.
        Route::Static => match files {
            Some(f) => f.serve(req, res, &req.path().as_bytes()["/static/".len()..]),
            None => {
                let _ = res.send(404, "text/plain", b"Not Found");
            }
        },
        Route::Ws => {
            // (A request that is not a valid upgrade was answered 4xx by upgrade.)
            let _ = myriad::ws::upgrade(req, res, myriad::ws::Options::default(), WsEcho);
        }
        Route::Root => {
            let _ = res.status(200);
            let _ = res.header("Content-Type", b"text/plain");
            let _ = res.write_static(b"Hello, World!");
            let _ = res.finish();
        }
        Route::Echo => {
            let ct = req
                .header("content-type")
                .map(|v| v.to_vec())
                .unwrap_or_else(|| b"application/octet-stream".to_vec());
            req.read_body(move |body| match body {
                Some(b) => {
                    // A type the response cannot carry (a control byte in the request's,
                    // echoed back) makes the response impossible to build: 500.
                    if res.header_bytes(b"Content-Type", &ct).is_err() {
                        let _ = res.send(500, "text/plain", b"Internal Server Error\n");
                        return;
                    }
                    let _ = res.write(&b);
                    let _ = res.finish();
                }
                None => drop(res),
            });
        }
        Route::Env => {
            let mut out = String::new();
            for (k, v) in req.cgi_vars() {
                out.push_str(&k);
                out.push('=');
                out.push_str(&v);
                out.push('\n');
            }
            let _ = res.send(200, "text/plain", out.as_bytes());
        }
        Route::Stream => {
            let chunks = param(req.query(), "chunks").unwrap_or(1).min(100_000);
            let bytes = param(req.query(), "bytes").unwrap_or(1).min(1 << 20) as usize;
            let _ = res.header("Content-Type", b"text/plain");
            let res = Rc::new(RefCell::new(Some(res)));
            let mut i = 0u64;
            if chunks == 0 {
                if let Some(r) = res.borrow_mut().take() {
                    let _ = r.finish();
                }
                return;
            }
            {
                lp.repeat(Duration::ZERO, Duration::from_millis(1), move |lp, id| {
                    let mut slot = res.borrow_mut();
                    let Some(r) = slot.as_mut() else {
                        lp.cancel_timer(id);
                        return;
                    };
                    if r.is_aborted() {
                        slot.take();
                        lp.cancel_timer(id);
                        return;
                    }
                    // A slow reader: wait (bounded memory) until most of it went out.
                    if r.queued() > 256 * 1024 {
                        return;
                    }
                    let letter = b'a' + (i % 26) as u8;
                    let _ = r.write(&vec![letter; bytes]);
                    let _ = r.flush();
                    i += 1;
                    if i == chunks {
                        if let Some(r) = slot.take() {
                            let _ = r.finish();
                        }
                        lp.cancel_timer(id);
                    }
                });
            }
        }
        Route::Delay => {
            let ms = param(req.query(), "ms").unwrap_or(0).min(60_000);
            lp.timer(Duration::from_millis(ms), move |_| {
                let _ = res.send(200, "text/plain", format!("delayed {ms}").as_bytes());
            });
        }
        Route::Work => {
            let ms = param(req.query(), "ms").unwrap_or(0).min(60_000);
            // On the library's work pool; the response comes back to the loop's thread.
            let cell = Rc::new(RefCell::new(Some(res)));
            let back = cell.clone();
            let queued = lp.queue_work(
                move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    format!("worked {ms}")
                },
                move |_, r| {
                    if let Some(res) = back.borrow_mut().take() {
                        let _ = match r {
                            Ok(body) => res.send(200, "text/plain", body.as_bytes()),
                            Err(_) => res.send(503, "text/plain", b"cancelled"),
                        };
                    }
                },
            );
            if queued.is_err() {
                // The pool's bounded queue is full.
                if let Some(res) = cell.borrow_mut().take() {
                    let _ = res.send(503, "text/plain", b"busy");
                }
            }
        }
        Route::Pid => {
            let _ = res.send(200, "text/plain", std::process::id().to_string().as_bytes());
        }
        Route::Hang if HANG.load(std::sync::atomic::Ordering::Relaxed) => {
            // A handler stuck in a bug: the loop thread never comes back (--watchdog).
            drop(res);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Route::Hang => {
            let _ = res.send(404, "text/plain", b"Not Found");
        }
        Route::Stats => {
            let s = lp.stats();
            let body = format!(
                "{{\"iterations\":{},\"wait\":{},\"ctl\":{},\"read\":{},\"received\":{},\
                 \"write\":{},\"accept\":{},\"other\":{},\"wakeups\":{},\"accepted\":{}}}\n",
                s.iterations,
                s.wait,
                s.ctl,
                s.read,
                s.received,
                s.write,
                s.accept,
                s.other,
                s.wakeups,
                s.accepted
            );
            let _ = res.send(200, "application/json", body.as_bytes());
        }
    }
}

/// sd_notify when a service manager listens (NOTIFY_SOCKET); a failure is not fatal.
fn notify(state: &str) {
    if let Err(e) = systemd::notify(state) {
        eprintln!("hello: sd_notify: {e}");
    }
}

/// --root DIR: the static files' root (checked in `main`).
static ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The body limit (--max-body; 64 MiB by default).
static MAX_BODY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(64 << 20);

/// A listener, its protocol, and its TLS acceptor for HTTPS.
type Listen = (Listener, Proto, Option<TlsAcceptor>);

/// The certificates of the `--cert`/`--key` pairs (errors name the file).
fn load_certs(pairs: &[(String, String)]) -> Result<TlsConfig, String> {
    let mut c = TlsConfig::new();
    for (cert, key) in pairs {
        c.add_cert_files(cert.as_ref(), key.as_ref())
            .map_err(|e| e.to_string())?;
    }
    Ok(c)
}

/// `--https` addresses and the `--cert`/`--key` pairs.
#[derive(Default)]
struct Https {
    addrs: Vec<Addr>,
    certs: Vec<(String, String)>,
}

fn serve(lp: &mut Loop, listeners: Vec<Listen>, access_log: Option<AccessLog>) -> Server {
    let opts = ServerOptions {
        max_body: MAX_BODY.load(std::sync::atomic::Ordering::Relaxed),
        access_log,
        ..Default::default()
    };
    let router = routes();
    // One FileServer per loop: its open-file cache is the loop thread's.
    let files = ROOT.get().map(|root| {
        FileServer::new(root, FilesOptions::default()).unwrap_or_else(|e| {
            eprintln!("hello: --root {}: {e}", root.display());
            std::process::exit(2);
        })
    });
    let srv = lp.server(opts, move |lp, req, res| {
        handle(lp, req, res, &router, files.as_ref())
    });
    for (l, proto, tls) in listeners {
        match tls {
            Some(acc) => srv.listen_tls(lp, l, acc),
            None => srv.listen(lp, l, proto),
        };
    }
    srv
}

/// `/hang` is served (only with --watchdog).
static HANG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    let mut addrs: Vec<(Addr, Proto)> = Vec::new();
    let mut threads = 1usize;
    let mut backend = String::new();
    let mut sup: Option<SupervisorOptions> = None;
    let mut status: Vec<Addr> = Vec::new();
    let mut access_log = None;
    // (The last --root wins.)
    let mut root = None;
    let mut https = Https::default();
    let mut cert: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |flag: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match a.as_str() {
            "--http" => addrs.push((
                val("--http")
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("{e}"))),
                Proto::Http,
            )),
            "--fcgi" => addrs.push((
                val("--fcgi")
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("{e}"))),
                Proto::Fcgi,
            )),
            "--threads" => {
                threads = val("--threads")
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .unwrap_or_else(|| usage("--threads takes 1..256"))
            }
            "--backend" => backend = val("--backend"),
            "--https" => https.addrs.push(
                val("--https")
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("{e}"))),
            ),
            "--cert" if cert.is_none() => cert = Some(val("--cert")),
            "--key" if cert.is_some() => https.certs.push((cert.take().unwrap(), val("--key"))),
            "--cert" | "--key" => usage("--cert FILE --key FILE go in pairs"),
            "--root" => {
                let dir = std::path::PathBuf::from(val("--root"));
                if let Err(e) = FileServer::new(&dir, FilesOptions::default()) {
                    usage(&format!("--root {}: {e}", dir.display()));
                }
                root = Some(dir);
            }
            "--max-body" => {
                let v = val("--max-body")
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("--max-body takes a byte count"));
                MAX_BODY.store(v, std::sync::atomic::Ordering::Relaxed);
            }
            "--workers" => {
                sup.get_or_insert_with(Default::default).workers = val("--workers")
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .unwrap_or_else(|| usage("--workers takes 1..1024"))
            }
            "--max-requests" => {
                sup.get_or_insert_with(Default::default).max_requests = val("--max-requests")
                    .parse()
                    .unwrap_or_else(|_| usage("--max-requests takes a number"))
            }
            "--watchdog" => {
                let s: u64 = val("--watchdog")
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .unwrap_or_else(|| usage("--watchdog takes seconds (1 or more)"));
                sup.get_or_insert_with(Default::default).watchdog = Some(Duration::from_secs(s));
                HANG.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            "--user" => sup.get_or_insert_with(Default::default).user = Some(val("--user")),
            // Beyond the demo contract (the Rust API's chroot, dynamic pool and memory limit):
            "--chroot" => {
                sup.get_or_insert_with(Default::default).chroot = Some(val("--chroot").into())
            }
            "--max-workers" => {
                sup.get_or_insert_with(Default::default).max_workers = val("--max-workers")
                    .parse()
                    .unwrap_or_else(|_| usage("--max-workers takes a number"))
            }
            "--idle-timeout-ms" => {
                let ms = val("--idle-timeout-ms")
                    .parse()
                    .unwrap_or_else(|_| usage("--idle-timeout-ms takes a number"));
                sup.get_or_insert_with(Default::default).idle_timeout = Duration::from_millis(ms)
            }
            "--max-rss" => {
                sup.get_or_insert_with(Default::default).max_rss = val("--max-rss")
                    .parse()
                    .unwrap_or_else(|_| usage("--max-rss takes bytes"))
            }
            "--status" => status.push(
                val("--status")
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("{e}"))),
            ),
            "--access-log" => {
                let p = val("--access-log");
                access_log = Some(AccessLog::open(&p, None).unwrap_or_else(|e| {
                    eprintln!("hello: --access-log {p}: {e}");
                    std::process::exit(2);
                }));
                if log::set_logger(&StderrLog).is_ok() {
                    log::set_max_level(log::LevelFilter::Error);
                }
            }
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    if let Some(r) = root {
        let _ = ROOT.set(r);
    }
    if cert.is_some() {
        usage("--cert FILE --key FILE go in pairs");
    }
    if !https.addrs.is_empty() && https.certs.is_empty() {
        usage("--https needs --cert FILE --key FILE");
    }
    if let Some(opts) = sup {
        if addrs.is_empty() && https.addrs.is_empty() {
            // Socket activation: the supervisor serves the passed fds (one socket shared by
            // every worker) and tells systemd READY=1 once its workers serve. The variables
            // stay set: a SIGUSR2 re-exec keeps the pid and these fds, and finds them again.
            let fds = systemd::listen_fds(false).unwrap_or_else(|e| {
                eprintln!("hello: {e}");
                std::process::exit(1);
            });
            for f in fds {
                let proto = f.proto();
                addrs.push((Addr::Fd(std::os::fd::IntoRawFd::into_raw_fd(f.fd)), proto));
            }
        }
        if addrs.is_empty() && https.addrs.is_empty() {
            addrs.push(("127.0.0.1:8080".parse().unwrap(), Proto::Http));
        }
        supervise(opts, addrs, https, status, threads, backend, access_log);
    }
    serve_all(addrs, https, threads, backend, true, access_log);
}

/// --workers: the supervisor binds, prints the addresses once, and forks the workers, which
/// serve as the process does without --workers.
fn supervise(
    opts: SupervisorOptions,
    addrs: Vec<(Addr, Proto)>,
    https: Https,
    status: Vec<Addr>,
    threads: usize,
    backend: String,
    access_log: Option<AccessLog>,
) -> ! {
    let mut sup = Supervisor::new(opts);
    if let Err(e) = sup.validate() {
        eprintln!("hello: {e}");
        std::process::exit(2);
    }
    // The certificates are checked here (a bad file: exit 2 before serving) and loaded by
    // each worker, so a SIGHUP reload (every worker replaced) reads them again.
    if !https.addrs.is_empty() {
        if let Err(e) = load_certs(&https.certs) {
            eprintln!("hello: {e}");
            std::process::exit(2);
        }
    }
    for a in &https.addrs {
        match sup.listen_tls(a) {
            Ok(got) => println!("listening https {got}"),
            Err(e) => {
                eprintln!("hello: cannot listen on {a}: {e}");
                std::process::exit(1);
            }
        }
    }
    for (a, proto) in &addrs {
        match sup.listen(a, *proto) {
            Ok(got) => println!("listening {} {got}", proto_name(*proto)),
            Err(e) => {
                eprintln!("hello: cannot listen on {a}: {e}");
                std::process::exit(1);
            }
        }
    }
    for a in &status {
        match sup.status_listen(a) {
            Ok(got) => println!("listening status {got}"),
            Err(e) => {
                eprintln!("hello: cannot listen on {a}: {e}");
                std::process::exit(1);
            }
        }
    }
    std::io::stdout().flush().unwrap();
    let certs = https.certs;
    match sup.run(move |w| {
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        for (i, l) in w.listeners().iter().enumerate() {
            if w.is_https(i) {
                tls.push(l.0.clone());
            } else {
                plain.push(l.clone());
            }
        }
        serve_all(
            plain,
            Https {
                addrs: tls,
                certs: certs.clone(),
            },
            threads,
            backend.clone(),
            false,
            access_log.clone(),
        );
        0
    }) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hello: {e}");
            std::process::exit(1);
        }
    }
}

fn proto_name(p: Proto) -> &'static str {
    if p == Proto::Http {
        "http"
    } else {
        "fcgi"
    }
}

/// Serves `addrs` on `threads` loops until SIGTERM/SIGINT has drained them. `main`: this
/// process is the service itself (not a supervised worker): it prints the addresses, takes
/// socket-activated fds when given no address, and notifies the service manager. SIGUSR1
/// reopens the access log.
fn serve_all(
    mut addrs: Vec<(Addr, Proto)>,
    https: Https,
    threads: usize,
    backend: String,
    main: bool,
    access_log: Option<AccessLog>,
) {
    // The certificates first: a bad file exits 2 before anything is served.
    let acceptor = (!https.addrs.is_empty()).then(|| {
        load_certs(&https.certs)
            .and_then(|c| TlsAcceptor::new(&c).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                eprintln!("hello: {e}");
                std::process::exit(2);
            })
    });
    // Each listener as one handle per thread, with its protocol and whether it is HTTPS.
    let mut bound: Vec<(Vec<Listener>, Proto, bool)> = Vec::new();
    if addrs.is_empty() && https.addrs.is_empty() && main {
        // Socket activation (systemd): the fds passed, "fcgi" by name serving FastCGI.
        let fds = systemd::listen_fds(true).unwrap_or_else(|e| {
            eprintln!("hello: {e}");
            std::process::exit(1);
        });
        for f in fds {
            let proto = f.proto();
            let l = f.into_listener().unwrap_or_else(|e| {
                eprintln!("hello: socket activation: {e}");
                std::process::exit(1);
            });
            bound.push((l.share(threads), proto, false));
        }
    }
    if addrs.is_empty() && https.addrs.is_empty() && bound.is_empty() {
        // Started by spawn-fcgi (or a web server): fd 0 is the FastCGI listen socket.
        if myriad::fcgi::is_listen_socket(0) {
            addrs.push((Addr::Fd(0), Proto::Fcgi));
        } else {
            addrs.push(("127.0.0.1:8080".parse().unwrap(), Proto::Http));
        }
    }
    let all = addrs.iter().map(|(a, p)| (a, *p, false));
    for (a, proto, tls) in all.chain(https.addrs.iter().map(|a| (a, Proto::Http, true))) {
        let ls = Listener::bind_many(a, threads, &ListenOptions::default()).unwrap_or_else(|e| {
            eprintln!("hello: cannot listen on {a}: {e}");
            std::process::exit(1);
        });
        bound.push((ls, proto, tls));
    }
    let mut per_thread: Vec<Vec<Listen>> = (0..threads).map(|_| Vec::new()).collect();
    let mut status = Vec::new();
    for (ls, proto, tls) in bound {
        let name = if tls { "https" } else { proto_name(proto) };
        if main {
            println!("listening {name} {}", ls[0].addr());
        }
        status.push(format!("{name} {}", ls[0].addr()));
        for (t, l) in ls.into_iter().enumerate() {
            per_thread[t].push((l, proto, acceptor.clone().filter(|_| tls)));
        }
    }
    std::io::stdout().flush().unwrap();

    let mut main_lp =
        Loop::with_backend(&backend).unwrap_or_else(|e| usage(&format!("--backend: {e}")));
    // Signals first, so that every thread started below inherits the blocked mask.
    let stoppers: Rc<RefCell<Vec<myriad::Handle>>> = Rc::default();
    let servers: Rc<RefCell<Vec<Server>>> = Rc::default();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (st, sv) = (stoppers.clone(), servers.clone());
        main_lp
            .watch_signal(sig, move |lp, _| {
                if main {
                    notify("STOPPING=1\nSTATUS=draining");
                }
                for h in st.borrow().iter() {
                    h.stop();
                }
                for s in sv.borrow().iter() {
                    s.shutdown(lp, |lp| lp.stop());
                }
            })
            .expect("signal");
    }
    let log = access_log.clone();
    main_lp
        .watch_signal(libc::SIGUSR1, move |_, _| {
            if let Some(Err(e)) = log.as_ref().map(AccessLog::reopen) {
                eprintln!("hello: reopening the access log: {e}");
            }
        })
        .expect("signal");
    if let Some(acc) = acceptor.clone() {
        // SIGHUP: the certificates again from the same files, for new connections.
        let certs = https.certs.clone();
        main_lp
            .watch_signal(libc::SIGHUP, move |_, _| {
                match load_certs(&certs).and_then(|c| acc.reload(&c).map_err(|e| e.to_string())) {
                    Ok(()) => eprintln!("hello: certificates reloaded"),
                    Err(e) => eprintln!("hello: SIGHUP: {e}; certificates not reloaded"),
                }
            })
            .expect("signal");
    }
    // Started after the signals are blocked: threads inherit the mask.
    let mut workers = Vec::new();
    for ls in per_thread.drain(1..) {
        let (tx, rx) = mpsc::channel();
        let backend = backend.clone();
        let access_log = access_log.clone();
        workers.push(std::thread::spawn(move || {
            let mut lp = Loop::with_backend(&backend).expect("loop");
            let srv = serve(&mut lp, ls, access_log);
            // Stop: drain this loop's server, then leave.
            let h = lp.handle();
            tx.send(h).unwrap();
            let srv2 = srv.clone();
            lp.run().expect("loop");
            srv2.shutdown(&mut lp, |lp| lp.stop());
            lp.run().expect("loop");
        }));
        stoppers.borrow_mut().push(rx.recv().unwrap());
    }
    let srv = serve(&mut main_lp, per_thread.pop().unwrap(), access_log);
    servers.borrow_mut().push(srv);
    if main {
        let plural = if threads > 1 { "s" } else { "" };
        notify(&format!(
            "READY=1\nSTATUS=serving {} ({threads} thread{plural})",
            status.join(", ")
        ));
        // WATCHDOG=1 from this loop's timers when the manager asks for it (WatchdogSec=).
        if let Err(e) = systemd::start_watchdog(&mut main_lp) {
            eprintln!("hello: watchdog: {e}");
            std::process::exit(1);
        }
    }
    main_lp.run().expect("loop");
    for w in workers {
        w.join().unwrap();
    }
}
