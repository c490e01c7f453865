//! Idle footprint: 10,000 keep-alive connections that have exchanged a message and gone
//! idle add less than 224 bytes of heap each on the server; 10,000 connections in the
//! middle of a request head (slowloris) hold a small buffer each, not a 16 KiB block; and
//! after large requests the heap comes back near its idle size (counting global allocator;
//! the clients live in a child process so both sides fit in the fd limit; the tests take
//! turns, since the count is process-wide).

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
/// The start of a request head whose end never comes.
const PARTIAL: &[u8] = b"GET /slow HTTP/1.1\r\nHost: t\r\nUser-Agent: slowloris\r\nX-Slow: aaaa";

/// One test at a time: the heap count is the whole process's.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Child: open N connections, exchange one message on each (or, for the partial-heads
/// test, send the start of a head), report, wait for stdin EOF.
fn client(addr: &str) {
    let partial = std::env::var("MYRIAD_IDLE_PARTIAL").is_ok();
    let mut v = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        s.write_all(if partial { PARTIAL } else { b"hi" }).unwrap();
        v.push(s);
    }
    for s in v.iter_mut().filter(|_| !partial) {
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
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
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

/// Starts the child of `test` with N clients against `addr`; returns once they are ready.
fn children(
    test: &str,
    addr: &str,
    partial: bool,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture"])
        .env(CHILD_ENV, addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if partial {
        cmd.env("MYRIAD_IDLE_PARTIAL", "1");
    }
    let mut ch = cmd.spawn().unwrap();
    let mut out = BufReader::new(ch.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "client exited early");
        if line.trim() == "READY" {
            break;
        }
    }
    // (The reader stays open until the child is done: it prints after READY too.)
    (ch, out)
}

/// An HTTP server with the demo's routes (64 MiB bodies, long header timeout).
fn http_server() -> common::Server {
    common::Server::start_with("127.0.0.1:0", |lp, l| {
        let opts = myriad::ServerOptions {
            max_body: 64 << 20,
            header_timeout: std::time::Duration::from_secs(120),
            ..Default::default()
        };
        let s = lp.server(opts, common::http::routes);
        s.listen(lp, l, myriad::Proto::Http);
        std::mem::forget(s);
    })
}

#[test]
fn partial_heads_hold_a_small_buffer_each() {
    if let Ok(addr) = std::env::var(CHILD_ENV) {
        return client(&addr);
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let srv = http_server();
    // Warm up: a whole request, and a partial one (the exchange pool, the slab).
    {
        let r = common::http::get(srv.tcp(), "/");
        assert_eq!(r.status, 200);
        let mut s = TcpStream::connect(srv.tcp()).unwrap();
        s.write_all(PARTIAL).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    srv.wait_for(10, "warm-up closed", |lp| lp.connection_count() == 0);
    let before = LIVE.load(Ordering::Relaxed);
    let idle_before = srv.stats().buffers_idle;
    let (mut ch, _out) = children(
        "partial_heads_hold_a_small_buffer_each",
        &srv.tcp().to_string(),
        true,
    );
    srv.wait_for(30, "10k connections", |lp| lp.connection_count() == N);
    // Every head has arrived (the server read them all): then it holds what it holds.
    let want = (N as u64) * PARTIAL.len() as u64;
    let t0 = std::time::Instant::now();
    while {
        let st = srv.stats();
        st.read + st.received < N as u64 && t0.elapsed() < std::time::Duration::from_secs(30)
    } {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let st = srv.stats();
    let after = LIVE.load(Ordering::Relaxed);
    let pool = (st.buffers_idle as isize - idle_before as isize) * DEFAULT_BUF_SIZE as isize;
    let per = (after - before - pool) as f64 / N as f64;
    println!(
        "heap per connection mid-head ({} bytes of {want} in): {per:.1} bytes; {st:?}",
        PARTIAL.len()
    );
    // A 1 KiB buffer, the connection's exchange and request: well under a 16 KiB block.
    assert!(
        per < 3072.0,
        "{per:.1} bytes of heap per connection mid-head"
    );
    drop(ch.stdin.take());
    assert!(ch.wait().unwrap().success());
    srv.wait_for(30, "connections closed", |lp| lp.connection_count() == 0);
}

#[test]
fn the_heap_comes_back_near_its_idle_size_after_large_requests() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let srv = http_server();
    let big = vec![b'x'; 16 << 20];
    let echo = |body: &[u8]| {
        let mut c = common::http::Client::connect(srv.tcp());
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        c.send(head.as_bytes());
        c.send(body);
        let r = c.read(false);
        assert_eq!((r.status, r.body.len()), (200, body.len()));
    };
    echo(b"warm");
    srv.wait_for(10, "closed", |lp| lp.connection_count() == 0);
    // The pool gives its unused blocks back within two seconds of idling.
    let settle = || {
        std::thread::sleep(std::time::Duration::from_millis(2500));
        LIVE.load(Ordering::Relaxed)
    };
    let idle = settle();
    let idle_blocks = srv.stats().buffers_idle;
    // One large echo, then four at once.
    echo(&big);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| echo(&big[..8 << 20]));
        }
    });
    srv.wait_for(10, "closed", |lp| lp.connection_count() == 0);
    let after = settle();
    let st = srv.stats();
    // The pool keeps up to its minimum of free blocks (64 of 16 KiB) after a burst: a fixed
    // cost, bounded whatever the requests were.
    let pool = (st.buffers_idle as isize - idle_blocks as isize) * DEFAULT_BUF_SIZE as isize;
    let kept = after - idle - pool;
    println!(
        "heap after 48 MiB of echoes: {kept} bytes above idle (+ {pool} B of pool blocks); {st:?}"
    );
    assert!(st.buffers_idle <= 64, "{st:?}");
    assert!(
        kept < 256 << 10,
        "{kept} bytes kept after the requests ended"
    );
}
