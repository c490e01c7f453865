//! Outbound connections: connect, exchange, half-close; refused ports and the connect
//! timeout; name resolution off the loop thread; watermarks pausing reads.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::Server;
use myriad::{Addr, ConnOptions, Io, Loop, Protocol, Target};

/// What a client connection saw.
#[derive(Default, Debug)]
struct Seen {
    connected: bool,
    data: Vec<u8>,
    eof: bool,
    closed: Option<Option<i32>>,
}

struct Client {
    seen: Rc<RefCell<Seen>>,
    send: &'static [u8],
    shutdown: bool,
}

impl Protocol for Client {
    fn on_connect(&mut self, io: &mut Io<'_>) {
        self.seen.borrow_mut().connected = true;
        io.write(self.send);
        if self.shutdown {
            io.shutdown_write();
        }
    }
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        let mut s = self.seen.borrow_mut();
        s.data.extend_from_slice(input);
        if !self.shutdown && s.data.len() >= self.send.len() {
            io.close();
        }
        input.len()
    }
    fn on_eof(&mut self, io: &mut Io<'_>) {
        self.seen.borrow_mut().eof = true;
        io.close();
    }
    fn on_close(&mut self, lp: &mut Loop, _: myriad::Token, err: Option<&std::io::Error>) {
        self.seen.borrow_mut().closed = Some(err.map(|e| e.raw_os_error().unwrap_or(-1)));
        lp.stop();
    }
}

fn client(send: &'static [u8], shutdown: bool) -> (Client, Rc<RefCell<Seen>>) {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let c = Client {
        seen: seen.clone(),
        send,
        shutdown,
    };
    (c, seen)
}

fn run_until_stopped(lp: &mut Loop, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if lp.run_once().unwrap() {
            return;
        }
    }
    panic!("loop did not stop within {secs} s");
}

/// Connects a fresh loop's client to `srv`, sends `send` (written before the connect
/// completes: queued, sent once connected), shuts down its side and runs until the client
/// closes.
fn exchange_half_closed(srv: &Server, send: &'static [u8]) -> (Loop, Rc<RefCell<Seen>>) {
    let mut lp = Loop::new().unwrap();
    let (c, seen) = client(send, true);
    lp.connect(
        &srv.addr,
        Some(Duration::from_secs(5)),
        ConnOptions::default(),
        c,
    )
    .unwrap();
    run_until_stopped(&mut lp, 10);
    (lp, seen)
}

#[test]
fn connects_exchanges_and_half_closes() {
    let srv = Server::start("127.0.0.1:0");
    let (lp, seen) = exchange_half_closed(&srv, b"ping over a fresh connection");
    let s = seen.borrow();
    assert!(s.connected);
    assert_eq!(s.data, b"ping over a fresh connection");
    // We shut our side; the echo server closed after echoing: EOF, then a clean close.
    assert!(s.eof, "{s:?}");
    assert_eq!(s.closed, Some(None));
    assert_eq!(lp.connection_count(), 0);
    // Once connected, an outbound connection reads as an accepted one does: on io_uring
    // (6.12+) through the ring (the echo and the EOF), with no recv call.
    let st = lp.stats();
    if lp.backend_receives() {
        assert_eq!(st.read, 0, "{st:?}");
        assert!(st.received >= 2, "{st:?}");
    } else {
        // (One read may bring the echo and, with the peer's hangup known, the EOF.)
        assert!(st.read >= 1, "{st:?}");
    }
}

#[test]
fn a_peer_that_speaks_first_is_heard_whole() {
    // The greeting can arrive with the connect's completion: it must reach the client
    // once, before the echo, whichever way the connection reads.
    let srv = Server::start_with("127.0.0.1:0", |lp, l| {
        lp.listen(l, |lp, a| {
            // A greeting first, then the echo.
            let t = lp.add_conn(a, common::Echo);
            lp.with_conn::<common::Echo, ()>(t, |_, io| io.write(b"hello, client|"));
        });
    });
    for _ in 0..20 {
        let (_lp, seen) = exchange_half_closed(&srv, b"ping");
        let s = seen.borrow();
        assert_eq!(s.data, b"hello, client|ping", "{s:?}");
        assert!(s.eof, "{s:?}");
    }
}

#[test]
fn refused_port_reports_econnrefused() {
    // A port that was just free: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut lp = Loop::new().unwrap();
    let (c, seen) = client(b"x", false);
    let addr: Addr = format!("127.0.0.1:{port}").parse().unwrap();
    lp.connect(
        &addr,
        Some(Duration::from_secs(5)),
        ConnOptions::default(),
        c,
    )
    .unwrap();
    run_until_stopped(&mut lp, 10);
    let s = seen.borrow();
    assert!(!s.connected);
    assert_eq!(s.closed, Some(Some(libc::ECONNREFUSED)));
}

#[test]
fn connect_timeout_fires_against_a_full_backlog() {
    // A listener with backlog 0 that never accepts: once its queue is full, SYNs are
    // dropped and a connect hangs, on loopback.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: re-listen with backlog 0 on the fd std created.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 0) };
    let addr = l.local_addr().unwrap();
    let mut fill = Vec::new();
    for _ in 0..8 {
        let s = socket2_connect_nonblocking(addr);
        fill.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut lp = Loop::new().unwrap();
    let (c, seen) = client(b"x", false);
    let t0 = Instant::now();
    lp.connect(
        &Addr::Tcp(addr),
        Some(Duration::from_millis(300)),
        ConnOptions::default(),
        c,
    )
    .unwrap();
    run_until_stopped(&mut lp, 10);
    let took = t0.elapsed();
    let s = seen.borrow();
    assert_eq!(s.closed, Some(Some(libc::ETIMEDOUT)), "{s:?}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "timeout fired after {took:?}"
    );
}

/// A non-blocking connect (std has no such call): the fd is returned open.
fn socket2_connect_nonblocking(addr: std::net::SocketAddr) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("v4 only")
    };
    // SAFETY: plain socket/connect calls on a fresh fd with a valid sockaddr_in.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK), 0);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = v4.port().to_be();
        sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn names_resolve_off_the_loop_thread() {
    let srv = Server::start("127.0.0.1:0");
    let port = srv.tcp().port();
    // "localhost" is numeric to the address parser; resolve it the way a name is.
    assert!(matches!(
        Target::parse(&format!("db-1.internal:{port}")).unwrap(),
        Target::Name(..)
    ));
    let host = "localhost";
    let mut lp = Loop::new().unwrap();
    let (c, seen) = client(b"resolved", false);
    let slot = Rc::new(RefCell::new(Some(c)));
    let got = Rc::new(RefCell::new(Vec::new()));
    let (slot2, got2) = (slot.clone(), got.clone());
    lp.resolve(host, port, move |lp, res| {
        let addrs = res.expect("localhost resolves");
        *got2.borrow_mut() = addrs.clone();
        let v4 = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap();
        let c = slot2.borrow_mut().take().unwrap();
        lp.connect(&Addr::Tcp(v4), None, ConnOptions::default(), c)
            .unwrap();
    })
    .unwrap();
    run_until_stopped(&mut lp, 10);
    assert!(got.borrow().iter().any(|a| a.ip().is_loopback()));
    assert_eq!(seen.borrow().data, b"resolved");
    // A cancelled resolution never calls back.
    let id = lp
        .resolve("localhost", 1, |_, _| panic!("cancelled"))
        .unwrap();
    assert!(lp.cancel_resolve(id));
    for _ in 0..20 {
        lp.run_once_nowait().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a large payload to a peer that does not read; the echo side must stop reading
/// once its output passes the high-water mark, so its memory stays bounded.
struct Flood {
    sent: Rc<RefCell<usize>>,
}

impl Protocol for Flood {
    fn on_connect(&mut self, io: &mut Io<'_>) {
        // Never read the echo: its output can only pile up on its side.
        io.pause_reading(true);
        self.pump(io);
    }
    fn on_data(&mut self, _: &mut Io<'_>, input: &[u8]) -> usize {
        input.len()
    }
    fn on_drained(&mut self, io: &mut Io<'_>) {
        self.pump(io);
    }
}

impl Flood {
    fn pump(&mut self, io: &mut Io<'_>) {
        static BLOCK: [u8; 65536] = [b'f'; 65536];
        if *self.sent.borrow() < 64 << 20 {
            io.write_static(&BLOCK);
            *self.sent.borrow_mut() += BLOCK.len();
            io.notify_drained();
        }
    }
}

#[test]
fn watermarks_bound_memory_when_the_peer_stops_reading() {
    // The echo server has high/low marks of 64/16 KiB; our client floods it and never
    // reads, so the server's output fills, it stops reading, TCP backpressure stops us.
    let srv = Server::start_with("127.0.0.1:0", |lp, l| {
        lp.listen(l, |lp, a| {
            let opts = ConnOptions {
                high_water: 64 * 1024,
                low_water: 16 * 1024,
                ..ConnOptions::default()
            };
            lp.add_conn_with(a, common::Echo, opts);
        });
    });
    let mut lp = Loop::new().unwrap();
    let sent = Rc::new(RefCell::new(0));
    lp.connect(
        &srv.addr,
        None,
        ConnOptions::default(),
        Flood { sent: sent.clone() },
    )
    .unwrap();
    let t0 = Instant::now();
    let mut last = 0;
    let mut stable = 0;
    while t0.elapsed() < Duration::from_secs(10) && stable < 20 {
        lp.run_once_nowait().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let now = *sent.borrow();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    let st = srv.stats();
    let bytes = st.buffers_in_use * myriad::net::DEFAULT_BUF_SIZE as u64;
    assert!(stable >= 20, "the flood never stalled: sent {last}");
    assert!(last < 64 << 20, "everything was accepted: {last}");
    // Output above the high mark stopped reading: the server holds its queued output (at
    // most the mark plus one read's worth) and an input buffer, whatever the flood size.
    assert!(
        bytes <= 64 * 1024 + 3 * myriad::net::DEFAULT_BUF_SIZE as u64,
        "server holds {bytes} bytes of buffers ({st:?})"
    );
}
