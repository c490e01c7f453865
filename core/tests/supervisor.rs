//! The supervisor with real processes and real signals: the Rust demo (examples/hello.rs)
//! with --workers, loaded by tests/load.py (keep-alive, one retry of a request whose idle
//! connection was closed before any response byte, failures counted).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// One scenario at a time: each starts processes and load of its own.
static SERIAL: Mutex<()> = Mutex::new(());

fn hello() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/hello");
    assert!(
        p.exists(),
        "{} not built (cargo test builds examples)",
        p.display()
    );
    p
}

fn load_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/load.py")
}

struct Sup {
    child: Child,
    http: String,
    status: String,
    err: PathBuf,
}

impl Sup {
    fn start(bin: &Path, args: &[&str]) -> Sup {
        let err = std::env::temp_dir().join(format!(
            "myriad-sup-{}-{}.err",
            std::process::id(),
            rand_u32()
        ));
        let mut child = Command::new(bin)
            .args(args)
            .args(["--http", "127.0.0.1:0", "--status", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut http, mut status) = (String::new(), String::new());
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let mut w = line.split_whitespace().skip(1);
            match (w.next(), w.next()) {
                (Some("http"), Some(a)) => http = a.to_string(),
                (Some("status"), Some(a)) => status = a.to_string(),
                _ => panic!("unexpected line {line:?}"),
            }
        }
        // Keep reading stdout (nothing more is expected) so that the pipe never fills.
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        let s = Sup {
            child,
            http,
            status,
            err,
        };
        s.wait_workers(usize::MAX, Duration::from_secs(5));
        s
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with integers.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    fn status_json(&self) -> String {
        get(&self.status, "/status").1
    }

    /// (pid, state) of each worker.
    fn workers(&self) -> Vec<(i32, String)> {
        workers_of(&self.status_json())
    }

    /// Waits until `n` workers (usize::MAX: the pool's "total processes") are idle or busy.
    fn wait_workers(&self, n: usize, within: Duration) -> Vec<(i32, String)> {
        let t0 = Instant::now();
        loop {
            let j = self.status_json();
            let w = workers_of(&j);
            let serving = w.iter().filter(|w| w.1 == "idle" || w.1 == "busy").count();
            let want = if n == usize::MAX { w.len().max(1) } else { n };
            if serving == want && w.len() == want {
                return w;
            }
            assert!(t0.elapsed() < within, "workers not ready: {j}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 15 s).
    fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "supervisor did not stop"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.err);
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u32
}

fn workers_of(j: &str) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    let Some(ws) = j.find("\"workers\":[") else {
        return v;
    };
    for part in j[ws..].split("{\"pid\":").skip(1) {
        let pid: i32 = part.split(',').next().unwrap().parse().unwrap();
        let st = part.split("\"state\":\"").nth(1).unwrap();
        v.push((pid, st.split('"').next().unwrap().to_string()));
    }
    v
}

fn num(j: &str, key: &str) -> u64 {
    let k = format!("\"{key}\":");
    let i = j.find(&k).unwrap_or_else(|| panic!("{key} not in {j}")) + k.len();
    j[i..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// One request on a new connection: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (code, body)
}

/// Load in the background: the client's JSON report when joined.
fn load(
    addr: &str,
    path: &str,
    conns: u32,
    secs: f64,
    extra: &[&str],
) -> thread::JoinHandle<String> {
    let mut cmd = Command::new("python3");
    cmd.arg(load_py())
        .args(["--addr", addr, "--path", path])
        .args([
            "--conns",
            &conns.to_string(),
            "--duration",
            &secs.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped());
    thread::spawn(move || {
        let out = cmd.output().expect("python3");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn connections_spread_over_every_worker_at_light_load() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "3"]);
    let r = load(
        &s.http,
        "/pid",
        8,
        5.0,
        &["--requests", "240", "--new-conn-every", "1"],
    )
    .join()
    .unwrap();
    assert_eq!(num(&r, "failed"), 0, "{r}");
    let pids: Vec<i32> = s.workers().iter().map(|w| w.0).collect();
    for p in &pids {
        assert!(
            r.contains(&format!("\"{p}\":")),
            "worker {p} took nothing: {r}"
        );
    }
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_killed_worker_is_replaced_within_a_second_under_load() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "3"]);
    let l = load(&s.http, "/pid", 8, 3.0, &[]);
    thread::sleep(Duration::from_millis(800));
    let victim = s.workers()[0].0;
    // SAFETY: kill with integers.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let t0 = Instant::now();
    loop {
        let w = s.workers();
        let serving = w.iter().filter(|w| w.1 == "idle" || w.1 == "busy").count();
        if serving == 3 && !w.iter().any(|w| w.0 == victim) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "not replaced within 1 s: {w:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let r = l.join().unwrap();
    // Only what was in flight on the killed worker may fail (at most one per connection).
    assert!(num(&r, "failed") <= 8, "{r}");
    assert_eq!(num(&r, "refused"), 0, "{r}");
    assert!(num(&r, "ok") > 100, "{r}");
    assert!(
        s.stderr().contains(&format!(
            "worker {victim} (slot 0) killed by signal 9 (SIGKILL)"
        )),
        "{}",
        s.stderr()
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn max_requests_recycles_workers_without_a_failure() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "2", "--max-requests", "300"]);
    let r = load(&s.http, "/pid", 8, 3.0, &[]).join().unwrap();
    assert_eq!(num(&r, "failed"), 0, "{r}");
    let distinct = r
        .split("\"bodies\": {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    assert!(distinct.matches(':').count() > 4, "no recycling seen: {r}");
    let j = s.status_json();
    assert!(num(&j, "respawns") >= 3, "{j}");
    assert_eq!(s.stop(), 0);
}

#[test]
fn sighup_replaces_every_worker_without_a_failure() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "3"]);
    let before: Vec<i32> = s.workers().iter().map(|w| w.0).collect();
    let l = load(&s.http, "/pid", 8, 3.0, &[]);
    thread::sleep(Duration::from_millis(700));
    s.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(700));
    s.signal(libc::SIGHUP);
    let r = l.join().unwrap();
    assert_eq!(num(&r, "failed"), 0, "{r}");
    let after = s.wait_workers(3, Duration::from_secs(5));
    for p in &before {
        assert!(
            !after.iter().any(|w| w.0 == *p),
            "{p} not replaced: {after:?}"
        );
    }
    assert!(alive(s.pid()));
    assert_eq!(num(&s.status_json(), "pid"), s.pid() as u64);
    assert_eq!(s.stop(), 0);
}

#[test]
fn sigusr2_reexecutes_the_new_program_file_in_place_without_a_failure() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("myriad-usr2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("hello");
    std::fs::copy(hello(), &bin).unwrap();
    let s = Sup::start(&bin, &["--workers", "2"]);
    let before: Vec<i32> = s.workers().iter().map(|w| w.0).collect();
    let exe_before = std::fs::metadata(format!("/proc/{}/exe", s.pid())).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    let l = load(&s.http, "/pid", 8, 3.0, &[]);
    thread::sleep(Duration::from_millis(700));
    // A new program file at the same path (as a package upgrade leaves it).
    std::fs::copy(hello(), dir.join("hello.new")).unwrap();
    std::fs::rename(dir.join("hello.new"), &bin).unwrap();
    s.signal(libc::SIGUSR2);
    let r = l.join().unwrap();
    assert_eq!(num(&r, "failed"), 0, "{r}");
    let after = s.wait_workers(2, Duration::from_secs(5));
    for p in &before {
        assert!(
            !after.iter().any(|w| w.0 == *p),
            "{p} not replaced: {after:?}"
        );
        assert!(!alive(*p) || is_zombie(*p), "{p} left running");
    }
    let exe_after = std::fs::metadata(format!("/proc/{}/exe", s.pid())).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_ne!(
        exe_before.ok(),
        exe_after.ok(),
        "the old program file still runs"
    );
    // Same pid, same addresses.
    assert_eq!(num(&s.status_json(), "pid"), s.pid() as u64);
    assert_eq!(get(&s.http, "/").0, 200);
    assert_eq!(s.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn the_watchdog_replaces_a_stuck_worker_and_names_its_request() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "2", "--watchdog", "1"]);
    let http = s.http.clone();
    // One connection hangs its worker; the others are served throughout.
    let hang = thread::spawn(move || {
        let mut c = TcpStream::connect(&http).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        c.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut b = Vec::new();
        let _ = c.read_to_end(&mut b);
    });
    let t0 = Instant::now();
    let stuck = loop {
        if let Some(w) = s.workers().into_iter().find(|w| w.1 == "busy") {
            break w.0;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no worker took /hang"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let l = load(&s.http, "/pid", 4, 3.0, &[]);
    let t1 = Instant::now();
    while alive(stuck) && !is_zombie(stuck) {
        assert!(
            t1.elapsed() < Duration::from_secs(3),
            "stuck worker not killed within S + 2 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    hang.join().unwrap();
    s.wait_workers(2, Duration::from_secs(2));
    let r = l.join().unwrap();
    // Requests queued behind /hang on its connection's worker may fail with it, no others.
    assert!(num(&r, "ok") > 100, "{r}");
    assert!(num(&r, "failed") <= 4, "{r}");
    let err = s.stderr();
    assert!(
        err.contains(&format!("watchdog: worker {stuck} stuck")),
        "{err}"
    );
    assert!(err.contains("\"GET /hang\""), "{err}");
    assert_eq!(s.stop(), 0);
}

#[test]
fn sigterm_drains_slow_requests_then_exits_0_with_no_process_left() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "2"]);
    let pids: Vec<i32> = s.workers().iter().map(|w| w.0).collect();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let a = s.http.clone();
            thread::spawn(move || get(&a, "/delay?ms=1500"))
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let code = s.stop();
    for t in slow {
        let (st, body) = t.join().unwrap();
        assert_eq!((st, body.as_str()), (200, "delayed 1500"));
    }
    assert_eq!(code, 0);
    for p in pids {
        assert!(!alive(p) || is_zombie(p), "worker {p} left running");
    }
}

#[test]
fn the_status_answers_while_every_worker_is_stuck() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "2", "--watchdog", "30"]);
    let mut conns = Vec::new();
    for _ in 0..16 {
        let mut c = TcpStream::connect(&s.http).unwrap();
        c.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        conns.push(c);
    }
    let t0 = Instant::now();
    loop {
        let w = s.workers();
        if w.iter().all(|w| w.1 == "busy") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "not all busy: {w:?}");
        thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let j = s.status_json();
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(num(&j, "active processes"), 2, "{j}");
    assert!(j.contains("\"last request\":\"GET /hang\""), "{j}");
    let (code, om) = get(&s.status, "/metrics");
    assert_eq!(code, 200);
    assert!(om.contains("myriad_active_workers{pool=\"www\"} 2"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    // Fast stop: the stuck workers are killed, the supervisor exits.
    let mut s = s;
    s.signal(libc::SIGQUIT);
    let t0 = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(5), "no fast stop");
        thread::sleep(Duration::from_millis(20));
    }
    for (p, _) in workers_of(&j) {
        assert!(!alive(p) || is_zombie(p), "worker {p} left running");
    }
    drop(conns);
}

#[test]
fn an_unknown_user_exits_2_before_serving() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(hello())
        .args([
            "--workers",
            "1",
            "--user",
            "no-such-user-here",
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown user"));
}

#[test]
fn workers_run_as_nobody_and_a_privileged_port_is_served() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: skipped");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = (700..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(hello())
        .args(["--workers", "2", "--user", "nobody", "--http", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("listening http {addr}"));
    let t0 = Instant::now();
    let pid = loop {
        if let Ok(s) = TcpStream::connect(&addr) {
            drop(s);
            let (code, body) = get(&addr, "/pid");
            if code == 200 {
                break body.trim().parse::<i32>().unwrap();
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(20));
    };
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = st
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let gid = st
        .lines()
        .find(|l| l.starts_with("Gid:"))
        .unwrap()
        .to_string();
    // SAFETY: a static NUL-terminated name; the result is read at once.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null());
    // SAFETY: getpwnam returned a live entry.
    let (nuid, ngid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![nuid.to_string(); 4]
    );
    assert_eq!(
        gid.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![ngid.to_string(); 4]
    );
    assert_ne!(pid, child.id() as i32);
    // SAFETY: kill with integers.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_retiring_worker_answers_a_request_on_its_idle_keep_alive_connections() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(&hello(), &["--workers", "1"]);
    let mut c = TcpStream::connect(&s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = |c: &mut TcpStream| -> String {
        c.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // One response: the head, then its Content-Length of body.
        loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed with the request unanswered: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let t = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = t.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if body.len() >= len {
                    return t;
                }
            }
        }
    };
    let first = ask(&mut c);
    let pid = first.split_once("\r\n\r\n").unwrap().1.to_string();
    // Reload: the worker retires while this connection is idle between requests. Its next
    // request, sent during the retirement, is answered (by it, with Connection: close)
    // instead of finding the connection closed.
    s.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(150));
    let second = ask(&mut c);
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    assert_eq!(second.split_once("\r\n\r\n").unwrap().1, pid);
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "closed after it");
    assert_eq!(s.stop(), 0);
}

#[test]
fn workers_chroot_before_switching_user() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: skipped");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("myriad-chroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let s = Sup::start(
        &hello(),
        &["--workers", "1", "--user", "nobody", "--chroot", d],
    );
    let (code, body) = get(&s.http, "/pid");
    assert_eq!(code, 200, "{}", s.stderr());
    let pid: i32 = body.trim().parse().unwrap();
    assert_ne!(pid, s.pid());
    // The worker's root is the directory; the supervisor's is still /.
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, std::fs::canonicalize(&dir).unwrap());
    let sroot = std::fs::read_link(format!("/proc/{}/root", s.pid())).unwrap();
    assert_eq!(sroot, Path::new("/"));
    assert_eq!(get(&s.http, "/").0, 200);
    assert_eq!(s.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dynamic_pool_grows_when_every_worker_is_busy_and_shrinks_when_idle() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Sup::start(
        &hello(),
        &[
            "--workers",
            "1",
            "--max-workers",
            "3",
            "--idle-timeout-ms",
            "1500",
        ],
    );
    assert_eq!(s.workers().len(), 1);
    assert!(s.status_json().contains("\"process manager\":\"dynamic\""));
    // Slow requests from 6 clients: every worker busy, so the pool grows. (An extra worker
    // accepts from a base slot's socket: it takes connections when the base worker does
    // not, e.g. while its loop runs a CPU-bound handler.)
    let l = load(&s.http, "/delay?ms=100", 6, 3.0, &["--new-conn-every", "1"]);
    let t0 = Instant::now();
    loop {
        let w = s.workers();
        if w.len() >= 2 && w.iter().all(|w| w.1 == "idle" || w.1 == "busy") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "did not grow: {w:?}");
        thread::sleep(Duration::from_millis(20));
    }
    let r = l.join().unwrap();
    assert_eq!(num(&r, "failed"), 0, "{r}");
    // Idle past the timeout: back to the minimum, without a failure.
    let t1 = Instant::now();
    while s.workers().len() > 1 {
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "did not shrink: {:?}",
            s.workers()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&s.http, "/").0, 200);
    assert_eq!(s.stop(), 0);
}

#[test]
fn workers_above_the_memory_limit_are_recycled_without_a_failure() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Every worker is above 1 MB of RSS: each is replaced about once a second.
    let s = Sup::start(&hello(), &["--workers", "2", "--max-rss", "1000000"]);
    let before: Vec<i32> = s.workers().iter().map(|w| w.0).collect();
    let r = load(&s.http, "/pid", 4, 2.5, &[]).join().unwrap();
    assert_eq!(num(&r, "failed"), 0, "{r}");
    let after = s.wait_workers(2, Duration::from_secs(5));
    assert!(
        before.iter().all(|p| !after.iter().any(|w| w.0 == *p)),
        "{before:?} {after:?}"
    );
    assert!(num(&s.status_json(), "respawns") >= 2);
    assert_eq!(s.stop(), 0);
}
