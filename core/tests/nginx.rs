//! FastCGI end to end behind a real nginx started by the test on loopback, driven by curl:
//! unix socket and TCP upstreams, keep_conn with upstream keepalive (connections reused),
//! buffering off (pieces arrive spaced in time), request buffering off with a chunked
//! upload, and the demo started by spawn-fcgi (fd 0 as the listen socket).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::HttpSrv;
use myriad::{Proto, ServerOptions};

struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx_bin() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("nginx is not installed: run scripts/test.sh (it installs nginx)");
}

/// Starts nginx with one `server` per (port, upstream, extra directives).
fn nginx(dir: &Path, servers: &[(u16, String, &str)]) -> Nginx {
    let mut conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_max_body_size 64m;\n  client_body_temp_path {d}/body;\n  fastcgi_temp_path {d}/fcgi;\n  proxy_temp_path {d}/proxy;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n",
        d = dir.display()
    );
    for (i, (port, upstream, extra)) in servers.iter().enumerate() {
        conf.push_str(&format!(
            "  upstream u{i} {{ server {upstream}; keepalive 8; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      include /etc/nginx/fastcgi_params;\n      fastcgi_pass u{i};\n      {extra}\n    }}\n  }}\n"
        ));
    }
    conf.push_str("}\n");
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_bin())
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &dir.join("nginx.conf").display().to_string(),
        ])
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    // Wait until every port answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (port, _, _) in servers {
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start; see {}/error.log",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Nginx {
        child,
        dir: dir.to_path_buf(),
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("myriad-nginx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn behind_nginx_over_unix_and_tcp() {
    let dir = tempdir("main");
    let sock = dir.join("app.sock");
    let opts = ServerOptions {
        max_body: 64 << 20,
        ..Default::default()
    };
    let unix = HttpSrv::start_proto(
        opts.clone(),
        Proto::Fcgi,
        &format!("unix:{}", sock.display()),
    );
    let tcp = HttpSrv::start_proto(opts, Proto::Fcgi, "127.0.0.1:0");
    let (p_unix, p_tcp, p_stream) = (free_port(), free_port(), free_port());
    let _ng = nginx(
        &dir,
        &[
            (p_unix, format!("unix:{}", sock.display()), ""),
            (p_tcp, tcp.addr().to_string(), "fastcgi_keep_conn on;"),
            (
                p_stream,
                format!("unix:{}", sock.display()),
                "fastcgi_keep_conn on; fastcgi_buffering off; fastcgi_request_buffering off;",
            ),
        ],
    );
    let base = |p: u16| format!("http://127.0.0.1:{p}");

    // Every route through the unix socket.
    assert_eq!(curl(&[&format!("{}/", base(p_unix))]).0, "Hello, World!");
    let (out, _) = curl(&["-i", &format!("{}/nope", base(p_unix))]);
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert_eq!(
        curl(&[
            "-H",
            "Content-Type: text/x",
            "--data-binary",
            "via nginx",
            &format!("{}/echo", base(p_unix))
        ])
        .0,
        "via nginx"
    );
    let env = curl(&[&format!("{}/env?q=2", base(p_unix))]).0;
    assert!(
        env.contains("REQUEST_METHOD=GET\n") && env.contains("QUERY_STRING=q=2\n"),
        "{env}"
    );
    assert_eq!(
        curl(&[&format!("{}/delay?ms=20", base(p_unix))]).0,
        "delayed 20"
    );
    assert_eq!(
        curl(&[&format!("{}/work?ms=20", base(p_unix))]).0,
        "worked 20"
    );
    assert!(
        unix.stats().accepted >= 1,
        "requests went through the unix socket"
    );

    // TCP with keep_conn and upstream keepalive: nginx reuses its backend connections.
    let before = tcp.stats();
    for _ in 0..20 {
        assert_eq!(curl(&[&format!("{}/", base(p_tcp))]).0, "Hello, World!");
    }
    let after = tcp.stats();
    let accepted = after.accepted - before.accepted;
    assert!(
        accepted <= 2,
        "{accepted} backend connections for 20 requests: not reused"
    );
    println!(
        "keep_conn: {} reads, {} writes for 20 requests",
        after.read + after.received - before.read - before.received,
        after.write - before.write
    );
    assert_eq!(
        (
            after.read + after.received - before.read - before.received,
            after.write - before.write
        ),
        (20, 20),
        "one read and one write per request"
    );

    // buffering off: pieces reach the client as they are written, spaced in time.
    let mut s = TcpStream::connect(("127.0.0.1", p_stream)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /pace?chunks=4&ms=150 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let mut r = BufReader::new(s);
    let mut seen = Vec::new();
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("piece ") {
            seen.push((line.trim().to_string(), t.elapsed()));
        }
        line.clear();
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen[3].1 - seen[0].1 >= Duration::from_millis(300),
        "pieces arrived together: {seen:?}"
    );

    // request buffering off: a chunked upload streams through to the handler.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let sum = body
        .iter()
        .fold(0u64, |s, &c| s.wrapping_mul(31).wrapping_add(c as u64));
    let f = dir.join("upload.bin");
    std::fs::write(&f, &body).unwrap();
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("{}/count", base(p_stream)),
    ])
    .0;
    assert_eq!(out, format!("{} {sum}", body.len()));
    // An abandoned response. With keep_conn on (and buffering) nginx sees the backend
    // close before END_REQUEST and passes the cut on (curl: a transfer closed short, not a
    // whole response); before anything was flushed it answers 502; then it goes on. With
    // keep_conn or buffering off nginx takes a close for the end of the output: only its
    // error log tells (from our STDERR record).
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("{}/cut?flushed=2&ms=30", base(p_tcp)))
        .output()
        .expect("curl");
    assert!(!out.status.success(), "curl took a cut response as whole");
    assert_eq!(out.stdout, b"piece 0\npiece 1\n");
    let (out, _) = curl(&["-i", &format!("{}/cut", base(p_tcp))]);
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert_eq!(curl(&[&format!("{}/", base(p_tcp))]).0, "Hello, World!");
    let _ = curl(&[&format!("{}/cut?flushed=1", base(p_unix))]);

    let mut buf = String::new();
    let _ = std::fs::File::open(dir.join("error.log")).map(|mut f| f.read_to_string(&mut buf));
    assert!(
        !buf.contains("upstream sent"),
        "nginx complained about the backend:\n{buf}"
    );
    assert!(
        buf.lines()
            .any(|l| l.contains("prematurely closed") && l.contains("/cut?flushed=2")),
        "nginx did not see the abandoned response:\n{buf}"
    );
    assert!(
        buf.lines()
            .any(|l| l.contains("response abandoned by the application")
                && l.contains("/cut?flushed=1")),
        "the STDERR record over keep_conn off did not reach the log:\n{buf}"
    );
}

#[test]
fn the_demo_under_spawn_fcgi() {
    let exe = std::env::current_exe().unwrap();
    let hello = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/hello");
    assert!(
        hello.exists(),
        "{} not built (cargo test builds examples)",
        hello.display()
    );
    let dir = tempdir("spawn");
    let sock = dir.join("spawn.sock");
    // spawn-fcgi -n: exec the app in the foreground with the socket as fd 0.
    let mut app = Command::new("spawn-fcgi")
        .args([
            "-n",
            "-s",
            &sock.display().to_string(),
            "--",
            &hello.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn-fcgi is installed");
    let mut out = BufReader::new(app.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening fcgi fd:0");
    let port = free_port();
    let ng = nginx(
        &dir,
        &[(
            port,
            format!("unix:{}", sock.display()),
            "fastcgi_keep_conn on;",
        )],
    );
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/")]).0,
        "Hello, World!"
    );
    assert_eq!(
        curl(&[
            "--data-binary",
            "spawned",
            &format!("http://127.0.0.1:{port}/echo")
        ])
        .0,
        "spawned"
    );
    // SIGTERM: the demo drains and exits 0.
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(app.id() as i32, libc::SIGTERM) };
    let st = app.wait().unwrap();
    assert!(st.success(), "demo exited with {st}");
    drop(ng);
}

/// curl's status code for `url` (with extra args), whatever it is.
fn status_of(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn requests_nobody_answers_are_freed_and_chunked_uploads_arrive_whole() {
    let dir = tempdir("limits");
    // Our response timeout (1 s) before nginx's (5 s): we answer 504 through nginx. On the
    // other server nginx gives up first (1 s) and closes: we free the requests.
    let ours = HttpSrv::start_proto(
        ServerOptions {
            response_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        Proto::Fcgi,
        "127.0.0.1:0",
    );
    let theirs = HttpSrv::start_proto(ServerOptions::default(), Proto::Fcgi, "127.0.0.1:0");
    let (p_ours, p_theirs) = (free_port(), free_port());
    let _ng = nginx(
        &dir,
        &[
            (
                p_ours,
                ours.addr().to_string(),
                "fastcgi_keep_conn on; fastcgi_read_timeout 5s; fastcgi_request_buffering off;",
            ),
            (
                p_theirs,
                theirs.addr().to_string(),
                "fastcgi_keep_conn on; fastcgi_read_timeout 1s;",
            ),
        ],
    );
    let t0 = Instant::now();
    let url = format!("http://127.0.0.1:{p_ours}/delay?ms=60000");
    assert_eq!(status_of(&[&url]), "504");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // nginx's own timeout: 504 from nginx, and our connections go with nginx's.
    let url = format!("http://127.0.0.1:{p_theirs}/delay?ms=60000");
    let clients: Vec<_> = (0..22)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || status_of(&[&url]))
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), "504");
    }
    theirs
        .inner
        .wait_for(5, "the abandoned connections freed", |lp| {
            lp.connection_count() == 0
        });
    // And still serving.
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{p_theirs}/")]).0,
        "Hello, World!"
    );

    // request buffering off: a chunked upload of 20,000 one-byte chunks reaches the
    // handler whole, however nginx cuts it into STDIN records.
    let mut wire = Vec::new();
    let mut body = Vec::new();
    for i in 0..20_000usize {
        let c = b'a' + (i % 26) as u8;
        wire.extend_from_slice(&[b'1', b'\r', b'\n', c, b'\r', b'\n']);
        body.push(c);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", p_ours)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    s.write_all(&wire).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // nginx streams an unknown-length body chunked: reassemble it.
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = &resp[head_end..];
    let mut got = Vec::new();
    if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        loop {
            let e = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..e]).unwrap(), 16).unwrap();
            got.extend_from_slice(&rest[e + 2..e + 2 + n]);
            rest = &rest[e + 4 + n..];
            if n == 0 {
                break;
            }
        }
    } else {
        got = rest.to_vec();
    }
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the echo differs");
}
