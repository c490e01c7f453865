//! HTTP/1.1 over loopback against a Rust server with the demo's routes: keep-alive rules,
//! pipelining, bodies, async completion, timeouts, graceful shutdown, strictness on the
//! wire, and the syscall cost of a request.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::{get, Client, HttpSrv};
use myriad::ServerOptions;

fn srv() -> HttpSrv {
    HttpSrv::start(ServerOptions {
        max_body: 64 << 20,
        ..Default::default()
    })
}

#[test]
fn routes_and_response_framing() {
    let s = srv();
    let r = get(s.addr(), "/");
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert!(r
        .header("date")
        .is_some_and(|d| d.ends_with(" GMT") && d.len() == 29));
    assert_eq!(get(s.addr(), "/nope").status, 404);
    let r = get(s.addr(), "/delay?ms=20");
    assert_eq!(r.body, b"delayed 20");
    let r = get(s.addr(), "/work?ms=20");
    assert_eq!(r.body, b"worked 20", "completion from another thread");
    let r = get(s.addr(), "/drop");
    assert_eq!(r.status, 500, "dropped completion answers 500");
    let r = get(s.addr(), "/stream?chunks=5&bytes=3");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"aaabbbcccdddeee");

    // HEAD, 204 and 304 carry no body; HEAD keeps Content-Length.
    let mut c = Client::connect(s.addr());
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("13")));
    for code in [204, 304] {
        c.send(format!("GET /status?code={code} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read(false);
        assert_eq!(r.status, code);
        assert!(r.header("content-length").is_none());
    }
    // Still in sync: nothing stray was sent after the bodiless responses.
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read(false).body, b"Hello, World!");

    // CGI variables from the request.
    let r = get(s.addr(), "/env?a=1");
    let env = String::from_utf8(r.body).unwrap();
    for want in [
        "REQUEST_METHOD=GET",
        "QUERY_STRING=a=1",
        "REQUEST_URI=/env?a=1",
        "HTTP_HOST=t",
        "SERVER_PROTOCOL=HTTP/1.1",
        "REMOTE_ADDR=127.0.0.1",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in\n{env}");
    }
    let names: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
}

#[test]
fn keep_alive_rules() {
    let s = srv();
    // HTTP/1.1: persistent by default.
    let mut c = Client::connect(s.addr());
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read(false);
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_none());
    }
    // Connection: close is honoured.
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("close"));
    assert!(c.closed());
    // HTTP/1.0 closes unless it asks for keep-alive, and then the response says so.
    let mut c = Client::connect(s.addr());
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read(false);
    assert!(r.status == 200 && r.header("connection") == Some("close"));
    assert!(c.closed());
    let mut c = Client::connect(s.addr());
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read(false).status, 200);
    // A streamed response to 1.0 is close-delimited.
    c.send(b"GET /stream?chunks=3&bytes=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read(false);
    assert_eq!(
        (r.header("connection"), &r.body[..]),
        (Some("close"), &b"aabbcc"[..])
    );

    // With curl: two URLs reuse one connection.
    let url = format!("http://{}/", s.addr());
    let out = std::process::Command::new("curl")
        .args(["-sv", &url, &url])
        .output()
        .expect("curl is installed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, World!Hello, World!"
    );
    assert!(
        err.contains("Re-using existing connection") || err.contains("left intact"),
        "{err}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    // 1,000 pipelined requests in one write; a slow one early holds the rest in order.
    let mut all = Vec::new();
    for i in 0..1000 {
        if i == 3 {
            all.extend_from_slice(b"GET /delay?ms=30 HTTP/1.1\r\nHost: t\r\n\r\n");
        } else if i % 2 == 0 {
            all.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        } else {
            all.extend_from_slice(
                format!(
                    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\nbody {i}",
                    format!("body {i}").len()
                )
                .as_bytes(),
            );
        }
    }
    c.send(&all);
    for i in 0..1000 {
        let r = c.read(false);
        let want: Vec<u8> = if i == 3 {
            b"delayed 30".to_vec()
        } else if i % 2 == 0 {
            b"Hello, World!".to_vec()
        } else {
            format!("body {i}").into_bytes()
        };
        assert_eq!(r.body, want, "response {i}");
    }
    // Another connection is served while one waits on a slow response.
    let mut slow = Client::connect(s.addr());
    slow.send(b"GET /delay?ms=300 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let t = Instant::now();
    assert_eq!(get(s.addr(), "/").status, 200);
    assert!(t.elapsed() < Duration::from_millis(250));
    assert_eq!(slow.read(false).body, b"delayed 300");
    assert_eq!(slow.read(false).body, b"Hello, World!");
}

#[test]
fn chunked_upload_of_10_mb_streams_to_the_handler() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let total = 10 * 1024 * 1024;
    let mut sum = 0u64;
    let mut sent = 0;
    let mut i = 0u64;
    let mut w = c.s.try_clone().unwrap();
    let mut frame = Vec::new();
    while sent < total {
        let n = (1 + (i * 7919) % 65536) as usize;
        let n = n.min(total - sent);
        let data: Vec<u8> = (0..n).map(|j| (j as u64 ^ i) as u8).collect();
        sum = data
            .iter()
            .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
        frame.clear();
        frame.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes());
        frame.extend_from_slice(&data);
        frame.extend_from_slice(b"\r\n");
        w.write_all(&frame).unwrap();
        sent += n;
        i += 1;
    }
    w.write_all(b"0\r\nX-Trailer: yes\r\n\r\n").unwrap();
    let r = c.read(false);
    assert_eq!(String::from_utf8(r.body).unwrap(), format!("{total} {sum}"));
    // And the 100-continue handshake: the handler wants the body.
    let mut c = Client::connect(s.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 100);
    c.send(b"hello");
    assert_eq!(c.read(false).body, b"hello");
    // ...and when it does not: no 100, an answer, and the connection closes.
    c.send(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn body_limit_gives_413() {
    let s = HttpSrv::start(ServerOptions {
        max_body: 1000,
        ..Default::default()
    });
    let mut c = Client::connect(s.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n");
    assert_eq!(c.read(false).status, 413);
    assert!(c.closed());
    let mut c = Client::connect(s.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(format!("3e8\r\n{}\r\n10\r\n", "x".repeat(1000)).as_bytes());
    c.send(b"0123456789abcdef\r\n0\r\n\r\n");
    assert_eq!(c.read(false).status, 413);
}

#[test]
fn smuggling_attempts_get_400_and_close() {
    let s = srv();
    let cases: &[(&[u8], u16)] = &[
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
        (b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", 501),
    ];
    for (req, want) in cases {
        let mut c = Client::connect(s.addr());
        c.send(req);
        // Anything smuggled behind must not be answered.
        c.send(b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read(false);
        assert_eq!(r.status, *want, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed(), "closed after {want}");
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let mut c = Client::connect(s.addr());
    c.send(long.as_bytes());
    assert_eq!(c.read(false).status, 414);
    let mut c = Client::connect(s.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    for _ in 0..70 {
        c.send(format!("X-Pad: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    assert_eq!(c.read(false).status, 431);
}

/// Bytes that reach the server between its last read and its close (a request pipelined
/// behind a rejected one) would turn the close into a reset that can destroy the error
/// response. So a closing connection shuts down its write side and drains the peer's input
/// until the peer's EOF, instead of closing while the peer may still be sending.
#[test]
fn error_close_lingers_until_the_client_is_done_sending() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(c.read(false).status, 400);
    assert!(c.closed(), "EOF: the server shut down its side");
    // Still draining what we send: late input is read and discarded, not reset.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        s.inner.on_loop(|lp| lp.connection_count()),
        1,
        "closed without lingering"
    );
    c.send(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.inner.on_loop(|lp| lp.connection_count()), 1);
    // Our EOF ends the linger at once.
    drop(c);
    s.inner.wait_for(5, "lingering connection closed", |lp| {
        lp.connection_count() == 0
    });
}

#[test]
fn slow_reader_gets_a_streamed_response_in_bounded_memory() {
    slow_reader("/stream?chunks=512&bytes=16384");
}

#[test]
fn on_drain_paces_a_streamed_response() {
    slow_reader("/drained?chunks=512&bytes=16384");
}

fn slow_reader(target: &str) {
    let s = srv();
    let mut c = Client::connect(s.addr());
    // 8 MiB produced as fast as allowed; the client reads at most 4 KiB per 2 ms (2 MB/s:
    // slower than the server even on a loaded machine, where 8 KiB per ms was not always).
    c.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let mut got = 0usize;
    let mut peak = 0u64;
    let mut buf = vec![0u8; 4 * 1024];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let n = c.s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
        std::thread::sleep(Duration::from_millis(2));
        if got % (64 * 1024) < n {
            peak = peak.max(s.stats().buffers_in_use);
        }
        if buf[..n].ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    assert!(got > 8 * 1024 * 1024, "got {got} bytes");
    // 256 KiB of pacing + socket-full slack, in 16 KiB pool blocks.
    println!("peak pool blocks held: {peak}");
    assert!(
        peak > 4,
        "the reader was not slow enough to make the server queue"
    );
    assert!(
        peak <= 40,
        "server held {peak} pool blocks for one slow reader"
    );
}

trait RecvHint {
    fn set_recv_buffer_size_hint(&self);
}
impl RecvHint for TcpStream {
    fn set_recv_buffer_size_hint(&self) {
        let v: libc::c_int = 16 * 1024;
        // SAFETY: setsockopt with a valid int on a socket we own.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(self),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&v as *const libc::c_int).cast(),
                4,
            )
        };
    }
}

#[test]
fn timeouts_header_body_idle_write() {
    let ms = Duration::from_millis;
    let s = HttpSrv::start(ServerOptions {
        header_timeout: ms(300),
        body_timeout: ms(300),
        idle_timeout: ms(300),
        write_timeout: ms(300),
        ..Default::default()
    });
    // Slowloris: a head trickled byte by byte is cut at the header deadline even though
    // bytes keep coming.
    let mut c = Client::connect(s.addr());
    let t = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    let mut w = c.s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in head
            .iter()
            .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
        {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let r = c.read(false);
    assert_eq!(r.status, 408);
    let el = t.elapsed();
    assert!(el >= ms(300) && el < ms(900), "header timeout after {el:?}");
    trickle.join().unwrap();

    // Body timeout: a body that stops arriving.
    let mut c = Client::connect(s.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    let t = Instant::now();
    assert_eq!(c.read(false).status, 408);
    assert!(t.elapsed() >= ms(300));

    // Idle keep-alive: closed after the idle timeout.
    let mut c = Client::connect(s.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read(false).status, 200);
    let t = Instant::now();
    assert!(c.closed());
    assert!(t.elapsed() >= ms(290), "idle close after {:?}", t.elapsed());

    // A connection that never sends anything is closed at the header deadline.
    let mut c = Client::connect(s.addr());
    let t = Instant::now();
    assert!(c.closed());
    assert!(t.elapsed() >= ms(290));

    // Write timeout: a client that stops reading a large response is cut off.
    let mut c = Client::connect(s.addr());
    c.s.set_recv_buffer_size_hint();
    c.send(b"GET /stream?chunks=100000&bytes=16384 HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(ms(1200));
    s.inner.wait_for(5, "stalled connection aborted", |lp| {
        lp.connection_count() == 0
    });
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let s = srv();
    // Idle between requests: one request answered, the connection kept.
    let mut idle = Client::connect(s.addr());
    idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read(false).status, 200);
    let mut busy = Client::connect(s.addr());
    busy.send(b"GET /delay?ms=200 HTTP/1.1\r\nHost: t\r\n\r\n");
    // Accepted, its first request not sent yet (it may be on the way).
    let mut fresh = Client::connect(s.addr());
    s.inner
        .wait_for(5, "all connected", |lp| lp.connection_count() == 3);
    std::thread::sleep(Duration::from_millis(20));
    let done = s.shutdown();
    // The idle connection is closed at once; new connections are refused.
    let t = Instant::now();
    assert!(idle.closed());
    assert!(t.elapsed() < Duration::from_millis(150));
    assert!(TcpStream::connect(s.addr()).is_err(), "listener closed");
    // The fresh one is answered (nginx's way: only connections between requests are idle),
    // and closed after its response.
    fresh.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = fresh.read(false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(fresh.closed());
    // The in-flight request completes, told that the connection closes.
    let r = busy.read(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"delayed 200"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    done.recv_timeout(Duration::from_secs(5))
        .expect("shutdown completed");
}

#[test]
fn shutdown_drains_only_its_own_servers_connections() {
    // Two servers on one loop: shutting down the first leaves the second's connection open
    // and serving.
    let second = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s2 = second.clone();
    let s = srv();
    let other_port = s.inner.on_loop(move |lp| {
        let l = myriad::Listener::bind(
            &"127.0.0.1:0".parse().unwrap(),
            &myriad::ListenOptions::default(),
        )
        .unwrap();
        let port = match l.addr() {
            myriad::Addr::Tcp(a) => a.port(),
            a => panic!("not tcp: {a}"),
        };
        let srv = lp.server(ServerOptions::default(), common::http::routes);
        srv.listen(lp, l, myriad::Proto::Http);
        *s2.lock().unwrap() = Some(common::http::SendServer(srv));
        port
    });
    let other = std::net::SocketAddr::from(([127, 0, 0, 1], other_port));
    // Idle between requests (a connection whose first request has not come yet is not idle:
    // a graceful shutdown waits for that request).
    let mut mine = Client::connect(s.addr());
    mine.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(mine.read(false).status, 200);
    let mut theirs = Client::connect(other);
    theirs.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(theirs.read(false).status, 200);
    s.inner
        .wait_for(5, "both connected", |lp| lp.connection_count() == 2);
    let done = s.shutdown();
    assert!(
        mine.closed(),
        "the first server's idle connection is closed"
    );
    done.recv_timeout(Duration::from_secs(5))
        .expect("shutdown completed");
    theirs.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = theirs.read(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    assert!(r.header("connection").is_none(), "still keep-alive");
    let count = s.inner.on_loop(move |_| {
        let srv = second.lock().unwrap();
        srv.as_ref().unwrap().0.connection_count()
    });
    assert_eq!(count, 1);
}

#[test]
fn a_wildcard_listener_reports_the_address_each_connection_reached() {
    let s = HttpSrv::start_proto(ServerOptions::default(), myriad::Proto::Http, "0.0.0.0:0");
    let port = s.addr().port();
    // 127.0.0.2 is another local address on the loopback interface.
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"] {
        let mut c = Client::connect(format!("{ip}:{port}").parse().unwrap());
        for _ in 0..2 {
            c.send(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n");
            let env = String::from_utf8(c.read(false).body).unwrap();
            for want in [format!("SERVER_ADDR={ip}"), format!("SERVER_PORT={port}")] {
                assert!(env.lines().any(|l| l == want), "{want} missing in\n{env}");
            }
        }
    }
}

#[test]
fn a_request_that_asks_to_close_is_closed_without_lingering() {
    // `Connection: close` (or HTTP/1.0 without keep-alive), read whole: the client sends
    // nothing more, so no shutdown and drain first (nginx's lingering_close on). The
    // clients stay open: the server must not wait for their EOF.
    let s = srv();
    let before = s.stats();
    let asks: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    ];
    let clients: Vec<Client> = (0..21)
        .map(|i| {
            let mut c = Client::connect(s.addr());
            c.send(asks[i % 3]);
            let r = c.read(false);
            assert_eq!(r.status, 200);
            assert!(r.body == b"Hello, World!" || r.body == b"hello");
            assert!(c.closed(), "closed after the response");
            c
        })
        .collect();
    s.inner.assert_closed_without_lingering(before, clients, 0);

    // A large response to a slow reader: the close waits until all of it is written.
    let mut c = Client::connect(s.addr());
    c.send(b"GET /stream?chunks=40&bytes=65536 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let r = c.read(false);
    assert_eq!(r.body.len(), 40 * 65536);
    assert!(c.closed(), "EOF after the whole body");

    // Bytes behind a request that asked to close (a client breaking the rule): answered
    // once, then the close lingers, draining them, so that it ends with a FIN, not a reset.
    for extra in [
        &b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        &[b'x'; 100_000][..],
    ] {
        let before = s.stats();
        let mut c = Client::connect(s.addr());
        let mut w = asks[0].to_vec();
        w.extend_from_slice(extra);
        c.send(&w);
        assert_eq!(c.read(false).body, b"Hello, World!");
        assert!(c.closed(), "one answer, then EOF (a reset fails the read)");
        drop(c);
        s.inner.assert_lingered(before, 0);
    }
}

#[test]
fn a_keep_alive_request_costs_one_read_one_write_no_ctl() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    c.read(false);
    let before = s.stats();
    for _ in 0..100 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read(false).status, 200);
    }
    let after = s.stats();
    let reads = after.read + after.received - before.read - before.received;
    assert_eq!(reads, 100, "{before:?} -> {after:?}");
    assert_eq!(after.write - before.write, 100);
    assert_eq!(after.ctl, before.ctl);
    assert_eq!(after.other, before.other);

    // A pipelined batch of 16 in one segment: one read, one write.
    let batch: Vec<u8> = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(16);
    let before = s.stats();
    c.send(&batch);
    for _ in 0..16 {
        assert_eq!(c.read(false).body, b"Hello, World!");
    }
    let after = s.stats();
    assert_eq!(
        (
            after.read + after.received - before.read - before.received,
            after.write - before.write
        ),
        (1, 1),
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after.buffers_in_use, 0,
        "idle keep-alive connection holds no buffers"
    );
}

/// Sends `req` on a fresh connection and reads everything until the server closes.
fn exchange_until_close(s: &HttpSrv, req: &[u8]) -> String {
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(req).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("the server closes");
    String::from_utf8(got).unwrap()
}

#[test]
fn an_abandoned_response_is_cut_short_never_completed() {
    let s = srv();
    // Nothing flushed: nothing at all, and the request behind it is not answered.
    let got = exchange_until_close(
        &s,
        b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(got, "", "an abort before the head sends nothing");
    let got = exchange_until_close(&s, b"GET /workcut HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(got, "", "nor does one from another thread");
    // Flushed pieces go out, chunked, without the last chunk; at once or later.
    // (Dropping the response unfinished after its head cuts it short too.)
    for target in [
        "/cut?flushed=2",
        "/cut?flushed=2&ms=30",
        "/dropmid",
        "/workcut?flushed=1",
    ] {
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let got = exchange_until_close(&s, req.as_bytes());
        let (head, body) = got.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 "), "{target}: {head}");
        assert!(
            head.contains("Transfer-Encoding: chunked"),
            "{target}: {head}"
        );
        assert!(!head.contains("Content-Length"), "{target}: {head}");
        // Whole chunks, and no last (zero-size) one.
        let (mut rest, mut data) = (body, String::new());
        while !rest.is_empty() {
            let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
            let n = usize::from_str_radix(size, 16).unwrap();
            assert!(
                n > 0,
                "{target}: the body ends with its last chunk: {body:?}"
            );
            data.push_str(&after[..n]);
            assert_eq!(&after[n..n + 2], "\r\n", "{target}");
            rest = &after[n + 2..];
        }
        assert_eq!(data, "piece 0\npiece 1\n", "{target}");
    }
    // The server goes on.
    assert_eq!(get(s.addr(), "/").body, b"Hello, World!");
    s.inner
        .wait_for(5, "closed", |lp| lp.connection_count() == 0);
}
