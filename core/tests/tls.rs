//! HTTPS listeners end to end with real clients (curl, openssl s_client, raw sockets), on
//! epoll and io_uring: TLS 1.2 and 1.3, ALPN, SNI among three certificates (EC PKCS#8,
//! RSA PKCS#1, SEC1 EC keys) with a default, the request's TLS facts and CGI variables,
//! session resumption, close_notify, reload, and bad input (plaintext, random bytes, a
//! ClientHello cut short, abandoned handshakes) answered by a close while others are
//! served. Certificates are made by the openssl CLI at test time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Server;
use myriad::tls::{TlsAcceptor, TlsConfig};
use myriad::{Request, Response, ServerOptions};

const BACKENDS: [&str; 2] = ["epoll", "io_uring"];

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("myriad-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and three leaf certificates signed by it: a.pem (EC P-256, PKCS#8 key;
/// localhost, a.test, 127.0.0.1), b.pem (RSA 2048, PKCS#1 key; b.test), c.pem (EC, SEC1
/// key; *.c.test).
fn make_certs(dir: &Path) {
    sh(
        dir,
        r#"
        q() { "$@" >/dev/null 2>&1; }
        q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=myriad-test-ca -days 2
        leaf() { # name key-file san
            q openssl req -new -key "$2" -out "$1.csr" -subj "/CN=$1"
            printf 'subjectAltName=%s\n' "$3" > "$1.ext"
            q openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext"
        }
        q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out a.key
        leaf a a.key DNS:localhost,DNS:a.test,IP:127.0.0.1
        q openssl genrsa -traditional -out b.key 2048
        leaf b b.key DNS:b.test
        q openssl ecparam -name prime256v1 -genkey -noout -out c.key
        leaf c c.key 'DNS:*.c.test'
        grep -q 'BEGIN PRIVATE KEY' a.key
        grep -q 'BEGIN RSA PRIVATE KEY' b.key
        grep -q 'BEGIN EC PRIVATE KEY' c.key
        "#,
    );
}

fn config(dir: &Path) -> TlsConfig {
    let mut c = TlsConfig::new();
    for n in ["a", "b", "c"] {
        c.add_cert_files(&dir.join(format!("{n}.pem")), &dir.join(format!("{n}.key")))
            .unwrap();
    }
    c
}

/// Answers with the request's TLS facts and CGI variables.
fn facts(_: &mut myriad::Loop, req: &mut Request, res: Response) {
    let t = req.tls();
    let body = format!(
        "version={} cipher={} sni={} alpn={} scheme={} HTTPS={} REQUEST_SCHEME={}\n",
        t.map_or("", |t| t.version),
        t.map_or("", |t| &t.cipher),
        t.and_then(|t| t.sni.as_deref()).unwrap_or("-"),
        t.and_then(|t| t.alpn.as_deref())
            .map_or("-".into(), |a| String::from_utf8_lossy(a).into_owned()),
        req.scheme(),
        req.cgi("HTTPS").unwrap_or_default(),
        req.cgi("REQUEST_SCHEME").unwrap_or_default(),
    );
    let _ = res.send(200, "text/plain", body.as_bytes());
}

/// An HTTPS server on `backend`; the acceptor is sent back for reload tests.
fn https(backend: &'static str, dir: &Path, opts: ServerOptions) -> (Server, TlsAcceptor) {
    let acc = TlsAcceptor::new(&config(dir)).unwrap();
    let a2 = acc.clone();
    let srv = Server::start_on(backend, "127.0.0.1:0", move |lp, l| {
        let s = lp.server(opts, facts);
        s.listen_tls(lp, l, a2);
    });
    (srv, acc)
}

fn curl(dir: &Path, addr: SocketAddr, host: &str, extra: &[&str]) -> (bool, String) {
    let url = format!("https://{host}:{}/", addr.port());
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["--resolve", &resolve])
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// openssl s_client with `args`, stdin `input`; returns its stdout and stderr.
fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn https_with_curl_and_s_client() {
    let dir = tempdir("main");
    make_certs(&dir);
    for backend in BACKENDS {
        let (srv, _) = https(backend, &dir, ServerOptions::default());
        let a = srv.tcp();
        // TLS 1.3 by default, ALPN http/1.1, SNI seen, the CGI variables.
        let (ok, out) = curl(&dir, a, "a.test", &["--http1.1"]);
        assert!(ok, "{backend}: {out}");
        assert!(
            out.contains("version=TLSv1.3 cipher=TLS_"),
            "{backend}: {out}"
        );
        assert!(
            out.contains("sni=a.test alpn=http/1.1 scheme=https HTTPS=on REQUEST_SCHEME=https"),
            "{backend}: {out}"
        );
        // TLS 1.2 too.
        let (ok, out) = curl(&dir, a, "localhost", &["--tlsv1.2", "--tls-max", "1.2"]);
        assert!(
            ok && out.contains("version=TLSv1.2 cipher=TLS_ECDHE_"),
            "{backend}: {out}"
        );
        // SNI picks the certificate: b.test's (RSA key) and *.c.test's (SEC1 key) verify
        // only if the server chose them; an unknown name gets the default (a).
        for host in ["b.test", "x.c.test"] {
            let (ok, out) = curl(&dir, a, host, &[]);
            assert!(ok, "{backend} {host}: {out}");
            assert!(out.contains(&format!("sni={host} ")), "{backend}: {out}");
        }
        let out = s_client(a, &["-servername", "nothing.test"], b"");
        assert!(
            out.contains("CN = a") || out.contains("CN=a"),
            "{backend}: {out}"
        );
        let out = s_client(a, &["-servername", "b.test"], b"");
        assert!(
            out.contains("CN = b") || out.contains("CN=b"),
            "{backend}: {out}"
        );
        // TLS 1.0 and 1.1 are refused.
        let out = s_client(a, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], b"");
        assert!(!out.contains("Cipher is ECDHE"), "{backend}: {out}");
        // Resumption: a TLS 1.3 ticket, then a TLS 1.2 session id from the cache.
        let sess = dir.join(format!("{backend}.sess"));
        let sess = sess.to_str().unwrap();
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let first = s_client(a, &["-sess_out", sess, "-ign_eof"], req);
        assert!(first.contains("version=TLSv1.3"), "{backend}: {first}");
        let again = s_client(a, &["-sess_in", sess, "-ign_eof"], req);
        assert!(again.contains("Reused, TLSv1.3"), "{backend}: {again}");
        let sess12 = format!("{sess}12");
        s_client(a, &["-tls1_2", "-sess_out", &sess12, "-ign_eof"], req);
        let again = s_client(a, &["-tls1_2", "-sess_in", &sess12, "-ign_eof"], req);
        assert!(again.contains("Reused, TLSv1.2"), "{backend}: {again}");
        // ALPN: h2 alone is refused (no_application_protocol); http/1.1 agreed.
        let out = s_client(a, &["-alpn", "h2"], b"");
        assert!(out.contains("no application protocol"), "{backend}: {out}");
        let out = s_client(a, &["-alpn", "h2,http/1.1"], b"");
        assert!(out.contains("ALPN protocol: http/1.1"), "{backend}: {out}");
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

/// Reads until EOF or an error (reset), within `secs`; returns the bytes and whether it
/// ended (rather than timing out).
fn read_until_closed(s: &mut TcpStream, secs: u64) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (got, false),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

#[test]
fn bad_input_gets_an_alert_or_a_close_while_others_are_served() {
    let dir = tempdir("bad");
    make_certs(&dir);
    for backend in BACKENDS {
        let opts = ServerOptions {
            header_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let (srv, _) = https(backend, &dir, opts);
        let a = srv.tcp();
        // 1,000 handshakes started and abandoned (a ClientHello's first bytes, then a
        // close), while a real client is served.
        let mut hellos = Vec::new();
        for _ in 0..1000 {
            let mut s = TcpStream::connect(a).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
                .unwrap();
            hellos.push(s);
        }
        let (ok, out) = curl(&dir, a, "a.test", &[]);
        assert!(ok && out.contains("scheme=https"), "{backend}: {out}");
        drop(hellos);
        // Plaintext HTTP: an alert (a TLS record: 0x15) or nothing, then the close.
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (got, closed) = read_until_closed(&mut s, 5);
        assert!(closed, "{backend}: plaintext left open");
        assert!(got.is_empty() || got[0] == 0x15, "{backend}: {got:?}");
        assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1"));
        // Random bytes.
        let mut s = TcpStream::connect(a).unwrap();
        let junk: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        s.write_all(&junk).unwrap();
        let (_, closed) = read_until_closed(&mut s, 5);
        assert!(closed, "{backend}: random bytes left open");
        // Half a ClientHello, then silence: closed by the handshake (header) timeout.
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
        let t0 = Instant::now();
        let (_, closed) = read_until_closed(&mut s, 5);
        assert!(closed, "{backend}: a stalled handshake left open");
        assert!(t0.elapsed() >= Duration::from_millis(300), "{backend}");
        // A 16 KiB ClientHello (a huge extension): refused or served, never stuck.
        let out = Command::new("python3")
            .arg("-c")
            .arg(BIG_HELLO)
            .arg(a.port().to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.trim() == "closed" || text.trim() == "answered",
            "{backend}: {text}"
        );
        // Weak ciphers only (TLS 1.2, RC4/3DES/CBC-SHA without forward secrecy).
        let out = s_client(
            a,
            &[
                "-tls1_2",
                "-cipher",
                "AES128-SHA:DES-CBC3-SHA:RC4-SHA@SECLEVEL=0",
            ],
            b"",
        );
        assert!(
            out.contains("handshake failure") || out.contains("alert"),
            "{backend}: {out}"
        );
        // Renegotiation (TLS 1.2, client-initiated 'R'): refused, the session goes on or
        // closes, and the server is unharmed.
        let _ = s_client(a, &["-tls1_2", "-ign_eof"], b"R\n");
        let (ok, out) = curl(&dir, a, "a.test", &[]);
        assert!(
            ok && out.contains("scheme=https"),
            "{backend} after all that: {out}"
        );
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        let st = srv.stop();
        assert_eq!(st.buffers_in_use, 0, "{backend}: {st:?}");
    }
}

/// Python: a TLS 1.2-format ClientHello of ~16 KiB (a padding extension), then prints
/// whether the server answered (a record) or closed.
const BIG_HELLO: &str = r#"
import socket, struct, sys, os
port = int(sys.argv[1])
exts = b""
pad = b"\x00" * 16000
exts += struct.pack(">HH", 21, len(pad)) + pad
body = b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack(">H", 2) + b"\x13\x01" + b"\x01\x00"
body += struct.pack(">H", len(exts)) + exts
hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
out = b""
while hs:
    frag, hs = hs[:16384], hs[16384:]
    out += b"\x16\x03\x01" + struct.pack(">H", len(frag)) + frag
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(out)
try:
    got = s.recv(5)
    print("answered" if got else "closed")
except (ConnectionResetError, socket.timeout):
    print("closed")
"#;

#[test]
fn close_notify_and_reload() {
    let dir = tempdir("reload");
    make_certs(&dir);
    for backend in BACKENDS {
        let (srv, acc) = https(backend, &dir, ServerOptions::default());
        let a = srv.tcp();
        // The server's close_notify: s_client reports it after a Connection: close.
        let out = s_client(
            a,
            &["-ign_eof", "-msg"],
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(out.contains("scheme=https"), "{backend}: {out}");
        assert!(
            out.contains("<<< TLS 1.3, Alert [length 0002], warning close_notify"),
            "{backend}: {out}"
        );
        // Reload with only b's certificate: new connections get it for any name; a
        // connection opened before keeps working.
        let mut before = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &a.to_string(),
                "-servername",
                "a.test",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut only_b = TlsConfig::new();
        only_b
            .add_cert_files(&dir.join("b.pem"), &dir.join("b.key"))
            .unwrap();
        acc.reload(&only_b).unwrap();
        let out = s_client(a, &["-servername", "a.test"], b"");
        assert!(
            out.contains("CN = b") || out.contains("CN=b"),
            "{backend}: {out}"
        );
        let (tx, rx) = mpsc::channel();
        let mut stdin = before.stdin.take().unwrap();
        stdin
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut stdout = before.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut got = String::new();
            let _ = stdout.read_to_string(&mut got);
            let _ = tx.send(got);
        });
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(got.contains("sni=a.test"), "{backend}: {got}");
        drop(stdin);
        let _ = before.wait();
        // A reload with a bad file changes nothing and names the file.
        let mut bad = TlsConfig::new();
        let e = bad
            .add_cert_files(&dir.join("a.pem"), &dir.join("b.key"))
            .unwrap_err();
        assert!(
            e.message().contains("b.key") && e.message().contains("does not match"),
            "{e}"
        );
        srv.wait_for(5, "closed", |lp| lp.connection_count() == 0);
        srv.stop();
    }
}
