//! A WebSocket load client for bench/ws/run, on myriad's own loop (one thread): it measures
//! the *server's* CPU time per message from /proc/PID/stat (utime + stime) over the run.
//!
//!   ws_load echo  HOST:PORT PID CONNS SECONDS [DEPTH] # 32-byte text messages, DEPTH (1)
//!                                                    # in flight per connection, to /ws
//!   ws_load bcast HOST:PORT PID SUBS SECONDS        # SUBS connections to /sub; one more
//!                                                    # sends "pub:" + 64 bytes, the server
//!                                                    # publishes it to all; next round once
//!                                                    # every subscriber got it
//!   ws_load idle  HOST:PORT PID CONNS PATH          # CONNS idle connections (WebSocket to
//!                                                    # PATH, or HTTP keep-alive with PATH
//!                                                    # "http:/..."): the server's RSS growth
//!
//! Prints one line of `key=value` figures.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use myriad::ws::frame::{apply_mask, parse_head, write_head, MAX_HEAD, OP_TEXT};
use myriad::{Addr, ConnOptions, Io, Loop, Protocol, Token};

/// utime + stime of process `pid`, in seconds.
fn cpu_of(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server's /proc/PID/stat");
    let rest = &s[s.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 (utime, stime), counted from after the command.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn client_frame(payload: &[u8]) -> Vec<u8> {
    let key = [0x5a, 0x17, 0xc3, 0x09];
    let mut h = [0u8; MAX_HEAD];
    let n = write_head(
        &mut h,
        true,
        false,
        OP_TEXT,
        payload.len() as u64,
        Some(key),
    );
    let mut v = h[..n].to_vec();
    let mut p = payload.to_vec();
    apply_mask(&mut p, key, 0);
    v.extend(p);
    v
}

#[derive(Default)]
struct Shared {
    open: Cell<usize>,
    received: Cell<u64>,
    rounds: Cell<u64>,
    subs: Cell<usize>,
    publisher: Cell<Option<Token>>,
    frame: RefCell<Vec<u8>>,
    depth: Cell<usize>,
    failed: Cell<bool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Echo,
    Sub,
    Pub,
    Idle,
    HttpIdle,
}

struct Client {
    role: Role,
    path: String,
    sh: Rc<Shared>,
    upgraded: bool,
}

impl Protocol for Client {
    fn on_connect(&mut self, io: &mut Io<'_>) {
        if self.role == Role::HttpIdle {
            io.write(format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", self.path).as_bytes());
            return;
        }
        io.write(
            format!(
                "GET {} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                self.path
            )
            .as_bytes(),
        );
    }

    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        let mut at = 0;
        if !self.upgraded {
            let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
                return 0;
            };
            let ok = if self.role == Role::HttpIdle {
                input.starts_with(b"HTTP/1.1 200")
            } else {
                input.starts_with(b"HTTP/1.1 101")
            };
            if !ok {
                self.sh.failed.set(true);
            }
            self.upgraded = true;
            self.sh.open.set(self.sh.open.get() + 1);
            if self.role == Role::HttpIdle {
                // The body (short) is left to be consumed below as opaque bytes.
                return input.len();
            }
            at = end + 4;
            match self.role {
                Role::Echo => {
                    for _ in 0..self.sh.depth.get() {
                        io.write(&self.sh.frame.borrow());
                    }
                }
                Role::Pub => self.sh.publisher.set(Some(io.token())),
                _ => {}
            }
        }
        loop {
            let Ok(Some((h, n))) = parse_head(&input[at..], false, false, 1 << 20) else {
                return at;
            };
            if input.len() - at < n + h.len as usize {
                return at;
            }
            at += n + h.len as usize;
            if h.opcode != OP_TEXT {
                continue;
            }
            self.sh.received.set(self.sh.received.get() + 1);
            match self.role {
                Role::Echo => io.write(&self.sh.frame.borrow()),
                Role::Sub => {
                    let subs = self.sh.subs.get() as u64;
                    if self.sh.received.get() == subs * (self.sh.rounds.get() + 1) {
                        self.sh.rounds.set(self.sh.rounds.get() + 1);
                        if let Some(p) = self.sh.publisher.get() {
                            let f = self.sh.frame.borrow().clone();
                            io.lp().with_conn::<Client, ()>(p, |_, io| io.write(&f));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn on_close(&mut self, _: &mut Loop, _: Token, err: Option<&std::io::Error>) {
        if err.is_some() {
            self.sh.failed.set(true);
        }
    }
}

fn connect(lp: &mut Loop, addr: &Addr, role: Role, path: &str, sh: &Rc<Shared>) {
    let c = Client {
        role,
        path: path.to_string(),
        sh: sh.clone(),
        upgraded: false,
    };
    lp.connect(
        addr,
        Some(Duration::from_secs(10)),
        ConnOptions::default(),
        c,
    )
    .expect("connect");
}

/// Runs the loop until `done` or `secs` pass.
fn run_until(lp: &mut Loop, secs: f64, done: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while !done() && Instant::now() < end {
        lp.run_once().expect("loop");
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: ws_load echo|bcast|idle HOST:PORT PID N SECONDS|PATH");
        std::process::exit(2);
    }
    let addr: Addr = a[2].parse().expect("address");
    let pid: u32 = a[3].parse().expect("pid");
    let n: usize = a[4].parse().expect("count");
    let mut lp = Loop::new().expect("loop");
    // A tick, so that run_once returns at least every 20 ms.
    let tick = Duration::from_millis(20);
    lp.repeat(tick, tick, |_, _| {});
    let sh = Rc::new(Shared::default());
    match a[1].as_str() {
        "echo" => {
            let secs: f64 = a[5].parse().unwrap();
            let depth: usize = a.get(6).map_or(1, |d| d.parse().expect("depth"));
            sh.depth.set(depth);
            *sh.frame.borrow_mut() = client_frame(&[b'e'; 32]);
            for _ in 0..n {
                connect(&mut lp, &addr, Role::Echo, "/ws", &sh);
            }
            run_until(&mut lp, 10.0, || sh.open.get() == n);
            assert_eq!(sh.open.get(), n, "connections open");
            let (m0, c0, t0) = (sh.received.get(), cpu_of(pid), Instant::now());
            run_until(&mut lp, secs, || false);
            let (m, cpu, t) = (
                sh.received.get() - m0,
                cpu_of(pid) - c0,
                t0.elapsed().as_secs_f64(),
            );
            println!(
                "mode=echo conns={n} depth={depth} messages={m} seconds={t:.2} msgs_per_s={:.0} server_cpu_s={cpu:.3} server_us_per_msg={:.3} failed={}",
                m as f64 / t,
                cpu * 1e6 / m as f64,
                sh.failed.get()
            );
        }
        "bcast" => {
            let secs: f64 = a[5].parse().unwrap();
            let mut payload = b"pub:".to_vec();
            payload.extend_from_slice(&[b'b'; 64]);
            *sh.frame.borrow_mut() = client_frame(&payload);
            sh.subs.set(n);
            for i in 0..n {
                connect(&mut lp, &addr, Role::Sub, "/sub", &sh);
                if i % 500 == 499 {
                    run_until(&mut lp, 0.05, || false);
                }
            }
            run_until(&mut lp, 30.0, || sh.open.get() == n);
            assert_eq!(sh.open.get(), n, "subscribers open");
            connect(&mut lp, &addr, Role::Pub, "/ws", &sh);
            run_until(&mut lp, 10.0, || sh.publisher.get().is_some());
            // (The server subscribes each on open; give the last ones a moment.)
            run_until(&mut lp, 0.5, || false);
            let (c0, t0) = (cpu_of(pid), Instant::now());
            let f = sh.frame.borrow().clone();
            let p = sh.publisher.get().unwrap();
            lp.with_conn::<Client, ()>(p, |_, io| io.write(&f));
            run_until(&mut lp, secs, || false);
            let (rounds, got) = (sh.rounds.get(), sh.received.get());
            let (cpu, t) = (cpu_of(pid) - c0, t0.elapsed().as_secs_f64());
            println!(
                "mode=bcast subs={n} rounds={rounds} delivered={got} seconds={t:.2} deliveries_per_s={:.0} server_cpu_s={cpu:.3} server_us_per_delivery={:.4} failed={}",
                got as f64 / t,
                cpu * 1e6 / got.max(1) as f64,
                sh.failed.get()
            );
        }
        "idle" => {
            let path = &a[5];
            let (role, path) = match path.strip_prefix("http:") {
                Some(p) => (Role::HttpIdle, p),
                None => (Role::Idle, path.as_str()),
            };
            run_until(&mut lp, 0.3, || false);
            let r0 = rss_kb(pid);
            for i in 0..n {
                connect(&mut lp, &addr, role, path, &sh);
                if i % 500 == 499 {
                    run_until(&mut lp, 0.05, || false);
                }
            }
            run_until(&mut lp, 30.0, || sh.open.get() == n);
            run_until(&mut lp, 1.0, || false);
            let r1 = rss_kb(pid);
            println!(
                "mode=idle kind={} conns={} open={} rss_before_kb={r0} rss_after_kb={r1} bytes_per_conn={:.0} failed={}",
                if role == Role::HttpIdle { "http" } else { "ws" },
                n,
                sh.open.get(),
                (r1.saturating_sub(r0) * 1024) as f64 / n as f64,
                sh.failed.get()
            );
        }
        m => panic!("unknown mode {m}"),
    }
}
