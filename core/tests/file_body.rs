//! File bodies ([`myriad::Response::write_file`]) on both backends: sent by sendfile with no
//! byte copied through user space (the loop's stats say so), in order with in-memory
//! pipelined responses, HEAD, streamed (chunked) responses, a slow reader in bounded memory
//! without a busy loop, the file let go when the client goes away mid-body, a file that
//! shrinks under its response, and FastCGI (STDOUT records read a block at a time).

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use common::http::Client;
use common::Server;
use myriad::{Loop, Proto, Request, Response, ServerOptions};

const BACKENDS: [&str; 2] = ["epoll", "io_uring"];

/// The bytes of test file `n` bytes long (not a repeating pattern of a power of two).
fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

thread_local! {
    /// The loop thread's open test files, by name.
    static FILES: RefCell<HashMap<String, Rc<File>>> = RefCell::new(HashMap::new());
}

fn make_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("myriad-file-body-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn query(req: &Request, key: &str) -> Option<u64> {
    req.query()
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// `/f/NAME[?off=A&len=B]`: the file (or a range of it) by write_file; `/s/NAME`: streamed
/// (flushed head, then bytes, the file, bytes: chunked); `/mem`: an in-memory body.
fn handler(lp: &mut Loop, req: &mut Request, mut res: Response) {
    let path = req.path().to_string();
    if path == "/mem" {
        let _ = res.send(200, "text/plain", b"memory\n");
        return;
    }
    let (stream, name) = match (path.strip_prefix("/f/"), path.strip_prefix("/s/")) {
        (Some(n), _) => (false, n),
        (_, Some(n)) => (true, n),
        _ => {
            let _ = res.send(404, "text/plain", b"no\n");
            return;
        }
    };
    let Some(file) = FILES.with(|f| f.borrow().get(name).cloned()) else {
        let _ = res.send(404, "text/plain", b"no file\n");
        return;
    };
    let size = file.metadata().unwrap().len();
    let off = query(req, "off").unwrap_or(0);
    let len = query(req, "len").unwrap_or(size - off);
    res.header("Content-Type", b"application/octet-stream")
        .unwrap();
    if stream {
        res.flush().unwrap();
        res.write(b"<").unwrap();
        // The rest later on the loop: the head went out chunked.
        lp.defer(move |_| {
            res.write_file(file, off, len).unwrap();
            res.write(b">").unwrap();
            res.finish().unwrap();
        });
        return;
    } else {
        res.write_file(file, off, len).unwrap();
    }
    res.finish().unwrap();
}

/// A server of `handler` on `backend` with the files of `dir` open on its loop.
fn start(backend: &'static str, dir: &std::path::Path, proto: Proto) -> Server {
    let dir = dir.to_path_buf();
    let srv = Server::start_on(backend, "127.0.0.1:0", move |lp, l| {
        FILES.with(|f| {
            let mut f = f.borrow_mut();
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                f.insert(name, Rc::new(File::open(e.path()).unwrap()));
            }
        });
        let srv = lp.server(ServerOptions::default(), handler);
        srv.listen(lp, l, proto);
        // The server lives as long as the loop's thread.
        std::mem::forget(srv);
    });
    assert_eq!(srv.backend(), backend);
    srv
}

const SIZES: [(&str, usize); 4] = [
    ("zero", 0),
    ("one", 1),
    ("k64", 64 * 1024),
    ("m3", 3 * 1024 * 1024 + 17),
];

fn sized_files(tag: &str) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    for (name, n) in SIZES {
        make_file(&dir, name, &content(n));
    }
    dir
}

#[test]
fn file_bodies_go_by_sendfile_in_order_with_pipelined_responses() {
    let dir = sized_files("pipe");
    for backend in BACKENDS {
        let srv = start(backend, &dir, Proto::Http);
        let before = srv.stats();
        let mut c = Client::connect(srv.tcp());
        let mut reqs = String::new();
        for (name, _) in SIZES {
            reqs.push_str("GET /mem HTTP/1.1\r\nHost: t\r\n\r\n");
            reqs.push_str(&format!("GET /f/{name} HTTP/1.1\r\nHost: t\r\n\r\n"));
            reqs.push_str(&format!("HEAD /f/{name} HTTP/1.1\r\nHost: t\r\n\r\n"));
            reqs.push_str(&format!("GET /s/{name} HTTP/1.1\r\nHost: t\r\n\r\n"));
        }
        reqs.push_str("GET /f/m3?off=1000&len=70000 HTTP/1.1\r\nHost: t\r\n\r\n");
        c.send(reqs.as_bytes());
        let mut file_bytes = 0;
        for (name, n) in SIZES {
            let want = content(n);
            let r = c.read(false);
            assert_eq!(
                (r.status, &r.body[..]),
                (200, &b"memory\n"[..]),
                "{backend}"
            );
            let r = c.read(false);
            assert_eq!(r.status, 200, "{backend} {name}");
            assert_eq!(r.header("content-length"), Some(&*n.to_string()));
            assert!(r.body == want, "{backend} {name}: body differs");
            let r = c.read(true);
            assert_eq!(r.header("content-length"), Some(&*n.to_string()), "HEAD");
            let r = c.read(false);
            assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{backend}");
            let mut framed = b"<".to_vec();
            framed.extend_from_slice(&want);
            framed.push(b'>');
            assert!(r.body == framed, "{backend} {name}: streamed body differs");
            file_bytes += 2 * n as u64;
        }
        let r = c.read(false);
        assert!(
            r.body == content(3 * 1024 * 1024 + 17)[1000..71000],
            "{backend}"
        );
        file_bytes += 70000;
        let st = srv.stats();
        assert_eq!(
            st.file_sent - before.file_sent,
            file_bytes,
            "{backend}: {st:?}"
        );
        assert_eq!(
            st.file_copied, 0,
            "{backend}: no file byte through user space"
        );
        assert_eq!(st.file_reads, 0, "{backend}");
        assert!(st.sendfile > before.sendfile, "{backend}");
        drop(c);
        srv.wait_for(5, "connection closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slow_reader_of_a_large_file_costs_no_memory_and_no_busy_loop() {
    let dir = temp_dir("slow");
    let n = 24 * 1024 * 1024;
    make_file(&dir, "big", &content(n));
    for backend in BACKENDS {
        let srv = start(backend, &dir, Proto::Http);
        let mut c = std::net::TcpStream::connect(srv.tcp()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"GET /f/big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // The client reads nothing for a while: the socket buffers fill and the server
        // waits for writability.
        std::thread::sleep(Duration::from_millis(300));
        let a = srv.stats();
        std::thread::sleep(Duration::from_millis(300));
        let b = srv.stats();
        // (Each stats() call is one posted closure: an iteration or two.)
        assert!(
            b.iterations - a.iterations <= 4,
            "{backend}: the loop spins while the client does not read: {a:?} -> {b:?}"
        );
        assert!(
            b.buffers_in_use <= 1,
            "{backend}: memory held for the file: {b:?}"
        );
        assert!(
            b.file_sent < n as u64,
            "{backend}: the client read nothing yet"
        );
        // Then it reads slowly, 256 KiB at a time.
        let mut got = Vec::with_capacity(n + 1024);
        let mut buf = vec![0u8; 256 * 1024];
        let mut reads = 0;
        while got.len() < n + 100 {
            let k = c.read(&mut buf).unwrap();
            assert!(k > 0, "{backend}: closed early");
            got.extend_from_slice(&buf[..k]);
            reads += 1;
            if reads % 16 == 0 {
                std::thread::sleep(Duration::from_millis(5));
                assert!(srv.stats().buffers_in_use <= 1, "{backend}");
            }
            let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
            if head_end.is_some_and(|h| got.len() >= h + 4 + n) {
                break;
            }
        }
        let h = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(got[h..] == content(n)[..], "{backend}: body differs");
        let st = srv.stats();
        assert_eq!(st.file_sent, n as u64, "{backend}");
        assert_eq!(st.file_copied, 0, "{backend}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_file_is_let_go_when_the_client_goes_away_mid_body() {
    let dir = temp_dir("gone");
    make_file(&dir, "big", &content(16 * 1024 * 1024));
    for backend in BACKENDS {
        let srv = start(backend, &dir, Proto::Http);
        let refs = || srv.on_loop(|_| FILES.with(|f| Rc::strong_count(&f.borrow()["big"])));
        assert_eq!(refs(), 1);
        let mut c = std::net::TcpStream::connect(srv.tcp()).unwrap();
        c.write_all(b"GET /f/big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        c.read_exact(&mut buf).unwrap();
        srv.wait_for(5, "the response under way", |lp| lp.connection_count() == 1);
        assert_eq!(refs(), 2, "{backend}: the response holds the file");
        drop(c);
        srv.wait_for(5, "connection closed", |lp| lp.connection_count() == 0);
        assert_eq!(refs(), 1, "{backend}: the file was let go");
        assert_eq!(srv.stats().buffers_in_use, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_shrinks_under_its_response_fails_the_connection_only() {
    let dir = temp_dir("shrink");
    let p = make_file(&dir, "shrinks", &content(4 * 1024 * 1024));
    for backend in BACKENDS {
        let srv = start(backend, &dir, Proto::Http);
        let mut c = std::net::TcpStream::connect(srv.tcp()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The handler takes the size; the client reads nothing until the file was cut.
        c.write_all(b"GET /f/shrinks HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1024 * 1024)
            .unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert!(got.len() < 4 * 1024 * 1024, "{backend}: {}", got.len());
        srv.wait_for(5, "connection closed", |lp| lp.connection_count() == 0);
        // Others are served.
        let mut c = Client::connect(srv.tcp());
        c.send(b"GET /mem HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read(false).status, 200);
        // Restore it for the next backend.
        File::create(&p)
            .unwrap()
            .write_all(&content(4 * 1024 * 1024))
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fastcgi_sends_a_file_as_stdout_records_a_block_at_a_time() {
    use common::fcgi;
    let dir = sized_files("fcgi");
    let big = 24 * 1024 * 1024;
    make_file(&dir, "big", &content(big));
    for backend in BACKENDS {
        let srv = start(backend, &dir, Proto::Fcgi);
        let mut c = fcgi::Client::connect(srv.tcp());
        for (i, (name, n)) in SIZES.iter().enumerate() {
            let id = i as u16 + 1;
            c.send(&fcgi::request(id, "GET", &format!("/f/{name}"), b"", true));
            let (out, err, status) = c.response(id);
            assert_eq!((status, err.len()), (0, 0), "{backend}");
            let (st, head, body) = fcgi::parse_cgi(&out);
            assert_eq!(st, 200);
            assert!(head.contains(&format!("Content-Length: {n}\r\n")), "{head}");
            assert!(body == content(*n), "{backend} {name}: body differs");
        }
        let st = srv.stats();
        let total: u64 = SIZES.iter().map(|(_, n)| *n as u64).sum();
        assert_eq!((st.file_copied, st.file_sent), (total, 0), "{backend}");
        // A slow front end: the records are read only as it takes them.
        c.send(&fcgi::request(9, "GET", "/f/big", b"", true));
        std::thread::sleep(Duration::from_millis(300));
        let a = srv.stats();
        std::thread::sleep(Duration::from_millis(300));
        let b = srv.stats();
        assert!(b.file_copied - total < big as u64 / 2, "{backend}: {b:?}");
        assert_eq!(
            a.file_copied, b.file_copied,
            "{backend}: reads while blocked"
        );
        assert!(
            b.iterations - a.iterations <= 4,
            "{backend}: spins: {a:?} -> {b:?}"
        );
        assert!(b.buffers_in_use <= 2, "{backend}: {b:?}");
        let (out, _, _) = c.response(9);
        assert!(fcgi::parse_cgi(&out).2 == content(big));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_keep_alive_file_response_costs_one_send_and_one_sendfile() {
    let dir = temp_dir("count");
    make_file(&dir, "k1", &content(1024));
    for backend in BACKENDS {
        let srv = start(backend, &dir, Proto::Http);
        let mut c = Client::connect(srv.tcp());
        // Warm up (buffers, the first write interest), then count.
        c.send(b"GET /f/k1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read(false).body.len(), 1024);
        let a = srv.stats();
        let n = 200;
        for _ in 0..n {
            c.send(b"GET /f/k1 HTTP/1.1\r\nHost: t\r\n\r\n");
            assert!(c.read(false).body == content(1024));
        }
        let b = srv.stats();
        let per = |x: u64, y: u64| (y - x) as f64 / n as f64;
        // (Each stats() call is one posted closure; the client waits for each answer.)
        assert_eq!(
            b.sendfile - a.sendfile,
            n,
            "{backend}: one sendfile per response"
        );
        assert_eq!(b.file_sent - a.file_sent, n * 1024, "{backend}");
        assert_eq!(
            b.write - a.write,
            n,
            "{backend}: the head in one send per response"
        );
        assert!(
            per(a.read + a.received, b.read + b.received) <= 1.05,
            "{backend}: one read per request: {a:?} -> {b:?}"
        );
        assert_eq!(b.file_copied, 0, "{backend}");
        assert_eq!(
            b.ctl - a.ctl,
            0,
            "{backend}: no interest change per request"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTPS (rustls through the transport seam): the file is read a block at a time and
/// encrypted, never by sendfile; a reader limited to 4 MiB/s holds a few blocks at most.
#[cfg(feature = "tls")]
#[test]
fn over_tls_a_file_is_read_and_encrypted_in_bounded_chunks() {
    use myriad::tls::{TlsAcceptor, TlsConfig};
    use std::process::Command;
    let dir = temp_dir("tls");
    let n = 8 * 1024 * 1024;
    make_file(&dir, "big", &content(n));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(certs.join("k.pem"))
        .arg("-out")
        .arg(certs.join("c.pem"))
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl req");
    for backend in BACKENDS {
        let mut cfg = TlsConfig::new();
        cfg.add_cert_files(&certs.join("c.pem"), &certs.join("k.pem"))
            .unwrap();
        let acc = TlsAcceptor::new(&cfg).unwrap();
        let d = dir.clone();
        let srv = Server::start_on(backend, "127.0.0.1:0", move |lp, l| {
            FILES.with(|f| {
                f.borrow_mut()
                    .insert("big".into(), Rc::new(File::open(d.join("big")).unwrap()))
            });
            let s = lp.server(ServerOptions::default(), handler);
            s.listen_tls(lp, l, acc);
            std::mem::forget(s);
        });
        let url = format!("https://127.0.0.1:{}/f/big", srv.tcp().port());
        let out = dir.join(format!("got-{backend}"));
        let mut child = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--limit-rate", "4M", "--cacert"])
            .arg(certs.join("c.pem"))
            .arg("-o")
            .arg(&out)
            .arg(&url)
            .spawn()
            .expect("curl");
        let mut peak = 0;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            peak = peak.max(srv.stats().buffers_in_use);
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{backend}: curl");
        assert!(
            std::fs::read(&out).unwrap() == content(n),
            "{backend}: body differs"
        );
        let st = srv.stats();
        assert_eq!(
            (st.file_copied, st.file_sent),
            (n as u64, 0),
            "{backend}: {st:?}"
        );
        assert!(
            peak <= 8,
            "{backend}: {peak} pool blocks held for a slow TLS reader"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
