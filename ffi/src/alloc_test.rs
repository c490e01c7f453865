//! The C ABI's request path allocates nothing once warmed up: a counting global allocator
//! (this crate's unit-test binary only) counts the loop thread's allocations while a C-style
//! handler answers keep-alive requests through the exported functions. Also here, since it
//! needs the same harness: pooled handles are not reused right after their finish.

use std::ffi::{c_char, c_int, c_void};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use crate::*;

#[path = "../../core/tests/support/counting.rs"]
mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

/// The allocation counter is one for every counted thread: the tests of this module run one
/// at a time, or one test's loop thread would count into another's window.
static SERIAL: Mutex<()> = Mutex::new(());

/// The demo's "/" route, through the same calls as examples/hello.c.
unsafe extern "C" fn hello(req: *mut myriad_req_t, _ud: *mut c_void) {
    let (mut m, mut ml, mut p, mut pl) = (std::ptr::null(), 0, std::ptr::null(), 0);
    // SAFETY: `req` is the live handle the server passed; the strings are in scope.
    unsafe {
        assert_eq!(myriad_req_method(req, &mut m, &mut ml), MYRIAD_OK);
        assert_eq!(myriad_req_path(req, &mut p, &mut pl), MYRIAD_OK);
        assert_eq!(std::slice::from_raw_parts(p.cast::<u8>(), pl), b"/");
        let (n, v) = ("Content-Type", "text/plain");
        let rc = myriad_req_header_add(req, n.as_ptr().cast(), n.len(), v.as_ptr().cast(), 10);
        assert_eq!(rc, MYRIAD_OK);
        assert_eq!(
            myriad_req_write_static(req, b"Hello, World!".as_ptr(), 13),
            MYRIAD_OK
        );
        assert_eq!(myriad_req_finish(req), MYRIAD_OK);
    }
}

/// Sends `n` requests one at a time on `s` and reads each response whole.
fn exchange(s: &mut TcpStream, n: usize) {
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"Hello, World!") {
            let k = s.read(&mut buf).unwrap();
            assert!(
                k > 0,
                "server closed after {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..k]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

/// Serves with `handler` on `backend`; sends `warm` requests, then `n` counted ones.
/// Returns the allocations seen during the warm-up and during the counted requests.
fn serve_counting(
    backend: &str,
    handler: unsafe extern "C" fn(*mut myriad_req_t, *mut c_void),
    warm: usize,
    n: usize,
) -> (u64, u64) {
    let (tx, rx) = mpsc::channel();
    let backend = backend.to_string();
    let t = std::thread::spawn(move || {
        // SAFETY: the C API used as a C program would, on this thread only.
        unsafe {
            let mut lp = std::ptr::null_mut();
            let rc = myriad_loop_new_backend(&mut lp, backend.as_ptr().cast(), backend.len());
            assert_eq!(rc, MYRIAD_OK);
            let mut srv = std::ptr::null_mut();
            assert_eq!(myriad_server_new(&mut srv), MYRIAD_OK);
            let a = "127.0.0.1:0";
            assert_eq!(
                myriad_server_listen(srv, MYRIAD_HTTP, a.as_ptr().cast(), a.len()),
                0
            );
            let rc = myriad_server_set_handler(srv, Some(handler), std::ptr::null_mut(), None);
            assert_eq!(rc, MYRIAD_OK);
            assert_eq!(myriad_server_start(srv, lp), MYRIAD_OK);
            let mut addr = [0 as c_char; 128];
            let n =
                myriad_server_listener_addr(srv, 0, std::ptr::null_mut(), addr.as_mut_ptr(), 128);
            let addr = std::slice::from_raw_parts(addr.as_ptr().cast::<u8>(), n as usize);
            tx.send((String::from_utf8(addr.to_vec()).unwrap(), lp as usize))
                .unwrap();
            counting::count_this_thread(true);
            assert_eq!(myriad_loop_run(lp), MYRIAD_OK);
            counting::count_this_thread(false);
            myriad_server_free(srv);
            myriad_loop_free(lp);
        }
    });
    let (addr, lp) = rx.recv().unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    exchange(&mut s, warm);
    let before = counting::allocs();
    exchange(&mut s, n);
    let after = counting::allocs();
    drop(s);
    // SAFETY: the loop is alive until its thread returns; stop is thread-safe.
    let rc = unsafe { myriad_loop_stop(lp as *const myriad_loop_t) };
    assert_eq!(rc, MYRIAD_OK);
    t.join().unwrap();
    (before, after - before)
}

#[test]
fn c_handler_requests_make_zero_allocations_after_warm_up() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for backend in ["epoll", "io_uring"] {
        let (warm, n) = serve_counting(backend, hello, 200, 1000);
        assert!(warm > 0, "{backend}: the counter saw the warm-up");
        assert_eq!(n, 0, "{backend}: allocations over 1000 warmed-up requests");
    }
}

/// The router the `routed` handler dispatches through (built once per test).
static ROUTER: AtomicUsize = AtomicUsize::new(0);
static HOOKED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn count_hook(_req: *mut myriad_req_t, _ud: *mut c_void) -> c_int {
    HOOKED.fetch_add(1, Ordering::Relaxed);
    0
}

/// A server handler dispatching through ROUTER (as examples/hello.c does).
unsafe extern "C" fn routed(req: *mut myriad_req_t, _ud: *mut c_void) {
    let r = ROUTER.load(Ordering::Relaxed) as *const myriad_router_t;
    // SAFETY: the router outlives the server; `req` is live.
    assert_eq!(unsafe { myriad_router_dispatch(r, req) }, MYRIAD_OK);
}

#[test]
fn routed_requests_make_zero_allocations_after_warm_up() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the C API used as a C program would.
    unsafe {
        let mut r = std::ptr::null_mut();
        assert_eq!(myriad_router_new(&mut r), MYRIAD_OK);
        for (m, p) in [
            ("GET", "/"),
            ("GET", "/users/:id"),
            ("POST", "/users/:id"),
            ("GET", "/s/*p"),
        ] {
            let rc = myriad_router_add(
                r,
                m.as_ptr().cast(),
                m.len(),
                p.as_ptr().cast(),
                p.len(),
                Some(hello),
                std::ptr::null_mut(),
                None,
            );
            assert_eq!(rc, MYRIAD_OK);
        }
        assert_eq!(
            myriad_router_before(r, Some(count_hook), std::ptr::null_mut(), None),
            MYRIAD_OK
        );
        ROUTER.store(r as usize, Ordering::Relaxed);
        for backend in ["epoll", "io_uring"] {
            let (_, n) = serve_counting(backend, routed, 200, 1000);
            assert_eq!(
                n, 0,
                "{backend}: allocations over 1000 warmed-up routed requests"
            );
        }
        assert_eq!(
            HOOKED.load(Ordering::Relaxed),
            2 * 1200,
            "the hook ran for every request"
        );
        myriad_router_free(r);
    }
}

/// The first request's handle, and what using it in later requests returned.
static FIRST: AtomicUsize = AtomicUsize::new(0);
static PROBES: AtomicUsize = AtomicUsize::new(0);
static PROBE_NOT_GONE: AtomicI32 = AtomicI32::new(0);

/// Answers like `hello`; from the second request on, first calls an accessor on the first
/// request's handle, finished since (a C bug the pool must not turn into acting on this
/// request).
unsafe extern "C" fn stale_probe(req: *mut myriad_req_t, ud: *mut c_void) {
    let first = FIRST.load(Ordering::Relaxed);
    if first == 0 {
        FIRST.store(req as usize, Ordering::Relaxed);
    } else {
        PROBES.fetch_add(1, Ordering::Relaxed);
        let (mut m, mut ml) = (std::ptr::null(), 0);
        // SAFETY: the stale handle's memory is kept by the server's pool (this is the
        // behaviour under test); only the pool's bookkeeping is read.
        let rc = unsafe { myriad_req_method(first as *mut myriad_req_t, &mut m, &mut ml) };
        if rc != MYRIAD_EGONE {
            PROBE_NOT_GONE.store(if rc == 0 { 1 } else { rc }, Ordering::Relaxed);
        }
    }
    // SAFETY: forwarded.
    unsafe { hello(req, ud) }
}

#[test]
fn finished_handles_wait_before_reuse() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // One connection, one request at a time: each handle is finished before the next
    // request starts, so reusing the latest freed one would hand out the first request's
    // handle again at once.
    serve_counting("epoll", stale_probe, 1, 50);
    assert_eq!(
        PROBES.load(Ordering::Relaxed),
        50,
        "every later request probed"
    );
    assert_eq!(
        PROBE_NOT_GONE.load(Ordering::Relaxed),
        0,
        "a finished handle answered other than MYRIAD_EGONE within 50 requests"
    );
}
