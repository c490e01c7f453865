//! Helpers shared by the integration tests: an echo protocol and a server on its own thread.
#![allow(dead_code)]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub mod fcgi;
pub mod http;

use myriad::{Addr, Handle, Io, ListenOptions, Listener, Loop, Protocol, Stats};

/// Echoes every byte back.
pub struct Echo;

impl Protocol for Echo {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        io.write(input);
        input.len()
    }
}

/// An echo server running on its own thread.
pub struct Server {
    pub handle: Handle,
    pub addr: Addr,
    /// Loop stats right after the listener was added (before the first wait).
    pub base: Stats,
    thread: Option<thread::JoinHandle<Stats>>,
}

impl Server {
    /// Starts an echo server on `addr` (port 0 picks one).
    pub fn start(addr: &str) -> Server {
        Server::start_with(addr, |lp, l| {
            lp.listen(l, |lp, a| {
                lp.add_conn(a, Echo);
            });
        })
    }

    /// Starts a server whose listener is set up by `setup`.
    pub fn start_with(
        addr: &str,
        setup: impl FnOnce(&mut Loop, Listener) + Send + 'static,
    ) -> Server {
        Server::start_on("", addr, setup)
    }

    /// [`Server::start_with`] on the named backend ("" for the default).
    pub fn start_on(
        backend: &'static str,
        addr: &str,
        setup: impl FnOnce(&mut Loop, Listener) + Send + 'static,
    ) -> Server {
        let addr: Addr = addr.parse().expect("address");
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut lp = Loop::with_backend(backend).expect("loop");
            let l = Listener::bind(&addr, &ListenOptions::default()).expect("bind");
            let bound = l.addr().clone();
            setup(&mut lp, l);
            tx.send((lp.handle(), bound, lp.stats())).unwrap();
            lp.run().expect("run");
            lp.stats()
        });
        let (handle, addr, base) = rx.recv_timeout(Duration::from_secs(10)).expect("server up");
        Server {
            handle,
            addr,
            base,
            thread: Some(thread),
        }
    }

    /// The TCP address (panics for other kinds).
    pub fn tcp(&self) -> std::net::SocketAddr {
        match &self.addr {
            Addr::Tcp(a) => *a,
            a => panic!("not tcp: {a}"),
        }
    }

    /// Runs `f` on the loop and returns its result.
    pub fn on_loop<R: Send + 'static>(&self, f: impl FnOnce(&mut Loop) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.handle
            .post(move |lp| {
                let _ = tx.send(f(lp));
            })
            .expect("post");
        rx.recv_timeout(Duration::from_secs(20))
            .expect("loop answered")
    }

    /// The loop's backend ("epoll", "io_uring": `MYRIAD_BACKEND` picks it).
    pub fn backend(&self) -> &'static str {
        self.on_loop(|lp| lp.backend_name())
    }

    /// Whether the backend receives connections' input itself (see
    /// `Loop::backend_receives`).
    pub fn receives(&self) -> bool {
        self.on_loop(|lp| lp.backend_receives())
    }

    /// The loop's stats now.
    pub fn stats(&self) -> Stats {
        self.on_loop(|lp| lp.stats())
    }

    /// Waits until `pred` holds on the loop (polling), or panics after `secs`.
    pub fn wait_for(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&mut Loop) -> bool + Send + Sync + Copy + 'static,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if self.on_loop(move |lp| pred(lp)) {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out waiting for {what}");
    }

    /// Checks the connections answered since `before`, closed by the server while their
    /// `clients` stay open (`live` connections are left): one read and one close(2) each,
    /// no shutdown and no read of an EOF, and nothing more once the clients go.
    pub fn assert_closed_without_lingering<C>(&self, before: Stats, clients: Vec<C>, live: usize) {
        let n = clients.len() as u64;
        self.wait_for(1, "the connections closed", move |lp| {
            lp.connection_count() == live
        });
        let after = self.stats();
        let reads = after.read + after.received - before.read - before.received;
        assert_eq!(
            (reads, after.other - before.other),
            (n, n),
            "{before:?} -> {after:?}"
        );
        drop(clients);
        thread::sleep(Duration::from_millis(100));
        let end = self.stats();
        assert_eq!(
            (end.read + end.received, end.other),
            (after.read + after.received, after.other)
        );
    }

    /// Checks that one connection, answered since `before` and dropped by its client, was
    /// closed the lingering way: a shutdown, then (after the client's EOF) the close.
    pub fn assert_lingered(&self, before: Stats, live: usize) {
        self.wait_for(5, "the lingering connection closed", move |lp| {
            lp.connection_count() == live
        });
        let after = self.stats();
        assert_eq!(
            after.other - before.other,
            2,
            "shutdown and close: {before:?} -> {after:?}"
        );
    }

    /// Stops the loop and returns its final stats.
    pub fn stop(mut self) -> Stats {
        self.handle.stop();
        self.thread.take().unwrap().join().expect("server thread")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.stop();
            let _ = t.join();
        }
    }
}
