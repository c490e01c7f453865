//! The access log on real servers: one line per request over HTTP and FastCGI with the
//! right fields, many requests written in few writes, lines flushed by the timer and at
//! shutdown, rejected and abandoned requests logged, a full disk not affecting anyone.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http::{Client, HttpSrv};
use myriad::{AccessLog, Proto, ServerOptions};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("myriad-alog-it-{}-{name}", std::process::id()))
}

fn opts(log: &AccessLog) -> ServerOptions {
    ServerOptions {
        access_log: Some(log.clone()),
        ..ServerOptions::default()
    }
}

/// Waits up to 5 s for the file to have `n` lines.
fn lines(p: &PathBuf, n: usize) -> Vec<String> {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let v: Vec<String> = text.lines().map(String::from).collect();
        if v.len() >= n || t.elapsed() > Duration::from_secs(5) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn http_lines_have_the_combined_fields_and_the_timer_flushes_them() {
    let p = tmp("http");
    let log = AccessLog::file(&p, None).unwrap();
    let srv = HttpSrv::start(opts(&log));
    let mut c = Client::connect(srv.addr());
    c.send(b"GET /?a=1 HTTP/1.1\r\nHost: t\r\nReferer: http://r/\r\nUser-Agent: ua \"x\"\r\n\r\n");
    assert_eq!(c.read(false).status, 200);
    c.send(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read(false).status, 404);
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read(true).status, 200);
    // Nothing is written per request: the one-second timer writes the three lines.
    assert_eq!(log.stats().writes, 0);
    let l = lines(&p, 3);
    assert_eq!(l.len(), 3, "{l:?}");
    let s = log.stats();
    assert_eq!(
        (s.lines, s.writes, s.dropped),
        (3, 1, 0),
        "one write for three lines"
    );
    let re_time = |l: &str| {
        let a = l.find('[').unwrap();
        let b = l.find(']').unwrap();
        // 04/Dec/2026:18:29:41 +0000
        assert_eq!(b - a - 1, 26, "{l}");
        l[..a].to_string() + &l[b + 1..]
    };
    assert_eq!(
        re_time(&l[0]),
        "127.0.0.1 - -  \"GET /?a=1 HTTP/1.1\" 200 13 \"http://r/\" \"ua \\x22x\\x22\""
    );
    assert_eq!(
        re_time(&l[1]),
        "127.0.0.1 - -  \"GET /nope HTTP/1.1\" 404 9 \"-\" \"-\""
    );
    assert_eq!(
        re_time(&l[2]),
        "127.0.0.1 - -  \"HEAD / HTTP/1.1\" 200 0 \"-\" \"-\""
    );
    drop(c);
    srv.inner.stop();
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn fastcgi_requests_name_their_protocol_and_client() {
    use common::fcgi;
    let p = tmp("fcgi");
    let log = AccessLog::file(
        &p,
        Some("$remote_addr $protocol $request $status $body_bytes_sent $http_x_id $request_length"),
    )
    .unwrap();
    let srv = HttpSrv::start_proto(opts(&log), Proto::Fcgi, "127.0.0.1:0");
    let mut c = fcgi::Client::connect(srv.addr());
    let mut req = fcgi::begin(1, 1, true);
    req.extend(fcgi::params(
        1,
        "POST",
        "/echo",
        &[
            ("REMOTE_ADDR", "203.0.113.9"),
            ("REMOTE_PORT", "4000"),
            ("HTTP_X_ID", "r-1"),
            ("CONTENT_LENGTH", "5"),
        ],
        4096,
    ));
    req.extend(fcgi::stdin(1, b"hello", 65535));
    c.send(&req);
    let (out, _, _) = c.response(1);
    assert!(out.ends_with(b"hello"));
    drop(c);
    let done = srv.shutdown();
    done.recv_timeout(Duration::from_secs(5)).unwrap();
    // The shutdown wrote the line at once (well before the timer).
    let text = std::fs::read_to_string(&p).unwrap();
    let fields: Vec<&str> = text.trim_end().split(' ').collect();
    assert_eq!(
        fields[..7],
        [
            "203.0.113.9",
            "FastCGI",
            "POST",
            "/echo",
            "HTTP/1.1",
            "200",
            "5"
        ]
    );
    assert_eq!(fields[7], "r-1");
    assert!(fields[8].parse::<u64>().unwrap() > 5, "{text}");
    srv.inner.stop();
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_thousand_requests_take_a_few_writes() {
    let p = tmp("many");
    let log = AccessLog::file(&p, None).unwrap();
    let srv = HttpSrv::start(opts(&log));
    let mut c = Client::connect(srv.addr());
    for _ in 0..1000 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: a-user-agent/1.0\r\n\r\n");
        assert_eq!(c.read(false).status, 200);
    }
    drop(c);
    srv.shutdown().recv_timeout(Duration::from_secs(5)).unwrap();
    let s = log.stats();
    assert_eq!((s.lines, s.dropped), (1000, 0));
    // About 100 bytes a line, 60 KiB a write (and maybe a timer tick).
    assert!(s.writes <= 4, "{s:?}");
    assert_eq!(lines(&p, 1000).len(), 1000);
    srv.inner.stop();
    std::fs::remove_file(&p).unwrap();
}

/// Closes with a reset (SO_LINGER 0).
fn reset(c: Client) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the right size.
    let r = unsafe {
        libc::setsockopt(
            c.s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn rejected_and_abandoned_requests_are_logged() {
    let p = tmp("rej");
    let log = AccessLog::file(&p, Some("$status $request")).unwrap();
    let srv = HttpSrv::start(opts(&log));
    // A bad request: 400 from the connection itself.
    let mut c = Client::connect(srv.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n");
    assert_eq!(c.read(false).status, 400);
    // A client gone (reset) before its delayed response: nginx's 499. (One that only
    // half-closes still gets its response, and that is what is logged.)
    let mut c = Client::connect(srv.addr());
    c.send(b"GET /delay?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(50));
    reset(c);
    // A connection that sends half a head and leaves is no request.
    let mut c = Client::connect(srv.addr());
    c.send(b"GET / HT");
    std::thread::sleep(Duration::from_millis(50));
    drop(c);
    let l = lines(&p, 2);
    std::thread::sleep(Duration::from_millis(1100));
    let l2 = lines(&p, 3);
    assert_eq!(l, l2, "nothing more");
    assert_eq!(l, ["400 -", "499 GET /delay?ms=300 HTTP/1.1"]);
    srv.inner.stop();
    std::fs::remove_file(&p).unwrap();
}

/// Counts the access log's error reports.
struct Reports;
static REPORTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
impl log::Log for Reports {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let m = r.args().to_string();
        if r.level() == log::Level::Error && m.starts_with("access log /dev/full") {
            assert!(m.contains("No space left on device"), "{m}");
            REPORTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_full_disk_loses_lines_not_requests() {
    log::set_logger(&Reports).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let log = AccessLog::file("/dev/full", None).unwrap();
    let srv = HttpSrv::start(opts(&log));
    let mut c = Client::connect(srv.addr());
    for i in 0..200 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read(false).status, 200, "request {i}");
        if i == 100 {
            // A timer tick in the middle: a failed write, and later ones.
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    drop(c);
    srv.shutdown().recv_timeout(Duration::from_secs(5)).unwrap();
    let s = log.stats();
    assert_eq!((s.lines, s.dropped), (0, 200), "{s:?}");
    assert!(s.writes >= 2, "{s:?}");
    assert_eq!(
        REPORTS.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "reported once"
    );
    srv.inner.stop();
}

#[test]
fn callback_logs_get_every_line() {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    let log = AccessLog::callback(Some("$request_method $uri $status"), move |l| {
        g.lock()
            .unwrap()
            .push(String::from_utf8(l.to_vec()).unwrap())
    })
    .unwrap();
    let srv = HttpSrv::start(opts(&log));
    let r = common::http::get(srv.addr(), "/nope?x");
    assert_eq!(r.status, 404);
    let t = Instant::now();
    while got.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*got.lock().unwrap(), ["GET /nope 404"]);
    srv.inner.stop();
}
