//! A client on a unix socket to a server on a loop in this thread: writes the input in
//! pieces, turning the loop between pieces until it is quiet, and collects everything the
//! server sends until it closes.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use myriad::{Addr, ListenOptions, Listener, Loop};

/// A unix socket path unique to this process and `name`.
pub fn socket_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("myriad-fuzz-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Binds a listener on `path`.
pub fn bind(path: &Path) -> Listener {
    Listener::bind(&Addr::Unix(path.to_owned()), &ListenOptions::default()).expect("bind")
}

/// What one connection's exchange gave.
pub struct Outcome {
    /// Every byte the server sent.
    pub output: Vec<u8>,
    /// Whether the server closed (EOF or reset) within the bound.
    pub closed: bool,
    /// Whether the server reset the connection (ECONNRESET on read or write).
    pub reset: bool,
}

/// Reads what is there; returns (bytes read, closed, reset).
fn drain(c: &mut UnixStream, out: &mut Vec<u8>) -> (usize, bool, bool) {
    let mut buf = [0u8; 16 * 1024];
    let mut got = 0;
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, true, false),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                got += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (got, false, false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, true, true),
        }
    }
}

/// Turns the loop (without blocking) and reads until neither side makes progress.
fn pump(lp: &mut Loop, c: &mut UnixStream, o: &mut Outcome) {
    let mut idle = 0;
    for _ in 0..10_000 {
        lp.run_once_nowait().expect("loop");
        let (n, closed, reset) = drain(c, &mut o.output);
        o.closed |= closed;
        o.reset |= reset;
        if o.closed {
            // Let the loop see the close too.
            lp.run_once_nowait().expect("loop");
            return;
        }
        let busy = lp.next_timeout() == Some(std::time::Duration::ZERO);
        if n == 0 && !busy {
            idle += 1;
            if idle >= 3 {
                return;
            }
        } else {
            idle = 0;
        }
    }
}

/// Connects to `path`, sends `pieces` one after another (the loop turned in between), then
/// half-closes and waits (boundedly) for the server to close.
pub fn exchange(lp: &mut Loop, path: &Path, pieces: &[&[u8]]) -> Outcome {
    let mut c = UnixStream::connect(path).expect("connect");
    c.set_nonblocking(true).unwrap();
    let mut o = Outcome {
        output: Vec::new(),
        closed: false,
        reset: false,
    };
    pump(lp, &mut c, &mut o);
    'send: for p in pieces {
        let mut p: &[u8] = p;
        while !p.is_empty() {
            if o.closed {
                break 'send;
            }
            match c.write(p) {
                Ok(n) => p = &p[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The server closed: what it sent is still to be read.
                Err(_) => {
                    o.reset = true;
                    break 'send;
                }
            }
            pump(lp, &mut c, &mut o);
        }
    }
    let _ = c.shutdown(std::net::Shutdown::Write);
    for _ in 0..100 {
        if o.closed {
            break;
        }
        pump(lp, &mut c, &mut o);
    }
    // Whatever was left in flight.
    let (_, closed, reset) = drain(&mut c, &mut o.output);
    o.closed |= closed;
    o.reset |= reset;
    drop(c);
    for _ in 0..4 {
        lp.run_once_nowait().expect("loop");
    }
    o
}
