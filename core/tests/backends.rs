//! What both backends must do alike, each run explicitly on epoll and on io_uring: output
//! written just before an abort still goes out, streamed output against a reader that
//! stalls, and sources removed while the loop keeps running.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Server;
use myriad::{Io, Protocol, Token};

const BACKENDS: [&str; 2] = ["epoll", "io_uring"];

/// Answers "bye" to its first message, then has the loop close the connection from a
/// deferred callback, in the same iteration: after the answer was flushed (on io_uring:
/// queued for the next wait, not yet submitted) and before any wait.
struct ByeThenAbort;

impl Protocol for ByeThenAbort {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        io.write(b"bye");
        let token = io.token();
        io.lp().defer(move |lp| {
            lp.close_conn(token);
        });
        input.len()
    }
}

#[test]
fn output_flushed_before_an_abort_reaches_the_peer() {
    for backend in BACKENDS {
        let srv = Server::start_on(backend, "127.0.0.1:0", |lp, l| {
            lp.listen(l, |lp, a| {
                lp.add_conn(a, ByeThenAbort);
            });
        });
        assert_eq!(srv.backend(), backend);
        for i in 0..20 {
            let mut s = TcpStream::connect(srv.tcp()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"hi").unwrap();
            let mut got = Vec::new();
            // EOF (or a reset after the bytes) ends the read.
            let _ = s.read_to_end(&mut got);
            assert_eq!(got, b"bye", "{backend}, connection {i}");
        }
        srv.wait_for(5, "connections closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.write, 20, "{backend}: {st:?}");
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

/// Sends 4 MiB on connect, 64 KiB at a time, refilling when the output drains.
struct Firehose {
    left: usize,
}

impl Protocol for Firehose {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        self.on_drained(io);
        input.len()
    }
    fn on_drained(&mut self, io: &mut Io<'_>) {
        while self.left > 0 && io.queued() < 64 * 1024 {
            let n = self.left.min(16 * 1024);
            io.write(&vec![b'x'; n]);
            self.left -= n;
        }
        if self.left > 0 {
            io.notify_drained();
        } else {
            io.close();
        }
    }
}

#[test]
fn a_stalled_reader_gets_everything_with_bounded_output() {
    for backend in BACKENDS {
        let srv = Server::start_on(backend, "127.0.0.1:0", |lp, l| {
            lp.listen(l, |lp, a| {
                lp.add_conn(a, Firehose { left: 4 << 20 });
            });
        });
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"go").unwrap();
        // Stall: the server's socket buffer fills and its sends come up short.
        std::thread::sleep(Duration::from_millis(300));
        let stalled = srv.stats();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(buf[..n].iter().all(|&b| b == b'x'));
                    got += n;
                }
                Err(e) => panic!("{backend}: read failed after {got} bytes: {e}"),
            }
        }
        assert_eq!(got, 4 << 20, "{backend}");
        // While stalled the server held its 64 KiB window plus one block, not megabytes.
        assert!(stalled.buffers_in_use <= 6, "{backend}: {stalled:?}");
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        srv.stop();
    }
}

#[test]
fn a_closed_listener_refuses_at_once_while_the_loop_runs() {
    for backend in BACKENDS {
        let (tx, rx) = std::sync::mpsc::channel();
        let srv = Server::start_on(backend, "127.0.0.1:0", move |lp, l| {
            let t = lp.listen(l, |lp, a| {
                lp.add_conn(a, common::Echo);
            });
            tx.send(t.to_u64()).unwrap();
        });
        let listener = Token::from_u64(rx.recv().unwrap());
        let addr = srv.tcp();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Close the listener from a callback and connect from that same callback, before
        // the loop waits again: the port must already refuse.
        let refused = srv.on_loop(move |lp| {
            assert!(lp.close_listener(listener));
            TcpStream::connect(addr).is_err()
        });
        assert!(refused, "{backend}: listener still open");
        // The open connection still works.
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping", "{backend}");
        srv.stop();
    }
}
