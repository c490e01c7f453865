//! FastCGI under the request limits HTTP has (issue 25): the body limit, a cap on the
//! requests open on one connection, timeouts for params, bodies and responses that stop
//! coming, and a connection whose front end went away. Each case keeps the connection's
//! other requests going.

mod common;

use std::time::{Duration, Instant};

use common::fcgi::{self as f, parse_cgi, Client};
use common::http::HttpSrv;
use myriad::{Proto, ServerOptions};

fn srv(opts: ServerOptions) -> HttpSrv {
    HttpSrv::start_proto(opts, Proto::Fcgi, "127.0.0.1:0")
}

/// BEGIN (KEEP_CONN) and PARAMS of a POST /echo (with CONTENT_LENGTH `cl` if given).
fn post_head(id: u16, cl: Option<usize>) -> Vec<u8> {
    let cl = cl.map(|n| n.to_string());
    let extra: Vec<(&str, &str)> = cl.iter().map(|c| ("CONTENT_LENGTH", c.as_str())).collect();
    let mut w = f::begin(id, 1, true);
    w.extend(f::params(id, "POST", "/echo", &extra, 4096));
    w
}

/// The STDIN records of `body` without the empty one that ends the stream.
fn stdin_part(id: u16, body: &[u8]) -> Vec<u8> {
    body.chunks(65535)
        .flat_map(|c| f::record(f::STDIN, id, c, 0))
        .collect()
}

#[test]
fn a_body_over_the_limit_is_413_and_the_other_requests_go_on() {
    let s = srv(ServerOptions {
        max_body: 1 << 20,
        ..Default::default()
    });
    let big = vec![b'x'; 3 << 20];
    for declared in [Some(big.len()), None] {
        let mut c = Client::connect(s.addr());
        // Request 2 is multiplexed with 1 and sends its body in pieces around 1's.
        let mut w = post_head(1, declared);
        w.extend(post_head(2, Some(10)));
        w.extend(f::record(f::STDIN, 2, b"hello", 0));
        c.send(&w);
        // Request 1's body, past the limit; 413 and END_REQUEST come without waiting for it
        // to end, and what follows is dropped unread by the handler.
        c.send(&stdin_part(1, &big));
        let (out, _, st) = c.response(1);
        assert_eq!((parse_cgi(&out).0, st), (413, 0), "{declared:?}");
        c.send(&f::record(f::STDIN, 1, b"more after the answer", 0));
        c.send(&f::record(f::STDIN, 1, b"", 0));
        c.send(&f::record(f::STDIN, 2, b"world", 0));
        c.send(&f::record(f::STDIN, 2, b"", 0));
        let (out, _, st) = c.response(2);
        assert_eq!((parse_cgi(&out).2, st), (b"helloworld".to_vec(), 0));
        // The connection is still good for a new request.
        c.send(&f::request(3, "POST", "/echo", b"again", true));
        assert_eq!(parse_cgi(&c.response(3).0).2, b"again");
    }
    // At the limit exactly: accepted.
    let mut c = Client::connect(s.addr());
    c.send(&f::request(1, "POST", "/echo", &big[..1 << 20], true));
    let (out, _, _) = c.response(1);
    assert_eq!(parse_cgi(&out).2.len(), 1 << 20);
}

/// A GET_VALUES record asking for `names`.
fn get_values(names: &[&str]) -> Vec<u8> {
    let mut q = Vec::new();
    for n in names {
        f::pair(&mut q, n.as_bytes(), b"");
    }
    f::record(f::GET_VALUES, 0, &q, 0)
}

#[test]
fn requests_beyond_the_cap_are_refused_overloaded() {
    let s = srv(ServerOptions {
        fcgi_max_requests: 4,
        ..Default::default()
    });
    let mut c = Client::connect(s.addr());
    c.send(&get_values(&["FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]));
    let r = c.next().unwrap();
    assert_eq!(r.kind, f::GET_VALUES_RESULT);
    let text = String::from_utf8_lossy(&r.content).into_owned();
    assert!(
        r.content.windows(14).any(|w| w == b"FCGI_MAX_REQS4"),
        "{text:?}"
    );
    assert!(
        r.content.windows(16).any(|w| w == b"FCGI_MPXS_CONNS1"),
        "{text:?}"
    );
    // Four requests open (params unfinished), the fifth and sixth refused.
    for id in 1..=4u16 {
        c.send(&f::begin(id, 1, true));
    }
    for id in 5..=6u16 {
        c.send(&f::begin(id, 1, true));
        let r = c.next().unwrap();
        assert_eq!(
            (r.kind, r.id, r.content[4]),
            (f::END, id, 2),
            "FCGI_OVERLOADED"
        );
    }
    // The open ones still complete; then there is room again.
    for id in 1..=4u16 {
        let mut w = f::params(id, "GET", "/", &[], 4096);
        w.extend(f::stdin(id, b"", 1));
        c.send(&w);
        assert_eq!(parse_cgi(&c.response(id).0).0, 200);
    }
    c.send(&f::request(7, "GET", "/", b"", true));
    assert_eq!(parse_cgi(&c.response(7).0).0, 200);

    // A cap of one: the second is refused with FCGI_CANT_MPX_CONN, MPXS_CONNS is 0.
    let s = srv(ServerOptions {
        fcgi_max_requests: 1,
        ..Default::default()
    });
    let mut c = Client::connect(s.addr());
    c.send(&get_values(&["FCGI_MPXS_CONNS"]));
    let r = c.next().unwrap();
    assert!(r.content.windows(16).any(|w| w == b"FCGI_MPXS_CONNS0"));
    c.send(&f::begin(1, 1, true));
    c.send(&f::begin(2, 1, true));
    let r = c.next().unwrap();
    assert_eq!(
        (r.kind, r.id, r.content[4]),
        (f::END, 2, 1),
        "FCGI_CANT_MPX_CONN"
    );
}

#[test]
fn params_body_and_response_that_stop_coming_time_out() {
    let t = Duration::from_millis(300);
    let s = srv(ServerOptions {
        header_timeout: t,
        body_timeout: t,
        response_timeout: t,
        ..Default::default()
    });
    let mut c = Client::connect(s.addr());
    // 1: params never end. 2: the body stops. 3: the response never comes. 4: it starts,
    // then stops. 5: answered in time, on the same connection.
    let mut w = f::begin(1, 1, true);
    w.extend(f::record(f::PARAMS, 1, b"\x0e\x04REQUEST_METHOD", 0));
    w.extend(post_head(2, Some(100)));
    w.extend(f::record(f::STDIN, 2, b"some", 0));
    w.extend(f::request(3, "GET", "/delay?ms=5000", b"", true));
    w.extend(f::request(5, "GET", "/delay?ms=50", b"", true));
    let t0 = Instant::now();
    c.send(&w);
    let mut seen = Vec::new();
    let mut out = std::collections::HashMap::<u16, Vec<u8>>::new();
    while seen.len() < 4 {
        let r = c.next().expect("records");
        match r.kind {
            f::STDOUT => out.entry(r.id).or_default().extend(r.content),
            f::END => seen.push((r.id, r.content[4])),
            k => panic!("record {k}"),
        }
    }
    let took = t0.elapsed();
    seen.sort();
    assert_eq!(seen, vec![(1, 0), (2, 0), (3, 0), (5, 0)]);
    let status = |id: u16| parse_cgi(&out[&id]).0;
    assert_eq!(
        (status(1), status(2), status(3), status(5)),
        (408, 408, 504, 200)
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(c);
    // A response that started, then stalled, is cut short: the connection closes (the front
    // end's only way to learn it) without END_REQUEST.
    let mut c = Client::connect(s.addr());
    c.send(&f::request(4, "GET", "/stall?flushed=1", b"", true));
    let mut kinds = Vec::new();
    while let Some(r) = c.next() {
        kinds.push(r.kind);
    }
    assert!(kinds.contains(&f::STDOUT), "{kinds:?}");
    assert!(!kinds.contains(&f::END), "{kinds:?}");
    // (Our EOF ends the server's lingering close.)
    drop(c);
    s.inner
        .wait_for(5, "connections closed", |lp| lp.connection_count() == 0);
}

#[test]
fn a_front_end_that_closes_frees_its_requests() {
    let s = srv(ServerOptions::default());
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(s.addr());
        // Read whole, waiting for a response that would take 60 s.
        c.send(&f::request(1, "GET", "/delay?ms=60000", b"", true));
        let mut w = post_head(2, Some(4));
        w.extend(f::stdin(2, b"half", 1)[..8].to_vec());
        c.send(&w);
        clients.push(c);
    }
    s.inner
        .wait_for(5, "the connections open", |lp| lp.connection_count() == 20);
    drop(clients);
    s.inner.wait_for(5, "their connections freed", |lp| {
        lp.connection_count() == 0
    });
}
