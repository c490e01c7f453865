//! Socket activation across a real exec: this test binary passes two listeners and a
//! notification socket to a copy of itself with `systemd::spawn`, the copy takes them with
//! `systemd::listen_fds`, serves one connection on each through a myriad server, and
//! notifies. Also a shell child checking what systemd's protocol promises (LISTEN_PID is the
//! pid that runs the program, fds 3 and 4 are open sockets, nothing else leaks).

use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use myriad::systemd::{self, ChildEnv, Notifier, PassFds};
use myriad::{Loop, ServerOptions};

const CHILD: &str = "MYRIAD_SYSTEMD_TEST_CHILD";

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: reaps our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("myriad-sd-{}-{name}", std::process::id()))
}

/// The child side: serve what was passed, one connection each, then say STOPPING=1.
fn child() {
    let fds = systemd::listen_fds(true).expect("listen_fds");
    assert!(std::env::var_os("LISTEN_PID").is_none(), "unset_env");
    let names: Vec<_> = fds.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, ["http", "fcgi"]);
    for f in &fds {
        // SAFETY: fcntl on an fd we own.
        let flags = unsafe { libc::fcntl(f.fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0, "taken fds are close-on-exec");
    }
    // A second call finds nothing (the variables are gone).
    assert!(systemd::listen_fds(false).unwrap().is_empty());
    let n = Notifier::from_env(true).unwrap().expect("NOTIFY_SOCKET");
    let mut lp = Loop::new().unwrap();
    let srv = lp.server(ServerOptions::default(), |_, req, mut res| {
        let body = format!("{:?} {}", req.protocol(), req.path());
        res.header("Content-Type", b"text/plain").unwrap();
        res.write(body.as_bytes()).unwrap();
        res.finish().unwrap();
    });
    for f in fds {
        assert_eq!(f.proto(), systemd::proto_for_name(&f.name));
        let proto = f.proto();
        srv.listen(&mut lp, f.into_listener().unwrap(), proto);
    }
    n.ready().unwrap();
    n.status("serving http and fcgi").unwrap();
    let srv2 = srv.clone();
    // Both connections (HTTP, then FastCGI) served and gone: stop. (Stopping after the first
    // would leave the second in the backlog of the parent's copy of the socket.)
    lp.repeat(
        Duration::from_millis(5),
        Duration::from_millis(5),
        move |lp, id| {
            if lp.stats().accepted >= 2 && srv2.connection_count() == 0 {
                lp.cancel_timer(id);
                srv2.shutdown(lp, |lp| lp.stop());
            }
        },
    );
    lp.timer(Duration::from_secs(10), |lp| lp.stop());
    lp.run().unwrap();
    n.stopping().unwrap();
}

#[test]
fn listeners_cross_an_exec() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let fcgi = TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = tmp("notify.sock");
    let _ = std::fs::remove_file(&sock);
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();

    let pass = PassFds::new(&[(http.as_fd(), "http"), (fcgi.as_fd(), "fcgi")]).unwrap();
    let mut base: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    base.push((CHILD.into(), "1".into()));
    base.push(("NOTIFY_SOCKET".into(), sock.clone().into_os_string()));
    let mut env = ChildEnv::new(base, &pass).unwrap();
    let exe = CString::new(
        std::env::current_exe()
            .unwrap()
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let argv = [
        exe.as_c_str(),
        c"--exact",
        c"listeners_cross_an_exec",
        c"--test-threads=1",
    ];
    let pid = systemd::spawn(&exe, &argv, &mut env, &pass).unwrap();
    drop(pass); // the parent's copies; the child has its own
    let mut msg = [0u8; 256];
    let n = rx.recv(&mut msg).unwrap();
    assert_eq!(&msg[..n], b"READY=1");
    let n = rx.recv(&mut msg).unwrap();
    assert_eq!(&msg[..n], b"STATUS=serving http and fcgi");

    // HTTP on the first fd.
    let mut c = TcpStream::connect(http.local_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("Http /a"), "{out}");
    // FastCGI on the second: BEGIN_REQUEST (responder, no keep-conn), PARAMS, empty STDIN.
    let mut c = TcpStream::connect(fcgi.local_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = vec![1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let params: Vec<u8> = [
        (&b"REQUEST_METHOD"[..], &b"GET"[..]),
        (b"SCRIPT_NAME", b"/f"),
    ]
    .iter()
    .flat_map(|(k, v)| {
        let mut p = vec![k.len() as u8, v.len() as u8];
        p.extend_from_slice(k);
        p.extend_from_slice(v);
        p
    })
    .collect();
    req.extend_from_slice(&[1, 4, 0, 1, 0, params.len() as u8, 0, 0]);
    req.extend_from_slice(&params);
    req.extend_from_slice(&[1, 4, 0, 1, 0, 0, 0, 0, 1, 5, 0, 1, 0, 0, 0, 0]);
    c.write_all(&req).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("Fcgi /f"), "{text}");
    assert_eq!(out[out.len() - 16 + 1], 3, "ends with END_REQUEST");

    let n = rx.recv(&mut msg).unwrap();
    assert_eq!(&msg[..n], b"STOPPING=1");
    let status = wait(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_shell_sees_the_protocol() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = tmp("shell.sock");
    let _ = std::fs::remove_file(&u);
    let ul = std::os::unix::net::UnixListener::bind(&u).unwrap();
    let out = tmp("shell.out");
    let pass = PassFds::new(&[(l.as_fd(), "web"), (ul.as_fd(), "fcgi")]).unwrap();
    let base = [
        ("PATH", "/usr/bin:/bin"),
        ("OUT", out.to_str().unwrap()),
        ("LISTEN_FDNAMES", "stale"),
    ]
    .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let mut env = ChildEnv::new(base, &pass).unwrap();
    // $$ is the pid of the shell, which is the pid spawn forked: exec keeps it.
    let script = c"{ [ \"$LISTEN_PID\" = \"$$\" ] && echo pid-ok; echo \"$LISTEN_FDS $LISTEN_FDNAMES\"; \
        for fd in 3 4 5 6 7 8; do [ -e /proc/$$/fd/$fd ] && readlink /proc/$$/fd/$fd | cut -c1-7; done; true; } > \"$OUT\"";
    let pid = systemd::spawn(c"/bin/sh", &[c"sh", c"-c", script], &mut env, &pass).unwrap();
    let status = wait(pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let got = std::fs::read_to_string(&out).unwrap();
    // fds 3 and 4 are the sockets; the copies above them (close-on-exec) did not survive
    // the exec, nor did the pipe spawn reports through. (fd 5+ may be the shell's own
    // redirection of stdout; it is not a socket.)
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("pid-ok"), "{got}");
    assert_eq!(lines.next(), Some("2 web:fcgi"), "{got}");
    assert_eq!(lines.next(), Some("socket:"), "{got}");
    assert_eq!(lines.next(), Some("socket:"), "{got}");
    assert!(lines.all(|l| l != "socket:"), "{got}");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&u);
}
