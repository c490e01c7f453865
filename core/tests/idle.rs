//! Idle footprint: 10,000 keep-alive connections that have exchanged a message and gone
//! idle add less than 224 bytes of heap each on the server (counting global allocator; the
//! clients live in a child process so both sides fit in the fd limit).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};

use myriad::net::DEFAULT_BUF_SIZE;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: usize = 10_000;
const CHILD_ENV: &str = "MYRIAD_IDLE_CLIENT";

/// Child: open N connections, exchange one message on each, report, wait for stdin EOF.
fn client(addr: &str) {
    let mut v = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        s.write_all(b"hi").unwrap();
        v.push(s);
    }
    for s in v.iter_mut() {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
    }
    println!("\nREADY");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn idle_connections_cost_under_224_heap_bytes_each() {
    if let Ok(addr) = std::env::var(CHILD_ENV) {
        return client(&addr);
    }
    let srv = common::Server::start("127.0.0.1:0");
    // Warm up: one connection through the whole path (pool blocks, slab, event buffer).
    {
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.write_all(b"w").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    srv.wait_for(10, "warm-up closed", |lp| lp.connection_count() == 0);
    let before = LIVE.load(Ordering::Relaxed);
    let idle_before = srv.stats().buffers_idle;

    let mut ch = Command::new(std::env::current_exe().unwrap())
        .args([
            "idle_connections_cost_under_224_heap_bytes_each",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, srv.tcp().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(ch.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "client exited early");
        if line.trim() == "READY" {
            break;
        }
    }
    srv.wait_for(30, "10k connections", |lp| lp.connection_count() == N);
    let st = srv.stats();
    let after = LIVE.load(Ordering::Relaxed);
    // The pool's cache of free blocks (at most 64, however many connections there are)
    // grows while many responses are in flight at once, as on io_uring, whose sends hold
    // their blocks until the next wait: a fixed cost, not a per-connection one.
    let pool = (st.buffers_idle as isize - idle_before as isize) * DEFAULT_BUF_SIZE as isize;
    let per = (after - before - pool) as f64 / N as f64;
    println!(
        "heap per idle connection: {per:.1} bytes ({} B of pool cache not counted); {st:?}",
        pool
    );
    assert_eq!(st.buffers_in_use, 0, "idle connections hold pool buffers");
    assert!(per < 224.0, "{per:.1} bytes of heap per idle connection");

    drop(ch.stdin.take());
    assert!(ch.wait().unwrap().success());
    srv.wait_for(30, "connections closed", |lp| lp.connection_count() == 0);
}
