//! The transport seam and the protocol hand-off, end to end over real sockets on both
//! backends: a rot13 layer (with a greeting record of its own, an end-of-stream marker and
//! byte counts) under a protocol, and an HTTP connection handed to another protocol by a
//! handler's 101 with the bytes the client sent right after the request.

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use common::Server;
use myriad::net::{Plain, Transport, Wire};
use myriad::{Io, Protocol, ServerOptions};

const BACKENDS: [&str; 2] = ["epoll", "io_uring"];

fn rot13(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
        _ => b,
    }
}

/// Counts of what a [`Rot13`] layer saw, shared with the loop's thread-local test code.
#[derive(Default)]
struct Counts {
    wire_in: Cell<usize>,
    wire_out: Cell<usize>,
}

/// rot13 both ways; writes `*` before anything else (its "handshake"), and `!` at a
/// graceful close (its "close_notify"); a `~` from the peer is the peer's end of stream.
struct Rot13 {
    greeted: bool,
    closing: bool,
    peer_done: bool,
    counts: Rc<Counts>,
}

impl Transport for Rot13 {
    fn recv(&mut self, wire: &[u8], plain: &mut Plain<'_>) -> io::Result<()> {
        self.counts
            .wire_in
            .set(self.counts.wire_in.get() + wire.len());
        if self.peer_done {
            return Ok(());
        }
        let end = wire.iter().position(|&b| b == b'~');
        let data = &wire[..end.unwrap_or(wire.len())];
        if data.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "NUL on the wire",
            ));
        }
        // Decode straight into the connection's input, in two steps to use both calls.
        let half = data.len() / 2;
        let (a, b) = data.split_at(half);
        let decoded: Vec<u8> = a.iter().map(|&c| rot13(c)).collect();
        plain.append(&decoded);
        let space = plain.spare(b.len());
        for (d, &c) in space.iter_mut().zip(b) {
            *d = rot13(c);
        }
        plain.filled(b.len());
        self.peer_done = end.is_some();
        Ok(())
    }

    fn send(&mut self, plain: &[u8], wire: &mut Wire<'_>) -> io::Result<usize> {
        let mut own = 0;
        if !self.greeted {
            self.greeted = true;
            wire.write(b"*");
            own += 1;
        }
        // Take at most 1000 bytes a call: the connection must offer the rest again.
        let n = plain.len().min(1000);
        let enc: Vec<u8> = plain[..n].iter().map(|&c| rot13(c)).collect();
        wire.write(&enc);
        if self.closing {
            self.closing = false;
            wire.write(b"!");
            own += 1;
        }
        self.counts
            .wire_out
            .set(self.counts.wire_out.get() + n + own);
        Ok(n)
    }

    fn wants_write(&self) -> bool {
        !self.greeted || self.closing
    }

    fn close(&mut self) {
        self.closing = true;
    }

    fn peer_closed(&self) -> bool {
        self.peer_done
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

thread_local! {
    static COUNTS: Rc<Counts> = Rc::default();
}

/// Answers each message with "you said: " and the message; "bye" closes after the answer;
/// "big" answers 1 MiB of letters. Checks it is under the layer it expects.
struct Said;

impl Protocol for Said {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        assert!(io
            .transport()
            .is_some_and(|t| t.as_any().downcast_ref::<Rot13>().is_some()));
        if let Some(path) = input.strip_prefix(b"file ") {
            // A file body through the layer: read a block at a time, in order.
            let path = std::str::from_utf8(path).unwrap();
            let f = Rc::new(std::fs::File::open(path).unwrap());
            let len = f.metadata().unwrap().len();
            io.write(b"<");
            io.write_file(f, 0, len);
            io.write(b">");
            return input.len();
        }
        if input == b"big" {
            let body: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
            io.write(&body);
            return input.len();
        }
        io.write(b"you said: ");
        io.write(input);
        if input.ends_with(b"bye") {
            io.close();
        }
        input.len()
    }
}

fn layered_server(backend: &'static str) -> Server {
    Server::start_on(backend, "127.0.0.1:0", |lp, l| {
        lp.listen(l, |lp, a| {
            let t = lp.add_conn(a, Said);
            let counts = COUNTS.with(|c| c.clone());
            lp.with_conn::<Said, ()>(t, |_, io| {
                io.set_transport(Box::new(Rot13 {
                    greeted: false,
                    closing: false,
                    peer_done: false,
                    counts,
                }))
            });
        });
    })
}

fn enc(s: &[u8]) -> Vec<u8> {
    s.iter().map(|&c| rot13(c)).collect()
}

fn read_exact_timeout(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).expect("read");
    got
}

#[test]
fn a_layer_sits_between_the_socket_and_the_protocol() {
    for backend in BACKENDS {
        let srv = layered_server(backend);
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The layer's own record comes first, before the client sent anything.
        assert_eq!(read_exact_timeout(&mut s, 1), b"*", "{backend}");
        s.write_all(&enc(b"hello")).unwrap();
        let want = enc(b"you said: hello");
        assert_eq!(read_exact_timeout(&mut s, want.len()), want, "{backend}");
        // A large answer goes through the layer 1000 bytes a call and arrives whole.
        s.write_all(&enc(b"big")).unwrap();
        let big = read_exact_timeout(&mut s, 1 << 20);
        assert!(
            big.iter()
                .enumerate()
                .all(|(i, &c)| c == rot13(b'a' + (i % 26) as u8)),
            "{backend}: the big answer was corrupted"
        );
        // A graceful close sends the layer's end of stream after the last answer.
        s.write_all(&enc(b"bye")).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let mut want = enc(b"you said: bye");
        want.push(b'!');
        assert_eq!(rest, want, "{backend}");
        drop(s);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let (wire_in, wire_out) = srv.on_loop(|_| {
            COUNTS.with(|c| {
                let r = (c.wire_in.get(), c.wire_out.get());
                c.wire_in.set(0);
                c.wire_out.set(0);
                r
            })
        });
        assert_eq!(wire_in, 5 + 3 + 3, "{backend}");
        assert_eq!(wire_out, 1 + 15 + (1 << 20) + 13 + 1, "{backend}");
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn a_file_body_goes_through_the_layer_a_block_at_a_time() {
    let path = std::env::temp_dir().join(format!("myriad-transport-file-{}", std::process::id()));
    let n = 3 * 1024 * 1024 + 5;
    let content: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    for backend in BACKENDS {
        let srv = layered_server(backend);
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(read_exact_timeout(&mut s, 1), b"*", "{backend}");
        s.write_all(&enc(format!("file {}", path.display()).as_bytes()))
            .unwrap();
        let got = read_exact_timeout(&mut s, n + 2);
        let mut want = b"<".to_vec();
        want.extend_from_slice(&content);
        want.push(b'>');
        assert!(got == enc(&want), "{backend}: the file body differs");
        let st = srv.stats();
        // Through user space (the layer must see the bytes), never by sendfile.
        assert_eq!((st.file_copied, st.file_sent), (n as u64, 0), "{backend}");
        assert!(st.buffers_in_use <= 2, "{backend}: {st:?}");
        drop(s);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        srv.stop();
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_layers_end_of_stream_is_the_peers_eof_and_its_error_closes() {
    for backend in BACKENDS {
        let srv = layered_server(backend);
        // `~`: the peer ended its stream at the layer; the protocol's default on_eof
        // closes, and the layer's own end of stream goes out.
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&enc(b"hi~")).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let mut want = b"*".to_vec();
        want.extend(enc(b"you said: hi"));
        want.push(b'!');
        assert_eq!(got, want, "{backend}");
        // A decoding error: nothing reaches the protocol and the connection closes.
        drop(s);
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"ab\0cd").unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert_eq!(got, b"*", "{backend}");
        drop(s);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

/// After the hand-off: answers each piece of input in upper case.
struct Shout;

impl Protocol for Shout {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        io.write(&input.to_ascii_uppercase());
        input.len()
    }
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn a_101_hands_the_connection_and_the_bytes_after_the_request_to_another_protocol() {
    for backend in BACKENDS {
        let srv = Server::start_on(backend, "127.0.0.1:0", |lp, l| {
            let server = lp.server(ServerOptions::default(), |_, req, mut res| {
                if req.path() == "/up" {
                    let _ = res.header("X-Test", b"1");
                    res.upgrade("shout", Shout).expect("upgrade");
                } else {
                    let _ = res.send(200, "text/plain", b"plain");
                }
            });
            server.listen(lp, l, myriad::Proto::Http);
        });
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A plain request first: the connection is an ordinary keep-alive one.
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{backend}: {head}");
        assert_eq!(read_exact_timeout(&mut s, 5), b"plain");
        // The upgrade request and the new protocol's first bytes in one write: the bytes
        // after the head must reach the new protocol, not be lost or parsed as HTTP.
        s.write_all(
            b"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: shout\r\nConnection: upgrade\r\n\r\nhello",
        )
        .unwrap();
        let head = read_head(&mut s);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{backend}: {head}"
        );
        assert!(head.contains("\r\nUpgrade: shout\r\n"), "{backend}: {head}");
        assert!(
            head.contains("\r\nConnection: upgrade\r\n"),
            "{backend}: {head}"
        );
        assert!(head.contains("\r\nX-Test: 1\r\n"), "{backend}: {head}");
        assert!(!head.contains("Content-Length"), "{backend}: {head}");
        assert_eq!(read_exact_timeout(&mut s, 5), b"HELLO", "{backend}");
        // The new protocol goes on serving the connection; HTTP is no longer parsed.
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            read_exact_timeout(&mut s, 18),
            b"GET / HTTP/1.1\r\n\r\n".to_ascii_uppercase(),
            "{backend}"
        );
        assert_eq!(srv.on_loop(|lp| lp.connection_count()), 1, "{backend}");
        drop(s);
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

#[test]
fn an_upgrade_is_refused_for_http_1_0() {
    let srv = Server::start_on("", "127.0.0.1:0", |lp, l| {
        let server = lp.server(ServerOptions::default(), |_, _, res| {
            let r = res.upgrade("shout", Shout);
            assert_eq!(r, Err(myriad::ResponseError::Invalid));
        });
        server.listen(lp, l, myriad::Proto::Http);
    });
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /up HTTP/1.0\r\nUpgrade: shout\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    // The refused upgrade dropped the response handle: the server answers 500 and closes.
    let got = String::from_utf8_lossy(&got);
    assert!(!got.contains("101"), "{got}");
    srv.stop();
}
