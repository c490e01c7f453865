//! Regression tests for what fuzzing found (fuzz/, FUZZING.md), end to end through a
//! server on loopback. The parser-level cases are also unit tests in core/src/http.

mod common;

use std::io::Write;
use std::time::Duration;

use common::http::{get, Client, HttpSrv};
use myriad::ServerOptions;

fn srv() -> HttpSrv {
    HttpSrv::start(ServerOptions {
        max_body: 1024,
        ..Default::default()
    })
}

/// fuzz/http_head: a target not in origin form with a multi-byte character across its
/// 7th byte panicked in the scheme check (`&str` sliced inside a character), which took
/// the whole loop down. Now a 400, and the server keeps serving.
#[test]
fn non_ascii_target_is_400_not_a_crash() {
    let s = srv();
    for req in [
        &b";J ^!zzz!\xdd\x85z HTTP/1.0\r\n\r\n"[..],
        "GET \u{e9}\u{e9}\u{e9}\u{e9} HTTP/1.1\r\nHost: t\r\n\r\n".as_bytes(),
        "GET htt\u{e9}://x/ HTTP/1.1\r\nHost: t\r\n\r\n".as_bytes(),
    ] {
        let mut c = Client::connect(s.addr());
        c.send(req);
        let r = c.read(false);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(req));
        assert!(c.closed());
    }
    assert_eq!(get(s.addr(), "/").status, 200, "still serving");
}

/// fuzz/http_head: a request line over max_line whose target is under it was accepted
/// when it arrived in one read and 414 when cut before its end. Now 414 either way.
#[test]
fn long_request_line_is_414_whole_and_cut() {
    let s = srv();
    let line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(8185));
    let mut c = Client::connect(s.addr());
    c.send(line.as_bytes());
    assert_eq!(c.read(false).status, 414, "whole");
    let mut c = Client::connect(s.addr());
    c.send(&line.as_bytes()[..8195]);
    std::thread::sleep(Duration::from_millis(50));
    let _ = c.s.write_all(&line.as_bytes()[8195..]);
    assert_eq!(c.read(false).status, 414, "cut");
}

/// fuzz/http_conn: the 400 for a bad chunked body (and the 413 for a body over the
/// limit) after a HEAD request carried a body, which a HEAD response never has (fixed on
/// main by the correctness work of issue 25 as well).
#[test]
fn rejection_of_a_head_request_has_no_body() {
    let s = srv();
    for req in [
        &b"HEAD / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
        b"HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
    ] {
        let mut c = Client::connect(s.addr());
        c.send(req);
        let r = c.read(true);
        assert!(r.status == 400 || r.status == 413, "{}", r.status);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed(), "no body after the head, then the close");
    }
    // Nor does the 400 of a HEAD head that did not parse (it starts with "HEAD ").
    let mut c = Client::connect(s.addr());
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(c.read(true).status, 400);
    assert!(c.closed());
}

/// fuzz/http_conn: a bad request pipelined behind a good one in the same read reset the
/// connection (the previous response's "head sent" flag was still set, so the rejection
/// took the mid-response path), and the good request's queued response was lost with it.
/// Now the 200, then the 400 and the close.
#[test]
fn bad_request_behind_a_good_one_is_answered() {
    let s = srv();
    for bad in [&b"\0"[..], b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"] {
        let mut c = Client::connect(s.addr());
        let mut req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        req.extend_from_slice(bad);
        c.send(&req);
        assert_eq!(c.read(false).status, 200);
        let r = c.read(false);
        assert_eq!((r.status, r.header("connection")), (400, Some("close")));
        assert!(c.closed());
    }
}

/// fuzz/http_conn: a chunked body with more than eight chunks in one read lost every
/// chunk past the eighth (the request saw a shorter body, silently).
#[test]
fn many_chunks_in_one_read_all_arrive() {
    let s = srv();
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut want = Vec::new();
    for i in 0..40u8 {
        req.extend_from_slice(b"1\r\n");
        req.push(b'a' + i % 26);
        req.extend_from_slice(b"\r\n");
        want.push(b'a' + i % 26);
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut c = Client::connect(s.addr());
    c.send(&req);
    let r = c.read(false);
    assert_eq!((r.status, r.body), (200, want));
}
