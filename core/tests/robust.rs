//! Issue 25's regressions over real sockets, against the demo's routes: a panicking handler
//! or a target that used to panic the parser ends only its own connection, chunked bodies
//! of many small chunks arrive whole and in order, invalid Host values get 400.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::http::{get, Client, HttpSrv};
use myriad::ServerOptions;

fn srv() -> HttpSrv {
    HttpSrv::start(ServerOptions {
        max_body: 64 << 20,
        ..Default::default()
    })
}

/// Sends `req` on a fresh connection and reads until the server closes it.
fn exchange(s: &HttpSrv, req: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(req).unwrap();
    let mut got = Vec::new();
    // A reset after the bytes (a panicked connection) also ends the read.
    let _ = c.read_to_end(&mut got);
    got
}

#[test]
fn a_panicking_handler_closes_only_its_own_connection() {
    let s = srv();
    // A keep-alive connection, opened before and used after the panic.
    let mut keep = Client::connect(s.addr());
    keep.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(keep.read(false).status, 200);
    for _ in 0..3 {
        let got = exchange(&s, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    keep.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = keep.read(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    assert_eq!(get(s.addr(), "/").status, 200);
    // Only `keep` is left: the panicked connections are gone, their exchanges freed.
    s.inner
        .wait_for(5, "the panicked connections closed", |lp| {
            lp.connection_count() == 1
        });
    drop(keep);
    s.inner.wait_for(5, "every connection closed", |lp| {
        lp.connection_count() == 0
    });
}

#[test]
fn a_multibyte_character_in_a_target_is_a_400_not_a_panic() {
    let s = srv();
    for req in [
        &b"GET aaaaaa\xc3\xa9 HTTP/1.0\r\n\r\n"[..],
        b"GET aaaaaaa\xc3\xa9 HTTP/1.0\r\n\r\n",
        b"GET \xe2\x82\xac\xe2\x82\xac\xe2\x82\xac HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let got = exchange(&s, req);
        assert!(
            got.starts_with(b"HTTP/1.1 400 "),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(get(s.addr(), "/").status, 200, "still serving");
}

/// 20,000 one-byte chunks (and a last one), written as one stream.
fn tiny_chunks(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut body = Vec::new();
    for i in 0..n {
        let c = b'a' + (i % 26) as u8;
        wire.extend_from_slice(b"1\r\n");
        wire.push(c);
        wire.extend_from_slice(b"\r\n");
        body.push(c);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    (wire, body)
}

#[test]
fn twenty_thousand_one_byte_chunks_arrive_whole_and_in_order() {
    let s = srv();
    let (wire, body) = tiny_chunks(20_000);
    for path in ["/echo", "/count"] {
        let mut c = Client::connect(s.addr());
        let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(&[head.as_bytes(), &wire].concat());
        let r = c.read(false);
        assert_eq!(r.status, 200, "{path}");
        if path == "/echo" {
            assert_eq!(r.body.len(), body.len());
            assert!(r.body == body, "{path}: the echo differs");
        } else {
            let sum = body
                .iter()
                .fold(0u64, |s, &c| s.wrapping_mul(31).wrapping_add(c as u64));
            assert_eq!(String::from_utf8(r.body).unwrap(), format!("20000 {sum}"));
        }
    }
}

#[test]
fn an_invalid_host_is_a_400() {
    let s = srv();
    for host in [
        &b"a b"[..],
        b"u@h",
        b"h/x",
        b"h?x",
        b"h#x",
        b"h\\x",
        b"h\x01",
        b"h:8o",
        b"[::1",
    ] {
        let req = [&b"GET / HTTP/1.1\r\nHost: "[..], host, b"\r\n\r\n"].concat();
        let got = exchange(&s, &req);
        assert!(
            got.starts_with(b"HTTP/1.1 400 "),
            "Host {:?}: {:?}",
            String::from_utf8_lossy(host),
            String::from_utf8_lossy(&got)
        );
    }
    for host in ["h", "127.0.0.1:8080", "[::1]:80", "example.com:"] {
        let mut c = Client::connect(s.addr());
        c.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(c.read(false).status, 200, "{host}");
    }
}

#[test]
fn a_response_that_does_not_come_is_a_504_and_one_that_stalls_is_cut() {
    let s = HttpSrv::start(ServerOptions {
        response_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let t0 = std::time::Instant::now();
    let got = exchange(&s, b"GET /delay?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        got.starts_with(b"HTTP/1.1 504 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    // Started, then nothing: the chunked body ends without its last chunk.
    let got = exchange(&s, b"GET /stall?flushed=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.contains("first piece"),
        "{text}"
    );
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
    // In time: answered; a slow response whose pieces keep coming is not cut.
    assert_eq!(get(s.addr(), "/delay?ms=100").status, 200);
    // 8 pieces 150 ms apart: 1.05 s in all, more than the timeout, each piece within it.
    let r = get(s.addr(), "/pace?chunks=8&ms=150");
    assert_eq!((r.status, r.body.len()), (200, 8 * 8));
    s.inner.wait_for(5, "every connection closed", |lp| {
        lp.connection_count() == 0
    });
}

#[test]
fn a_half_closed_client_reads_its_431_without_a_reset() {
    let s = srv();
    let mut head = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    while head.len() < 70_000 {
        head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    head.extend_from_slice(b"\r\n");
    for i in 0..20 {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&head).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let r = c.read_to_end(&mut got);
        assert!(r.is_ok(), "try {i}: {r:?} after {} bytes", got.len());
        assert!(
            got.starts_with(b"HTTP/1.1 431 "),
            "try {i}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn a_slow_upload_after_a_413_still_reads_its_answer() {
    let s = HttpSrv::start(ServerOptions {
        max_body: 1 << 20,
        ..Default::default()
    });
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    // The upload goes on for 2.5 s, 1 KB every 100 ms, as a client that does not read
    // until it has sent everything: the server lingers, reading and dropping it.
    let piece = [b'x'; 1024];
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        c.write_all(&piece)
            .expect("the server still reads the upload");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut got = [0u8; 256];
    let n = c.read(&mut got).expect("the answer, not a reset");
    assert!(
        got[..n].starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&got[..n])
    );
    // Then, with nothing more sent (and our side still open), the server closes after the
    // lingering timeout (5 s) from the last piece it read.
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("the rest of the answer, then the server's EOF");
    let quiet = std::time::Instant::now();
    s.inner
        .wait_for(10, "the lingering close", |lp| lp.connection_count() == 0);
    let waited = quiet.elapsed();
    assert!(
        waited > Duration::from_secs(4) && waited < Duration::from_secs(7),
        "closed after {waited:?}"
    );
    drop(c);
}

#[test]
fn error_answers_to_head_have_no_body() {
    let s = HttpSrv::start(ServerOptions {
        max_body: 1000,
        ..Default::default()
    });
    for (req, status) in [
        (&b"HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n"[..], "400"),
        (b"\r\nHEAD /x HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", "400"),
        (
            b"HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
            "413",
        ),
        (
            b"HEAD / HTTP/1.1\r\nHost: t\r\nExpect: magic\r\n\r\n",
            "417",
        ),
    ] {
        let got = exchange(&s, req);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(
            text.ends_with("\r\n\r\n"),
            "a body after the head: {text:?}"
        );
    }
    // The same errors to GET do have one; and a HEAD after a GET on the same connection
    // is still a HEAD (and a GET after a HEAD a GET).
    let got = exchange(&s, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert!(String::from_utf8_lossy(&got).ends_with("Bad Request\n"));
    let got = exchange(
        &s,
        b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&got).ends_with("Bad Request\n"));
}
