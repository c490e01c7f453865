//! WebSocket end to end over real sockets on both backends, with a client here that writes
//! raw bytes: the handshake and its refusals, bytes sent with the upgrade request, echo,
//! fragmentation, pings, the close handshake and close codes of every framing error,
//! permessage-deflate, pub/sub (one encode for all subscribers), backpressure, keep-alive
//! pings and the idle timeout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Server;
use myriad::ws::frame::{
    apply_mask, write_head, MAX_HEAD, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
};
use myriad::ws::{self, deflate, Handler, Options, WebSocket};
use myriad::{Loop, ServerOptions};

const BACKENDS: [&str; 2] = ["epoll", "io_uring"];
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

thread_local! {
    /// Close codes the handlers of this (server) thread saw, for the tests to read.
    static CLOSED: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Echoes every message as the same kind; "close:N" closes with code N; "frags" answers a
/// message in three fragments; "ping" sends a ping; "flood" sends 100 messages of 16 KiB;
/// "bad-close" tries an invalid code.
struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, _: &mut Loop, ws: &WebSocket, data: &[u8], binary: bool) {
        if let Some(code) = data.strip_prefix(b"close:") {
            let code: u16 = std::str::from_utf8(code).unwrap().parse().unwrap();
            ws.close(code, b"asked");
            return;
        }
        match data {
            b"frags" => {
                assert_eq!(ws.send_fragment(b"a", false, true, false), ws::Sent::Queued);
                assert_eq!(
                    ws.send_fragment(b"b", false, false, false),
                    ws::Sent::Queued
                );
                assert_eq!(ws.send_fragment(b"c", false, false, true), ws::Sent::Queued);
            }
            b"ping" => assert_eq!(ws.ping(b"srv"), ws::Sent::Queued),
            b"bad-close" => {
                assert_eq!(ws.close(1005 + 1, b""), ws::Sent::Invalid);
                ws.send(b"still open", false);
            }
            b"flood" => {
                let big = vec![b'f'; 16 * 1024];
                let sent: Vec<ws::Sent> = (0..100).map(|_| ws.send(&big, true)).collect();
                assert!(sent.contains(&ws::Sent::Dropped), "{sent:?}");
            }
            _ => {
                ws.send(data, binary);
            }
        }
    }
    fn on_close(&mut self, _: &mut Loop, _: &WebSocket, code: u16, _: &[u8]) {
        CLOSED.with(|c| c.borrow_mut().push(code));
    }
}

/// Subscribes to "news" on open; a message "pub:X" publishes X to the topic.
struct Sub;

impl Handler for Sub {
    fn on_open(&mut self, _: &mut Loop, ws: &WebSocket) {
        assert!(ws.subscribe("news"));
    }
    fn on_message(&mut self, _: &mut Loop, _ws: &WebSocket, data: &[u8], binary: bool) {
        if let Some(m) = data.strip_prefix(b"pub:") {
            ws::publish("news", m, binary);
        }
    }
}

fn server(backend: &'static str) -> Server {
    Server::start_on(backend, "127.0.0.1:0", |lp, l| {
        let server = lp.server(ServerOptions::default(), |_, req, res| {
            let opts = Options::default();
            let r = match req.path() {
                "/ws" => ws::upgrade(req, res, opts, Echo),
                "/small" => ws::upgrade(
                    req,
                    res,
                    Options {
                        max_message: 1000,
                        ..opts
                    },
                    Echo,
                ),
                "/strict" => ws::upgrade(
                    req,
                    res,
                    Options {
                        max_backpressure: 64 * 1024,
                        close_on_backpressure: true,
                        ..opts
                    },
                    Echo,
                ),
                "/plain" => ws::upgrade(
                    req,
                    res,
                    Options {
                        deflate: false,
                        ..opts
                    },
                    Echo,
                ),
                "/sub" => ws::upgrade(
                    req,
                    res,
                    Options {
                        max_backpressure: 256 * 1024,
                        ..opts
                    },
                    Sub,
                ),
                "/ka" => ws::upgrade(
                    req,
                    res,
                    Options {
                        ping_interval: Some(Duration::from_millis(150)),
                        ..opts
                    },
                    Echo,
                ),
                "/idle" => ws::upgrade(
                    req,
                    res,
                    Options {
                        idle_timeout: Some(Duration::from_millis(150)),
                        ..opts
                    },
                    Echo,
                ),
                _ => {
                    let _ = res.send(404, "text/plain", b"no\n");
                    return;
                }
            };
            let _ = r;
        });
        server.listen(lp, l, myriad::Proto::Http);
        SERVER.with(|s| *s.borrow_mut() = Some(server));
    })
}

thread_local! {
    /// The test server of this (server) thread, for a shutdown.
    static SERVER: std::cell::RefCell<Option<myriad::Server>> = const { std::cell::RefCell::new(None) };
}

/// A raw WebSocket client.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    head: String,
}

fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(i + 4);
            return (String::from_utf8(got).unwrap(), rest);
        }
        let n = s.read(&mut b).expect("read head");
        assert!(n > 0, "EOF in head: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
}

fn frame(fin: bool, rsv1: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut h = [0u8; MAX_HEAD];
    let n = write_head(&mut h, fin, rsv1, op, payload.len() as u64, Some(key));
    let mut v = h[..n].to_vec();
    let mut p = payload.to_vec();
    apply_mask(&mut p, key, 0);
    v.extend(p);
    v
}

impl Client {
    fn connect(srv: &Server, path: &str, extra: &str, after: &[u8]) -> Client {
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes();
        req.extend_from_slice(after);
        s.write_all(&req).unwrap();
        let (head, buf) = read_head(&mut s);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nSec-WebSocket-Accept: {ACCEPT}\r\n")),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nupgrade: websocket\r\n"),
            "{head}"
        );
        Client { s, buf, head }
    }

    fn send(&mut self, f: &[u8]) {
        self.s.write_all(f).unwrap();
    }

    fn fill(&mut self, n: usize) -> bool {
        let mut b = [0u8; 65536];
        while self.buf.len() < n {
            match self.s.read(&mut b) {
                Ok(0) => return false,
                Ok(k) => self.buf.extend_from_slice(&b[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("read: {e}"),
            }
        }
        true
    }

    /// The next frame: (fin, rsv1, opcode, payload); None at EOF.
    fn frame(&mut self) -> Option<(bool, bool, u8, Vec<u8>)> {
        if !self.fill(2) {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
        let (len, at) = match b1 & 0x7F {
            126 => {
                assert!(self.fill(4));
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                assert!(self.fill(10));
                (
                    u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    10,
                )
            }
            n => (n as usize, 2),
        };
        assert!(self.fill(at + len), "EOF inside a frame");
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F, payload))
    }

    /// Expects a close frame with `code`, then EOF.
    fn expect_close(&mut self, code: u16, ctx: &str) {
        let f = self
            .frame()
            .unwrap_or_else(|| panic!("{ctx}: EOF before the close frame"));
        assert_eq!(f.2, OP_CLOSE, "{ctx}: {f:?}");
        assert_eq!(u16::from_be_bytes([f.3[0], f.3[1]]), code, "{ctx}");
        assert!(self.frame().is_none(), "{ctx}: more after the close");
    }
}

#[test]
fn refused_upgrades_get_the_right_4xx() {
    let srv = server("");
    for (req, status, must) in [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "426", "Upgrade: websocket"),
        (
            &*format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"),
            "426",
            "Sec-WebSocket-Version: 13",
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "400",
            "Sec-WebSocket-Key",
        ),
        (
            &*format!("POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            "405",
            "GET",
        ),
        (
            &*format!("GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            "400",
            "HTTP/1.1",
        ),
    ] {
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let (head, mut rest) = read_head(&mut s);
        assert!(head.starts_with("HTTP/1."), "{head}");
        assert!(head[9..].starts_with(status), "{req}: {head}");
        assert!(!head.contains("101"), "{head}");
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let _ = s.read_to_end(&mut rest);
        let all = format!("{head}{}", String::from_utf8_lossy(&rest));
        assert!(all.contains(must), "{req}: {all}");
    }
    srv.stop();
}

#[test]
fn echo_fragments_pings_and_the_bytes_sent_with_the_upgrade() {
    for backend in BACKENDS {
        let srv = server(backend);
        // A text frame in the same write as the upgrade request.
        let mut c = Client::connect(&srv, "/ws", "", &frame(true, false, OP_TEXT, b"early"));
        assert!(!c.head.contains("Sec-WebSocket-Extensions"), "{}", c.head);
        assert_eq!(
            c.frame(),
            Some((true, false, OP_TEXT, b"early".to_vec())),
            "{backend}"
        );
        // Binary of each length size; a fragmented text with a ping between; all in one write.
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut w = Vec::new();
        for p in [&b""[..], &[1u8; 125], &[2u8; 126], &[3u8; 65535], &big] {
            w.extend(frame(true, false, OP_BINARY, p));
        }
        w.extend(frame(false, false, OP_TEXT, "κό".as_bytes()));
        w.extend(frame(true, false, OP_PING, b"are you there"));
        w.extend(frame(false, false, OP_CONT, "σμ".as_bytes()));
        w.extend(frame(true, false, OP_CONT, "ε".as_bytes()));
        c.send(&w);
        for p in [&b""[..], &[1u8; 125], &[2u8; 126], &[3u8; 65535], &big] {
            assert_eq!(
                c.frame(),
                Some((true, false, OP_BINARY, p.to_vec())),
                "{backend}"
            );
        }
        assert_eq!(
            c.frame(),
            Some((true, false, OP_PONG, b"are you there".to_vec())),
            "{backend}"
        );
        assert_eq!(
            c.frame(),
            Some((true, false, OP_TEXT, "κόσμε".as_bytes().to_vec())),
            "{backend}"
        );
        // The close handshake: our code comes back, then the server closes.
        c.send(&frame(
            true,
            false,
            OP_CLOSE,
            &[0x0F, 0xA0, b'b', b'y', b'e'],
        ));
        c.expect_close(4000, backend);
        drop(c);
        // A close the application starts.
        let mut c = Client::connect(&srv, "/ws", "", b"");
        c.send(&frame(true, false, OP_TEXT, b"close:4321"));
        let f = c.frame().unwrap();
        assert_eq!(
            (f.2, &f.3[..]),
            (OP_CLOSE, &[0x10, 0xE1, b'a', b's', b'k', b'e', b'd'][..]),
            "{backend}"
        );
        c.send(&frame(true, false, OP_CLOSE, &[0x10, 0xE1]));
        assert!(c.frame().is_none(), "{backend}");
        drop(c);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn framing_errors_close_with_their_codes() {
    for backend in BACKENDS {
        let srv = server(backend);
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        for (path, bytes, code) in [
            ("/ws", unmasked, 1002),
            ("/ws", vec![0xA1, 0x80, 0, 0, 0, 0], 1002),
            ("/plain", frame(true, true, OP_TEXT, b"x"), 1002),
            ("/ws", frame(true, false, 0x3, b""), 1002),
            ("/ws", frame(true, false, OP_CONT, b"x"), 1002),
            (
                "/ws",
                [
                    frame(false, false, OP_TEXT, b"a"),
                    frame(true, false, OP_BINARY, b"b"),
                ]
                .concat(),
                1002,
            ),
            ("/ws", frame(false, false, OP_PING, b""), 1002),
            ("/ws", frame(true, false, OP_PING, &[0; 126]), 1002),
            (
                "/ws",
                frame(true, false, OP_TEXT, &[0xCE, 0xBA, 0xFF]),
                1007,
            ),
            (
                "/ws",
                [
                    frame(false, false, OP_TEXT, &[0xCE]),
                    frame(true, false, OP_CONT, b""),
                ]
                .concat(),
                1007,
            ),
            (
                "/ws",
                frame(true, false, OP_CLOSE, &1005u16.to_be_bytes()),
                1002,
            ),
            ("/ws", frame(true, false, OP_CLOSE, &[3, 0xE8, 0xFF]), 1007),
            ("/ws", frame(true, false, OP_CLOSE, &[3]), 1002),
            ("/small", frame(true, false, OP_BINARY, &[0; 1001]), 1009),
            (
                "/small",
                [
                    frame(false, false, OP_BINARY, &[0; 600]),
                    frame(true, false, OP_CONT, &[0; 600]),
                ]
                .concat(),
                1009,
            ),
        ] {
            let mut c = Client::connect(&srv, path, "", b"");
            c.send(&bytes);
            c.expect_close(code, &format!("{backend} {path} {bytes:x?}"));
        }
        // An empty close payload is echoed empty.
        let mut c = Client::connect(&srv, "/ws", "", b"");
        c.send(&frame(true, false, OP_CLOSE, b""));
        assert_eq!(
            c.frame(),
            Some((true, false, OP_CLOSE, vec![])),
            "{backend}"
        );
        assert!(c.frame().is_none());
        drop(c);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn permessage_deflate_both_ways_and_the_bomb_limit() {
    for backend in BACKENDS {
        let srv = server(backend);
        let mut c = Client::connect(
            &srv,
            "/ws",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            b"",
        );
        assert!(
            c.head.contains(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
            ),
            "{}",
            c.head
        );
        let msg = "a message long enough to be compressed by the server. ".repeat(40);
        // Ours compressed (the loop's compressor is the same code; any deflate stream will do).
        c.send(&frame(
            true,
            true,
            OP_TEXT,
            &deflate::compress(msg.as_bytes()),
        ));
        let (fin, rsv1, op, p) = c.frame().unwrap();
        assert!(fin && rsv1 && op == OP_TEXT, "{backend}");
        assert!(p.len() < msg.len() / 4, "{backend}: {} bytes", p.len());
        let mut out = Vec::new();
        deflate::Inflater::new(true)
            .inflate(&p, 1 << 20, &mut out)
            .unwrap();
        assert_eq!(out, msg.as_bytes(), "{backend}");
        // Short messages go uncompressed; an uncompressed one from the client is fine too.
        c.send(&frame(true, false, OP_TEXT, b"short"));
        assert_eq!(
            c.frame(),
            Some((true, false, OP_TEXT, b"short".to_vec())),
            "{backend}"
        );
        drop(c);
        // A small frame inflating past the maximum message size: 1009.
        let mut c = Client::connect(
            &srv,
            "/small",
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            b"",
        );
        let bomb = deflate::compress(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 5000, "{}", bomb.len());
        c.send(&frame(true, true, OP_BINARY, &bomb[..bomb.len().min(900)]));
        c.expect_close(1009, backend);
        drop(c);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn a_publish_is_encoded_once_for_all_subscribers() {
    for backend in BACKENDS {
        let srv = server(backend);
        let mut subs: Vec<Client> = (0..50)
            .map(|_| Client::connect(&srv, "/sub", "", b""))
            .collect();
        srv.wait_for(5, "subscribed", |_| ws::subscribers("news") == 50);
        let before = srv.on_loop(|_| ws::stats());
        subs[0].send(&frame(true, false, OP_TEXT, b"pub:hello all"));
        for (i, c) in subs.iter_mut().enumerate() {
            assert_eq!(
                c.frame(),
                Some((true, false, OP_TEXT, b"hello all".to_vec())),
                "{backend} #{i}"
            );
        }
        let after = srv.on_loop(|_| ws::stats());
        assert_eq!(after.published - before.published, 1, "{backend}");
        assert_eq!(
            after.encoded - before.encoded,
            1,
            "{backend}: one encode for 50 subscribers"
        );
        assert_eq!(after.delivered - before.delivered, 50, "{backend}");
        // A closed subscriber leaves its topics.
        drop(subs.pop());
        srv.wait_for(5, "unsubscribed", |_| ws::subscribers("news") == 49);
        drop(subs);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        assert_eq!(srv.on_loop(|_| ws::subscribers("news")), 0);
        srv.stop();
    }
}

#[test]
fn a_slow_subscriber_is_skipped_past_its_backpressure_limit() {
    for backend in BACKENDS {
        let srv = server(backend);
        let mut fast = Client::connect(&srv, "/sub", "", b"");
        let slow = Client::connect(&srv, "/sub", "", b"");
        srv.wait_for(5, "subscribed", |_| ws::subscribers("news") == 2);
        let before = srv.on_loop(|_| ws::stats());
        let msg = vec![7u8; 16 * 1024];
        let (rounds, per) = (100, 10);
        for _ in 0..rounds {
            let m = msg.clone();
            srv.on_loop(move |_| {
                for _ in 0..per {
                    ws::publish("news", &m, true);
                }
            });
            for _ in 0..per {
                let (_, _, op, p) = fast.frame().expect("fast subscriber's frame");
                assert_eq!((op, p.len()), (OP_BINARY, msg.len()), "{backend}");
            }
        }
        let after = srv.on_loop(|_| ws::stats());
        let sent = (rounds * per) as u64;
        assert_eq!(after.published - before.published, sent);
        assert_eq!(
            after.encoded - before.encoded,
            sent,
            "{backend}: one encode each"
        );
        let dropped = after.dropped - before.dropped;
        assert!(
            dropped > 0 && dropped < sent,
            "{backend}: dropped {dropped} of {sent}"
        );
        assert_eq!(after.delivered - before.delivered, 2 * sent - dropped);
        drop(slow);
        drop(fast);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn keepalive_pings_and_the_idle_timeout() {
    for backend in BACKENDS {
        let srv = server(backend);
        let mut c = Client::connect(&srv, "/ka", "", b"");
        // Pings come while the client answers them...
        for _ in 0..3 {
            let f = c.frame().expect("ping");
            assert_eq!(f.2, OP_PING, "{backend}");
            c.send(&frame(true, false, OP_PONG, &f.3));
        }
        // ...and one unanswered ping ends the connection.
        assert_eq!(c.frame().map(|f| f.2), Some(OP_PING), "{backend}");
        let t = std::time::Instant::now();
        assert!(c.frame().is_none(), "{backend}");
        assert!(t.elapsed() < Duration::from_secs(3), "{backend}");
        drop(c);
        // An idle connection gets a 1001 close.
        let mut c = Client::connect(&srv, "/idle", "", b"");
        let f = c.frame().expect("close");
        assert_eq!(
            (f.2, u16::from_be_bytes([f.3[0], f.3[1]])),
            (OP_CLOSE, 1001),
            "{backend}"
        );
        c.send(&frame(true, false, OP_CLOSE, &f.3[..2]));
        assert!(c.frame().is_none(), "{backend}");
        drop(c);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn idle_websockets_hold_no_buffers_and_each_message_costs_one_write() {
    for backend in BACKENDS {
        let srv = server(backend);
        let base = srv.stats();
        let mut cs: Vec<Client> = (0..100)
            .map(|_| Client::connect(&srv, "/plain", "", b""))
            .collect();
        for c in cs.iter_mut() {
            c.send(&frame(true, false, OP_TEXT, b"hi"));
            assert_eq!(c.frame().map(|f| f.3), Some(b"hi".to_vec()), "{backend}");
        }
        std::thread::sleep(Duration::from_millis(50));
        let st = srv.stats();
        // Idle (between messages): no pool buffer held by any of the 100 connections.
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
        // One write for each 101 and one for each echo; one read (or ring receive) each.
        assert_eq!(st.write - base.write, 200, "{backend}: {st:?}");
        assert_eq!(
            st.read + st.received - base.read - base.received,
            200,
            "{backend}: {st:?}"
        );
        drop(cs);
        srv.stop();
    }
}

#[test]
fn server_fragments_pings_invalid_close_codes_and_the_backpressure_policy() {
    for backend in BACKENDS {
        let srv = server(backend);
        let mut c = Client::connect(&srv, "/plain", "", b"");
        c.send(&frame(true, false, OP_TEXT, b"frags"));
        assert_eq!(
            c.frame(),
            Some((false, false, OP_TEXT, b"a".to_vec())),
            "{backend}"
        );
        assert_eq!(
            c.frame(),
            Some((false, false, OP_CONT, b"b".to_vec())),
            "{backend}"
        );
        assert_eq!(
            c.frame(),
            Some((true, false, OP_CONT, b"c".to_vec())),
            "{backend}"
        );
        c.send(&frame(true, false, OP_TEXT, b"ping"));
        assert_eq!(
            c.frame(),
            Some((true, false, OP_PING, b"srv".to_vec())),
            "{backend}"
        );
        c.send(&frame(true, false, OP_TEXT, b"bad-close"));
        assert_eq!(
            c.frame(),
            Some((true, false, OP_TEXT, b"still open".to_vec())),
            "{backend}"
        );
        drop(c);
        // Past max_backpressure with close_on_backpressure: the connection is dropped (no
        // unbounded queue), and the handler hears 1008.
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        srv.on_loop(|_| CLOSED.with(|c| c.borrow_mut().clear()));
        let mut c = Client::connect(&srv, "/strict", "", b"");
        c.send(&frame(true, false, OP_TEXT, b"flood"));
        let mut got = 0;
        while let Some(f) = c.frame() {
            got += f.3.len();
        }
        assert!(got < 100 * 16 * 1024, "{backend}: {got} bytes arrived");
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let closed = srv.on_loop(|_| CLOSED.with(|c| c.borrow().clone()));
        assert_eq!(closed, [1008], "{backend}");
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn a_server_shutdown_closes_websockets_with_1001() {
    for backend in BACKENDS {
        let srv = server(backend);
        let mut c = Client::connect(&srv, "/plain", "", b"");
        c.send(&frame(true, false, OP_TEXT, b"x"));
        assert_eq!(c.frame().map(|f| f.3), Some(b"x".to_vec()), "{backend}");
        srv.on_loop(|lp| {
            let s = SERVER.with(|s| s.borrow().clone()).expect("server");
            s.shutdown(lp, |_| {});
        });
        let f = c.frame().expect("close frame");
        assert_eq!(
            (f.2, u16::from_be_bytes([f.3[0], f.3[1]])),
            (OP_CLOSE, 1001),
            "{backend}"
        );
        assert_eq!(&f.3[2..], b"server shutting down", "{backend}");
        c.send(&frame(true, false, OP_CLOSE, &f.3[..2]));
        assert!(c.frame().is_none(), "{backend}");
        drop(c);
        srv.stop();
    }
}
