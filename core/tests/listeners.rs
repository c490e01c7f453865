//! Listeners: Unix socket files (mode, stale replacement, never an unrelated file),
//! inherited fds, one listener per thread (SO_REUSEPORT) or one shared (EPOLLEXCLUSIVE),
//! and per-connection deadlines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use myriad::{Addr, Io, ListenOptions, Listener, Loop, Protocol};

fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("myriad-l-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn echo_once_unix(path: &std::path::Path) {
    let mut u = UnixStream::connect(path).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.write_all(b"abc").unwrap();
    let mut b = [0u8; 3];
    u.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abc");
}

#[test]
fn unix_socket_mode_stale_file_and_unrelated_file() {
    let dir = tempdir();
    let path = dir.join("s.sock");
    let addr = Addr::Unix(path.clone());

    // A stale socket file (nobody listening) is replaced.
    {
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(l); // std leaves the file behind
    }
    assert!(path.exists());
    let opts = ListenOptions {
        unix_mode: Some(0o600),
        ..Default::default()
    };
    let l = Listener::bind(&addr, &opts).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A live socket is not replaced.
    let e = Listener::bind(&addr, &opts)
        .err()
        .expect("second bind fails");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists());
    drop(l);
    assert!(!path.exists(), "our socket file removed on drop");

    // An unrelated file is never touched.
    std::fs::write(&path, b"precious").unwrap();
    let e = Listener::bind(&addr, &opts)
        .err()
        .expect("refuses a regular file");
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();

    // A socket file replaced by someone else is not removed when we go.
    let l = Listener::bind(&addr, &ListenOptions::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"theirs").unwrap();
    drop(l);
    assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inherited_fd_listener() {
    // A listening socket made elsewhere (as spawn-fcgi or systemd would pass it).
    let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_l.local_addr().unwrap().port();
    let fd = std::os::fd::IntoRawFd::into_raw_fd(std_l);
    let addr: Addr = format!("fd:{fd}").parse().unwrap();
    let srv = common::Server::start_with(&addr.to_string(), |lp, l| {
        lp.listen(l, |lp, a| {
            lp.add_conn(a, common::Echo);
        });
    });
    assert_eq!(srv.addr.to_string(), format!("fd:{fd}"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"inherited").unwrap();
    let mut b = [0u8; 9];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"inherited");
    drop(srv);

    // Not a socket, or not listening: refused with a clear error.
    let f = std::fs::File::open("/proc/self/status").unwrap();
    let e = Listener::bind(&Addr::Fd(f.as_raw_fd()), &ListenOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a socket"), "{e}");
    let c = TcpStream::connect(("127.0.0.1", port));
    assert!(c.is_err(), "listener closed with its server");
    let (a, _b) = UnixStream::pair().unwrap();
    let e = Listener::bind(&Addr::Fd(a.as_raw_fd()), &ListenOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a listening socket"), "{e}");
}

/// N loops on N threads; returns accepted counts per loop after `clients` connections.
fn serve_threads(addr: &str, n: usize, clients: usize, connect: impl Fn(&Addr)) -> Vec<u64> {
    let ls = Listener::bind_many(&addr.parse().unwrap(), n, &ListenOptions::default()).unwrap();
    assert_eq!(ls.len(), n);
    let bound = ls[0].addr().clone();
    if let Addr::Tcp(_) = bound {
        assert!(
            ls.iter().all(|l| l.addr() == &bound),
            "same port on every thread"
        );
    }
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = ls
        .into_iter()
        .map(|l| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut lp = Loop::new().unwrap();
                lp.listen(l, |lp, a| {
                    lp.add_conn(a, common::Echo);
                });
                tx.send(lp.handle()).unwrap();
                lp.run().unwrap();
                lp.stats().accepted
            })
        })
        .collect();
    let handles: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
    for _ in 0..clients {
        connect(&bound);
    }
    for h in &handles {
        h.stop();
    }
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn one_listener_per_thread_with_reuseport() {
    let counts = serve_threads("127.0.0.1:0", 2, 200, |a| {
        let Addr::Tcp(sa) = a else { unreachable!() };
        let mut s = TcpStream::connect(sa).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    });
    assert_eq!(counts.iter().sum::<u64>(), 200);
    // The kernel hashes connections over both sockets (all 200 on one: p = 2^-199).
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
}

#[test]
fn shared_unix_listener_with_exclusive_wakeups() {
    let dir = tempdir();
    let path = dir.join("shared.sock");
    let p2 = path.clone();
    let counts = serve_threads(&format!("unix:{}", path.display()), 2, 100, move |_| {
        echo_once_unix(&p2)
    });
    assert_eq!(counts.iter().sum::<u64>(), 100);
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Closes the connection when its deadline passes; writes "late" first.
struct Deadline {
    ms: u64,
    fired: Option<mpsc::Sender<Duration>>,
    start: Instant,
}

impl Protocol for Deadline {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        // Every byte pushes the deadline back (an idle timeout).
        self.start = Instant::now();
        io.set_deadline(Some(Instant::now() + Duration::from_millis(self.ms)));
        input.len()
    }
    fn on_timeout(&mut self, io: &mut Io<'_>) {
        if let Some(tx) = self.fired.take() {
            tx.send(self.start.elapsed()).unwrap();
        }
        io.write(b"late");
        io.close();
    }
}

#[test]
fn connection_deadline_moves_lazily_and_fires() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let srv = common::Server::start_with("127.0.0.1:0", move |lp, l| {
        let tx = tx.lock().unwrap().take().unwrap();
        lp.listen(l, move |lp, a| {
            lp.add_conn(
                a,
                Deadline {
                    ms: 60,
                    fired: Some(tx.clone()),
                    start: Instant::now(),
                },
            );
        });
    });
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    // Keep it alive past several deadlines by sending every 20 ms.
    for _ in 0..6 {
        s.write_all(b".").unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    let idle = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(idle >= Duration::from_millis(60), "fired early: {idle:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(160),
        "deadline was not pushed back"
    );
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"late", "output written before the close");
    // Six deadline moves and one expiry cost no syscall: the only "other" is the shutdown(2)
    // of the lingering close (the client has not closed yet, so neither have we).
    let st = srv.stats();
    assert_eq!(st.other, 1, "{st:?}");
}

/// One rule for one thread and several: a TCP port somebody listens on is refused with
/// EADDRINUSE unless both sides ask for sharing (`reuseport`), so a second instance never
/// silently takes half of the first one's connections.
#[test]
fn a_port_is_shared_only_when_asked_for() {
    let shared = ListenOptions {
        reuseport: true,
        ..Default::default()
    };
    // Held by a socket of ours with SO_REUSEPORT (another instance with --threads 2).
    let first = Listener::bind_many(&"127.0.0.1:0".parse().unwrap(), 2, &shared).unwrap();
    let addr = first[0].addr().clone();
    for n in [1, 2, 4] {
        let e = Listener::bind_many(&addr, n, &ListenOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{n} threads joined a foreign reuseport group"));
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{n} threads: {e}");
    }
    // Asked for on both sides: shared.
    let second = Listener::bind_many(&addr, 2, &shared).unwrap();
    assert_eq!(second[0].addr(), &addr);
    drop((first, second));
    // Held by a plain socket (not ours): refused whatever the count.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Addr = plain.local_addr().unwrap().to_string().parse().unwrap();
    for n in [1, 2] {
        for o in [ListenOptions::default(), shared.clone()] {
            let e = Listener::bind_many(&addr, n, &o)
                .err()
                .expect("bind succeeded");
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        }
    }
    drop(plain);
    // Free again: several threads bind it (the probe is gone before they bind).
    assert_eq!(
        Listener::bind_many(&addr, 3, &ListenOptions::default())
            .unwrap()
            .len(),
        3
    );
}

/// A Unix socket's mode and group from the listener options (as `?mode=&group=` gives).
#[test]
fn unix_socket_mode_and_group() {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::temp_dir().join(format!("myriad-lt-mode-{}.sock", std::process::id()));
    let (addr, o) = myriad::parse_listen(&format!(
        "unix:{}?mode=0660&group={}",
        path.display(),
        // SAFETY: getgid has no preconditions.
        unsafe { libc::getgid() }
    ))
    .unwrap();
    let l = Listener::bind(&addr, &o).unwrap();
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.mode() & 0o777, 0o660);
    // SAFETY: as above.
    assert_eq!(md.gid(), unsafe { libc::getgid() });
    drop(l);
    assert!(!path.exists());
}
