//! The loop's pool of 16 KiB blocks under bursts, on both backends: a burst like one already
//! served allocates no new blocks. On io_uring every connection answered in an iteration
//! holds its output block until the completions are reaped; a pool that kept only 64 free
//! blocks freed and allocated (zeroed) the rest again at every such burst.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{Echo, Server};
use myriad::net::DEFAULT_BUF_SIZE;

struct Counting;

/// Allocations of pool blocks.
static BLOCKS: AtomicUsize = AtomicUsize::new(0);
/// Blocks allocated and not freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A pool block: `DEFAULT_BUF_SIZE` bytes (the loop's event buffer has that size too, but
/// an alignment of 8).
fn is_block(l: &Layout) -> bool {
    l.size() == DEFAULT_BUF_SIZE && l.align() == 1
}

fn count(l: &Layout) {
    if is_block(l) {
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(&l);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(&l);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if is_block(&l) {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const CONNS: usize = 200;

/// Writes a message on every connection while the loop is held in a posted callback, so
/// that one iteration answers them all; then reads every echo.
fn burst(srv: &Server, conns: &mut [TcpStream]) {
    let (tx, rx) = mpsc::channel::<()>();
    srv.handle
        .post(move |_| {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        })
        .expect("post");
    for c in conns.iter_mut() {
        c.write_all(b"ping").unwrap();
    }
    // Give the last segments time to land before the loop looks.
    std::thread::sleep(Duration::from_millis(50));
    tx.send(()).unwrap();
    for (i, c) in conns.iter_mut().enumerate() {
        let mut b = [0u8; 4];
        c.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(&b, b"ping");
    }
}

#[test]
fn a_repeated_burst_allocates_no_new_blocks() {
    for backend in ["epoll", "io_uring"] {
        let base = LIVE.load(Ordering::Relaxed);
        let srv = Server::start_on(backend, "127.0.0.1:0", |lp, l| {
            lp.listen(l, |lp, a| {
                lp.add_conn(a, Echo);
            });
        });
        let mut conns: Vec<TcpStream> = (0..CONNS)
            .map(|_| {
                let c = TcpStream::connect(srv.tcp()).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            })
            .collect();
        srv.wait_for(5, "all accepted", |lp| lp.connection_count() == CONNS);
        burst(&srv, &mut conns);
        let kept = srv.stats().buffers_idle;
        let before = BLOCKS.load(Ordering::Relaxed);
        burst(&srv, &mut conns);
        let allocated = BLOCKS.load(Ordering::Relaxed) - before;
        // Left idle (nothing polls it: the count is read from this thread), the loop frees
        // the blocks no longer used within about two seconds, down to the 64 it keeps.
        let t = std::time::Instant::now();
        while LIVE.load(Ordering::Relaxed) > 64 + base && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let live = LIVE.load(Ordering::Relaxed);
        assert!(
            live <= 64,
            "{backend}: {live} blocks still allocated after {:?}",
            t.elapsed()
        );
        let st = srv.stop();
        eprintln!("{backend}: {kept} blocks kept after the first burst, {allocated} allocated by the second; {st:?}");
        assert!(
            allocated <= 8,
            "{backend}: the second burst allocated {allocated} blocks ({kept} kept)"
        );
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}
