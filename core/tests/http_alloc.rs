//! A warmed-up server answers a hello-world request with zero heap allocations on its loop
//! thread (counting global allocator, counting only the loop's thread).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn hello_world_makes_zero_allocations_after_warm_up() {
    let srv = common::Server::start_with("127.0.0.1:0", |lp, l| {
        let s = lp.server(myriad::ServerOptions::default(), |_, req, mut res| {
            if req.path() == "/" {
                let _ = res.header("Content-Type", b"text/plain");
                let _ = res.write_static(b"Hello, World!");
                let _ = res.finish();
            } else {
                let _ = res.send(404, "text/plain", b"Not Found");
            }
        });
        s.listen(lp, l, myriad::Proto::Http);
        // From here on, count what this (the loop's) thread allocates.
        COUNTED.with(|c| c.set(true));
    });
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut buf = [0u8; 4096];
    let mut roundtrip = |s: &mut TcpStream| {
        s.write_all(req).unwrap();
        let mut got = 0;
        loop {
            got += s.read(&mut buf[got..]).unwrap();
            if buf[..got].ends_with(b"Hello, World!") {
                break;
            }
        }
    };
    for _ in 0..200 {
        roundtrip(&mut s);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..1000 {
        roundtrip(&mut s);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(
        after - before,
        0,
        "{} allocations for 1000 requests",
        after - before
    );
}
