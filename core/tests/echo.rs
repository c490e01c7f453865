//! A TCP echo server on the loop: correctness under 1,000 concurrent connections, and the
//! loop's syscall claims (register once; one read and one write per keep-alive message).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Server;

fn exchange(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn thousand_connections_register_once_and_cost_one_read_one_write() {
    let srv = Server::start("127.0.0.1:0");
    let addr = srv.tcp();
    let mut conns: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    // All 1,000 concurrently open; every one echoes a distinct message.
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(format!("hello {i:04}\n").as_bytes()).unwrap();
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let want = format!("hello {i:04}\n");
        let mut back = vec![0u8; want.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, want.as_bytes(), "connection {i}");
    }
    srv.wait_for(10, "1000 connections", |lp| lp.connection_count() == 1000);
    let st = srv.stats();
    assert_eq!(st.accepted, 1000);
    // Register once: one epoll_ctl per accepted connection, plus the listener, plus the
    // loop's own eventfd (registered when the loop was created). io_uring submits its
    // registrations with its waits: no syscall at all.
    let uring = srv.backend() == "io_uring";
    assert_eq!(
        st.ctl,
        if uring { 0 } else { st.accepted + 1 + 1 },
        "epoll_ctl calls must equal accepted connections + listeners: {st:?}"
    );

    // Keep-alive exchange: each message costs exactly one read and one write. On io_uring
    // (6.0+) the read is a receive completion, no syscall: not one recv call.
    let before = srv.stats();
    for (i, s) in conns.iter_mut().enumerate() {
        exchange(s, format!("again {i:04}").as_bytes());
    }
    let after = srv.stats();
    let (syscalls, ring) = (after.read - before.read, after.received - before.received);
    let want = if srv.receives() { (0, 1000) } else { (1000, 0) };
    assert_eq!((syscalls, ring), want, "reads: {before:?} -> {after:?}");
    assert_eq!(
        after.write - before.write,
        1000,
        "writes: {before:?} -> {after:?}"
    );
    assert_eq!(after.ctl, before.ctl, "no epoll_ctl after registration");
    assert_eq!(after.accept, before.accept);

    // Idle keep-alive connections hold no buffers.
    assert_eq!(
        after.buffers_in_use, 0,
        "idle connections hold buffers: {after:?}"
    );

    // Clients closing: the server sees EOF and closes every connection.
    drop(conns);
    srv.wait_for(10, "connections closed", |lp| lp.connection_count() == 0);
    let st = srv.stop();
    assert_eq!(st.ctl - before.ctl, 0, "close needs no epoll_ctl");
}

#[test]
fn large_message_is_echoed_whole_across_partial_writes() {
    let srv = Server::start("127.0.0.1:0");
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let d2 = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d2).unwrap());
    // Read only later, so that the server's socket buffer fills and its writes come up short
    // (on epoll: until the loop has added the write interest, however late a loaded
    // machine runs it).
    std::thread::sleep(Duration::from_millis(200));
    if srv.backend() != "io_uring" {
        srv.wait_for(10, "a short write", |lp| lp.stats().ctl >= 4);
    }
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo differs");
    let st = srv.stats();
    // Backpressure bounded the queue: reading paused instead of buffering 8 MB.
    assert!(st.buffers_in_use <= 1, "{st:?}");
    // Write interest is added once, at the first short write, however often it blocks
    // after that: registration, the listener, the loop's eventfd, plus that one change.
    // (On io_uring these changes ride in the waits.)
    let want = if srv.backend() == "io_uring" {
        0
    } else {
        st.accepted + 1 + 1 + 1
    };
    assert_eq!(st.ctl, want, "{st:?}");
}

#[test]
fn a_peer_reading_over_a_unix_socket_does_not_wake_the_loop() {
    // On a Unix socket every read by the peer frees space and signals writability. A
    // connection registered for writes from the start would wake the loop once more per
    // exchange for that edge; one registered for reads only wakes once, for the message.
    let dir = tempdir();
    let path = format!("{dir}/wake.sock");
    let srv = Server::start(&format!("unix:{path}"));
    let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut back = [0u8; 8];
    u.write_all(b"warm-up!").unwrap();
    u.read_exact(&mut back).unwrap();
    let before = srv.stats();
    let n = 100;
    for i in 0..n {
        let msg = format!("msg {i:04}");
        u.write_all(msg.as_bytes()).unwrap();
        u.read_exact(&mut back).unwrap();
        assert_eq!(&back, msg.as_bytes());
        // Let the loop go back to sleep: an edge from our read would wake it on its own.
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let any write edge from the last read arrive before counting.
    std::thread::sleep(Duration::from_millis(50));
    let after = srv.stats();
    let waits = after.wait - before.wait;
    // On io_uring each exchange takes two enters: the wait that reports the message, and
    // the one that submits the answer (its completion is posted at once, so that enter
    // returns without sleeping; under load it is also the next wait). A write edge would
    // add a third.
    let per = if srv.backend() == "io_uring" { 2 } else { 1 };
    assert!(
        waits <= per * n + 5,
        "{waits} loop wakeups for {n} exchanges: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.ctl, before.ctl,
        "no interest change without a short write"
    );
    drop(u);
    srv.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ipv6_and_unix_listeners_echo() {
    let srv = Server::start("[::1]:0");
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    exchange(&mut s, b"over v6");
    drop(srv);

    let dir = tempdir();
    let path = format!("{dir}/echo.sock");
    let srv = Server::start(&format!("unix:{path}"));
    let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
    u.write_all(b"over unix").unwrap();
    let mut back = [0u8; 9];
    u.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over unix");
    drop(u);
    srv.stop();
    assert!(
        !std::path::Path::new(&path).exists(),
        "socket file removed on close"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the system temp dir.
fn tempdir() -> String {
    let d = std::env::temp_dir().join(format!(
        "myriad-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d.to_string_lossy().into_owned()
}
