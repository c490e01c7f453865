//! A warmed-up server answers a hello-world request with zero heap allocations on its loop
//! thread (counting global allocator, counting only the loop's thread).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

#[test]
fn hello_world_makes_zero_allocations_after_warm_up() {
    // One test, not two: the counter is global and another test's server teardown would
    // land in this one's window.
    zero_allocations(myriad::ServerOptions::default());
    // With an access log too.
    let p = std::env::temp_dir().join(format!("myriad-alloc-{}.log", std::process::id()));
    let log = myriad::AccessLog::file(&p, None).unwrap();
    zero_allocations(myriad::ServerOptions {
        access_log: Some(log.clone()),
        ..Default::default()
    });
    // 1,200 lines of about 60 bytes: the buffer was written at least once on the way.
    assert!(log.stats().writes >= 1);
    std::fs::remove_file(&p).unwrap();
}

fn zero_allocations(opts: myriad::ServerOptions) {
    let srv = common::Server::start_with("127.0.0.1:0", |lp, l| {
        let s = lp.server(opts, |_, req, mut res| {
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
        counting::count_this_thread(true);
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
    let before = counting::allocs();
    for _ in 0..1000 {
        roundtrip(&mut s);
    }
    let after = counting::allocs();
    assert_eq!(
        after - before,
        0,
        "{} allocations for 1000 requests",
        after - before
    );
}
