//! FastCGI with a test client: multiplexing, management records, abort, large bodies in
//! tiny and maximal records, KEEP_CONN, roles, the params cap, and the cost of a request.

mod common;

use std::time::{Duration, Instant};

use common::fcgi::{self as f, parse_cgi, Client};
use common::http::HttpSrv;
use myriad::{Proto, ServerOptions};

fn srv() -> HttpSrv {
    HttpSrv::start_proto(
        ServerOptions {
            max_body: 64 << 20,
            ..Default::default()
        },
        Proto::Fcgi,
        "127.0.0.1:0",
    )
}

#[test]
fn the_demo_routes_over_fastcgi() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "GET", "/", b"", true));
    let (out, _, st) = c.response(1);
    assert_eq!(st, 0, "REQUEST_COMPLETE");
    let (status, head, body) = parse_cgi(&out);
    assert_eq!((status, &body[..]), (200, &b"Hello, World!"[..]));
    assert!(head.contains("Content-Type: text/plain\r\n"), "{head}");
    assert!(head.contains("Content-Length: 13\r\n"), "{head}");

    c.send(&f::request(2, "POST", "/echo", b"echo me", true));
    let (out, _, _) = c.response(2);
    assert_eq!(parse_cgi(&out).2, b"echo me");

    c.send(&f::request(3, "GET", "/env?x=1", b"", true));
    let env = String::from_utf8(parse_cgi(&c.response(3).0).2).unwrap();
    for want in [
        "REQUEST_METHOD=GET",
        "QUERY_STRING=x=1",
        "REMOTE_ADDR=10.1.2.3",
        "HTTP_HOST=example.test",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} in\n{env}");
    }

    c.send(&f::request(4, "GET", "/nope", b"", true));
    assert_eq!(parse_cgi(&c.response(4).0).0, 404);
    c.send(&f::request(5, "GET", "/work?ms=10", b"", true));
    assert_eq!(parse_cgi(&c.response(5).0).2, b"worked 10");
    // HEAD: headers (with the length) and no body.
    c.send(&f::request(6, "HEAD", "/", b"", true));
    let (status, head, body) = parse_cgi(&c.response(6).0);
    assert!(status == 200 && body.is_empty() && head.contains("Content-Length: 13"));
}

#[test]
fn eight_interleaved_requests_complete_out_of_order() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    // 100 ms apart: a loaded machine may run the loop late, and responses finished in the
    // same iteration go out in the order the requests began.
    let delays = [400u64, 0, 200, 0, 300, 0, 100, 0];
    // All BEGINs, then PARAMS interleaved record by record, then the STDINs.
    let mut wire = Vec::new();
    let ids: Vec<u16> = (0..8).map(|i| 100 + i * 37).collect(); // not 1..8
    for &id in &ids {
        wire.extend(f::begin(id, 1, true));
    }
    let ps: Vec<Vec<u8>> = ids
        .iter()
        .zip(delays)
        .map(|(&id, d)| f::params(id, "GET", &format!("/delay?ms={d}"), &[], 16))
        .collect();
    // Interleave at record granularity: every PARAMS record is 8 + 16 + pad bytes.
    let mut cursors = [0usize; 8];
    while cursors.iter().zip(&ps).any(|(c, p)| *c < p.len()) {
        for k in 0..8 {
            if cursors[k] < ps[k].len() {
                let p = &ps[k][cursors[k]..];
                let len = u16::from_be_bytes([p[4], p[5]]) as usize + 8 + p[6] as usize;
                wire.extend_from_slice(&p[..len]);
                cursors[k] += len;
            }
        }
    }
    for &id in &ids {
        wire.extend(f::stdin(id, b"", 1));
    }
    c.send(&wire);
    let mut done_order = Vec::new();
    let mut bodies = std::collections::HashMap::new();
    while done_order.len() < 8 {
        let r = c.next().expect("record");
        match r.kind {
            f::STDOUT => bodies
                .entry(r.id)
                .or_insert_with(Vec::new)
                .extend(r.content),
            f::END => done_order.push(r.id),
            k => panic!("unexpected {k}"),
        }
    }
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(
            parse_cgi(&bodies[&id]).2,
            format!("delayed {}", delays[k]).into_bytes()
        );
    }
    // Fast ones first; slow ones in order of their delay.
    let pos = |id: u16| done_order.iter().position(|&x| x == id).unwrap();
    assert!(
        pos(ids[1]) < pos(ids[6])
            && pos(ids[6]) < pos(ids[2])
            && pos(ids[2]) < pos(ids[4])
            && pos(ids[4]) < pos(ids[0]),
        "{done_order:?}"
    );
}

#[test]
fn get_values_mid_request_and_unknown_type() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    let mut wire = f::begin(7, 1, true);
    wire.extend(f::params(7, "GET", "/delay?ms=100", &[], 4096));
    wire.extend(f::stdin(7, b"", 1));
    let mut q = Vec::new();
    f::pair(&mut q, b"FCGI_MPXS_CONNS", b"");
    f::pair(&mut q, b"NOT_A_VARIABLE", b"");
    f::pair(&mut q, b"FCGI_MAX_REQS", b"");
    wire.extend(f::record(f::GET_VALUES, 0, &q, 5));
    wire.extend(f::record(77, 0, b"x", 7));
    c.send(&wire);
    let r = c.next().unwrap();
    assert_eq!((r.kind, r.id), (f::GET_VALUES_RESULT, 0));
    let text = String::from_utf8_lossy(&r.content).to_string();
    assert!(text.contains("FCGI_MPXS_CONNS") && text.contains("FCGI_MAX_REQS"));
    assert!(!text.contains("NOT_A_VARIABLE"), "only the names it knows");
    assert_eq!(r.content[..2], [15, 1], "FCGI_MPXS_CONNS=1");
    let r = c.next().unwrap();
    assert_eq!((r.kind, r.content[0]), (f::UNKNOWN_TYPE, 77));
    assert_eq!(
        parse_cgi(&c.response(7).0).2,
        b"delayed 100",
        "the active request goes on"
    );
}

#[test]
fn abort_ends_one_request_promptly_and_others_go_on() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    let mut wire = f::request(1, "GET", "/delay?ms=5000", b"", true);
    wire.extend(f::request(2, "GET", "/delay?ms=100", b"", true));
    c.send(&wire);
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    c.send(&f::record(f::ABORT, 1, b"", 0));
    let r = c.next().unwrap();
    assert_eq!((r.kind, r.id), (f::END, 1));
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(parse_cgi(&c.response(2).0).2, b"delayed 100");
    // Records for the aborted (inactive) id are ignored.
    c.send(&f::stdin(1, b"late", 4));
    c.send(&f::request(3, "GET", "/", b"", true));
    assert_eq!(parse_cgi(&c.response(3).0).2, b"Hello, World!");
}

#[test]
fn one_mib_body_in_1_byte_and_65535_byte_records() {
    let s = srv();
    let body: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let sum = body
        .iter()
        .fold(0u64, |s, &c| s.wrapping_mul(31).wrapping_add(c as u64));
    for rec in [1usize, 65535] {
        let mut c = Client::connect(s.addr());
        let mut wire = f::begin(9, 1, true);
        wire.extend(f::params(
            9,
            "POST",
            "/count",
            &[("CONTENT_LENGTH", "1048576")],
            1,
        ));
        wire.extend(f::stdin(9, &body, rec));
        let mut w = c.s.try_clone().unwrap();
        let t = std::thread::spawn(move || std::io::Write::write_all(&mut w, &wire).unwrap());
        let (out, _, _) = c.response(9);
        t.join().unwrap();
        assert_eq!(
            String::from_utf8(parse_cgi(&out).2).unwrap(),
            format!("1048576 {sum}"),
            "records of {rec}"
        );
    }
}

#[test]
fn keep_conn_roles_and_params_cap() {
    let s = HttpSrv::start_proto(
        ServerOptions {
            max_params: 4096,
            ..Default::default()
        },
        Proto::Fcgi,
        "127.0.0.1:0",
    );
    // Without KEEP_CONN the connection closes after END_REQUEST.
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "GET", "/", b"", false));
    c.response(1);
    assert!(c.next().is_none(), "closed");
    // FILTER and unknown roles: END_REQUEST with UNKNOWN_ROLE, nothing else.
    let mut c = Client::connect(s.addr());
    for (id, role) in [(1u16, 3u16), (2, 99)] {
        c.send(&f::begin(id, role, true));
        let r = c.next().unwrap();
        assert_eq!((r.kind, r.id, r.content[4]), (f::END, id, 3));
    }
    // AUTHORIZER: the handler answers; 200 allows.
    let mut w = f::begin(5, 2, true);
    w.extend(f::params(5, "GET", "/", &[], 4096));
    c.send(&w);
    assert_eq!(parse_cgi(&c.response(5).0).0, 200);
    // Params over the cap: 431 and END_REQUEST, and the connection still works.
    let big = "v".repeat(5000);
    let mut w = f::begin(6, 1, true);
    w.extend(f::params(6, "GET", "/", &[("HTTP_X_BIG", &big)], 1000));
    w.extend(f::stdin(6, b"", 1));
    c.send(&w);
    assert_eq!(parse_cgi(&c.response(6).0).0, 431);
    c.send(&f::request(8, "GET", "/", b"", true));
    assert_eq!(parse_cgi(&c.response(8).0).0, 200);
}

#[test]
fn with_keep_conn_a_request_costs_one_read_and_one_write() {
    let s = srv();
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "GET", "/", b"", true));
    c.response(1);
    let before = s.stats();
    for i in 0..50u16 {
        c.send(&f::request(i + 2, "GET", "/", b"", true));
        let (out, _, _) = c.response(i + 2);
        assert_eq!(parse_cgi(&out).2, b"Hello, World!");
    }
    let after = s.stats();
    assert_eq!(
        (
            after.read + after.received - before.read - before.received,
            after.write - before.write
        ),
        (50, 50),
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.ctl, before.ctl);
}

#[test]
fn without_keep_conn_the_close_costs_no_shutdown_and_no_eof_read() {
    // The front end sends nothing after a request's STDIN and waits for our close: no
    // shutdown and drain first. The clients stay open: the server must not wait for them.
    let s = srv();
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "GET", "/", b"", true));
    c.response(1);
    let before = s.stats();
    let clients: Vec<Client> = (0..20u16)
        .map(|i| {
            let mut c = Client::connect(s.addr());
            c.send(&f::request(i + 1, "GET", "/", b"", false));
            let (out, _, st) = c.response(i + 1);
            assert_eq!((parse_cgi(&out).2, st), (b"Hello, World!".to_vec(), 0));
            assert!(c.next().is_none(), "closed after END_REQUEST");
            c
        })
        .collect();
    s.inner.assert_closed_without_lingering(before, clients, 1);
    // A large response to a slow reader: the close waits until all of it is written.
    let mut c = Client::connect(s.addr());
    c.send(&f::request(
        3,
        "GET",
        "/stream?chunks=40&bytes=65536",
        b"",
        false,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let (out, _, st) = c.response(3);
    assert_eq!((parse_cgi(&out).2.len(), st), (40 * 65536, 0));
    assert!(c.next().is_none(), "closed after END_REQUEST");

    // A request whose response finished before its STDIN ended: the rest of the STDIN
    // is still coming, so that close lingers (drains it) as before.
    let before = s.stats();
    let mut c = Client::connect(s.addr());
    let mut w = f::begin(1, 1, false);
    w.extend(f::params(1, "GET", "/", &[], 4096));
    w.extend(f::record(f::STDIN, 1, b"early", 0));
    c.send(&w);
    let (out, _, _) = c.response(1);
    assert_eq!(parse_cgi(&out).2, b"Hello, World!");
    c.send(&f::stdin(1, &[b'x'; 1000], 100));
    assert!(c.next().is_none(), "closed after END_REQUEST");
    drop(c);
    s.inner.assert_lingered(before, 1);
}

#[test]
fn web_server_addrs_stderr_empty_data_and_close_with_unread_input() {
    // FCGI_WEB_SERVER_ADDRS: a TCP peer not on the list is refused.
    let s = HttpSrv::start_proto(
        ServerOptions {
            web_server_addrs: vec!["10.9.9.9".parse().unwrap()],
            ..Default::default()
        },
        Proto::Fcgi,
        "127.0.0.1:0",
    );
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "GET", "/", b"", true));
    // Closed without an answer (EOF, or a reset since our request was never read).
    let mut b = [0u8; 64];
    match std::io::Read::read(&mut c.s, &mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("refused peer got {other:?}"),
    }
    let s = HttpSrv::start_proto(
        ServerOptions {
            web_server_addrs: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        },
        Proto::Fcgi,
        "127.0.0.1:0",
    );
    let mut c = Client::connect(s.addr());
    // STDERR for the front end's log, and an empty DATA record is tolerated.
    let mut w = f::request(1, "GET", "/log", b"", true);
    w.extend(f::record(8, 1, b"", 0));
    c.send(&w);
    let (out, err, _) = c.response(1);
    assert_eq!(
        (parse_cgi(&out).2, err),
        (b"logged".to_vec(), b"something to log".to_vec())
    );

    // No KEEP_CONN and more input behind the request: the server closes with unread input,
    // which must not reset away the response.
    let mut c = Client::connect(s.addr());
    let mut w = f::request(2, "GET", "/", b"", false);
    for _ in 0..64 {
        w.extend(f::record(f::STDIN, 9, &[b'j'; 60000], 0));
    }
    let mut wr = c.s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut wr, &w);
    });
    let (out, _, st) = c.response(2);
    assert_eq!((parse_cgi(&out).2, st), (b"Hello, World!".to_vec(), 0));
    t.join().unwrap();
}

#[test]
fn an_abandoned_response_closes_the_connection_before_end_request() {
    let s = srv();
    for (target, want) in [
        ("/cut", None),
        ("/cut?flushed=2", Some("piece 0\npiece 1\n")),
        ("/cut?flushed=2&ms=30", Some("piece 0\npiece 1\n")),
    ] {
        let mut c = Client::connect(s.addr());
        // Request 2 waits on the same connection: it ends with it.
        let mut wire = f::request(1, "GET", target, b"", true);
        wire.extend(f::request(2, "GET", "/delay?ms=2000", b"", true));
        c.send(&wire);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(r) = c.next() {
            assert_eq!(r.id, 1, "{target}: {r:?}");
            match r.kind {
                f::STDOUT => out.extend(r.content),
                f::STDERR => err.extend(r.content),
                _ => panic!("{target}: {r:?} (no END_REQUEST)"),
            }
        }
        assert_eq!(
            err, b"myriad: response abandoned by the application",
            "{target}"
        );
        match want {
            None => assert!(out.is_empty(), "{target}: {out:?}"),
            Some(body) => {
                let (status, head, got) = parse_cgi(&out);
                assert_eq!(status, 200, "{target}");
                assert!(!head.contains("Content-Length"), "{target}: {head}");
                assert_eq!(got, body.as_bytes(), "{target}");
            }
        }
    }
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "GET", "/", b"", true));
    assert_eq!(parse_cgi(&c.response(1).0).2, b"Hello, World!");
}
