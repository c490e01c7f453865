//! EMFILE: a server whose fd limit is lowered (in a child process) survives a burst of
//! connections beyond the limit without spinning, says so in its log (at most once a
//! second), and serves the waiting ones once others close.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MYRIAD_EMFILE_CHILD";

/// The child's logger: warnings and errors to stdout, one "LOG " line each.
struct Lines;

impl log::Log for Lines {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            println!("LOG {}", r.args());
        }
    }
    fn flush(&self) {}
}

/// Child: lower RLIMIT_NOFILE, serve echo, print the port, exit when stdin closes.
fn child() {
    let lim = libc::rlimit {
        rlim_cur: 48,
        rlim_max: 48,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    log::set_logger(&Lines).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let mut lp = myriad::Loop::new().unwrap();
    let l = myriad::Listener::bind(
        &"127.0.0.1:0".parse().unwrap(),
        &myriad::ListenOptions::default(),
    )
    .unwrap();
    println!("PORT {}", l.addr());
    lp.listen(l, |lp, a| {
        lp.add_conn(a, common::Echo);
    });
    lp.watch(0, myriad::Interest::READ, |lp, _, _| lp.stop())
        .unwrap();
    lp.run().unwrap();
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn emfile_burst_survives_and_recovers() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let mut ch = Command::new(std::env::current_exe().unwrap())
        .args([
            "emfile_burst_survives_and_recovers",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(ch.stdout.take().unwrap());
    let mut addr = None;
    for _ in 0..50 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // libtest may print "test NAME ... " on the same line first.
        if let Some(pos) = line.find("PORT ") {
            addr = Some(line[pos + 5..].trim().to_string());
            break;
        }
    }
    let addr = addr.expect("child printed its port");

    // A burst of 120 connections against a limit of 48 fds.
    let mut conns: Vec<TcpStream> = (0..120)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(format!("m{i:03}").as_bytes()).unwrap();
            s
        })
        .collect();
    // The first ones are served despite the burst.
    for (i, s) in conns.iter_mut().take(20).enumerate() {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, format!("m{i:03}").as_bytes());
    }
    // While over the limit, the server waits instead of spinning on accept.
    let t_over = Instant::now();
    let pid = ch.id();
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let spent = cpu_ticks(pid) - t0;
    assert!(
        spent < 30,
        "server burned {spent} ticks of CPU in 1 s while over its fd limit"
    );
    assert!(ch.try_wait().unwrap().is_none(), "server died");

    // Free fds: the connections waiting in the backlog are accepted and served.
    let rest = conns.split_off(60);
    drop(conns);
    let t = Instant::now();
    for (j, mut s) in rest.into_iter().enumerate() {
        let i = j + 60;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("connection {i} never served: {e}"));
        assert_eq!(&b, format!("m{i:03}").as_bytes());
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // And a brand-new connection works.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"new!").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"new!");

    drop(ch.stdin.take());
    let st = ch.wait().unwrap();
    assert!(st.success(), "child exited with {st}");
    // Out of fds for over a second: said, and not once per retry (every 100 ms).
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let said = rest
        .lines()
        .filter(|l| l.contains("LOG accept on") && l.contains("Too many open files"))
        .count();
    let secs = t_over.elapsed().as_secs() as usize;
    assert!(
        (1..=secs + 2).contains(&said),
        "{said} reports of EMFILE in {secs} s:\n{rest}"
    );
}
