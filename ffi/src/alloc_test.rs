//! The C ABI's request path allocates nothing once warmed up: a counting global allocator
//! (this crate's unit-test binary only) counts the loop thread's allocations while a C-style
//! handler answers keep-alive requests through the exported functions.

use std::ffi::{c_char, c_void};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use crate::*;

#[path = "../../core/tests/support/counting.rs"]
mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

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

fn serve_counting(backend: &str) -> (u64, u64) {
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
            let rc = myriad_server_set_handler(srv, Some(hello), std::ptr::null_mut(), None);
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
    exchange(&mut s, 200);
    let before = counting::allocs();
    exchange(&mut s, 1000);
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
    for backend in ["epoll", "io_uring"] {
        let (warm, n) = serve_counting(backend);
        assert!(warm > 0, "{backend}: the counter saw the warm-up");
        assert_eq!(n, 0, "{backend}: allocations over 1000 warmed-up requests");
    }
}
