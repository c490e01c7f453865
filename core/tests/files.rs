//! The static file handler ([`myriad::files::FileServer`]) over real sockets: every answer
//! of its rules, raw traversal requests, both path resolutions (openat2 and the O_NOFOLLOW
//! walk), the open-file cache, and zero copies through user space on the plain path.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::{Client, Resp};
use common::Server;
use myriad::files::{FileServer, FilesOptions};
use myriad::{Proto, ServerOptions};

thread_local! {
    static FS: RefCell<Option<FileServer>> = const { RefCell::new(None) };
}

fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn tree(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("myriad-files-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let root = d.join("root");
    for sub in ["dir", "noindex", "sub/deeper", "idxdir/index.html"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let w = |p: &str, b: &[u8]| std::fs::write(root.join(p), b).unwrap();
    w("hello.txt", b"hello world\n");
    w("empty.bin", b"");
    w("one.bin", b"x");
    w("k64.bin", &content(64 * 1024));
    w("style.css", b"body{}");
    w("dir/index.html", b"<h1>index</h1>");
    w("sub/deeper/a.json", b"{}");
    w("app.js", b"plain js");
    w("app.js.gz", b"gzip js");
    w("app.js.br", b"brotli js");
    w("only.css", b"identity");
    w("only.css.gz", b"gzipped");
    w("caf\u{e9} x.txt", b"accent");
    std::fs::write(d.join("secret.txt"), b"outside the root").unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("link-in")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("link-out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    let unreadable = root.join("unreadable.txt");
    std::fs::write(&unreadable, b"no").unwrap();
    std::fs::set_permissions(
        &unreadable,
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    d
}

/// A server of `root` under /static/ (the rest 404), on `backend`.
fn start(
    backend: &'static str,
    root: &Path,
    opts: FilesOptions,
    walk: bool,
    proto: Proto,
) -> Server {
    let root = root.to_path_buf();
    Server::start_on(backend, "127.0.0.1:0", move |lp, l| {
        let mut fs = FileServer::new(&root, opts).unwrap();
        if walk {
            fs.force_walk();
        }
        FS.with(|f| *f.borrow_mut() = Some(fs));
        let srv = lp.server(ServerOptions::default(), |lp, req, res| {
            let path = req.path().to_string();
            if let Some(rel) = path.strip_prefix("/later/") {
                // Served after the handler returned, from the loop.
                let rel = rel.to_string();
                lp.defer(move |_| {
                    FS.with(|f| {
                        f.borrow()
                            .as_ref()
                            .unwrap()
                            .serve_later(res, rel.as_bytes())
                    })
                });
                return;
            }
            match path.strip_prefix("/static/") {
                Some(rel) => {
                    FS.with(|f| f.borrow().as_ref().unwrap().serve(req, res, rel.as_bytes()))
                }
                None => {
                    let _ = res.send(404, "text/plain", b"not static\n");
                }
            }
        });
        srv.listen(lp, l, proto);
        std::mem::forget(srv);
    })
}

fn req(c: &mut Client, line: &str, headers: &[(&str, &str)]) -> Resp {
    let mut r = format!("{line} HTTP/1.1\r\nHost: t\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    c.send(r.as_bytes());
    c.read(line.starts_with("HEAD "))
}

fn get(c: &mut Client, path: &str) -> Resp {
    req(c, &format!("GET {path}"), &[])
}

#[test]
fn files_directories_and_errors() {
    let d = tree("basic");
    let root = d.join("root");
    for backend in ["epoll", "io_uring"] {
        let srv = start(backend, &root, FilesOptions::default(), false, Proto::Http);
        let mut c = Client::connect(srv.tcp());
        let r = get(&mut c, "/static/hello.txt");
        assert_eq!((r.status, &r.body[..]), (200, &b"hello world\n"[..]));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.header("etag").unwrap().starts_with('"'), "a strong ETag");
        assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
        assert_eq!(r.header("cache-control"), None);
        for (p, n) in [("empty.bin", 0), ("one.bin", 1), ("k64.bin", 65536)] {
            let r = get(&mut c, &format!("/static/{p}"));
            assert_eq!(r.status, 200);
            assert!(r.body == content(n)[..] || n == 1, "{p}");
            assert_eq!(r.header("content-length"), Some(&*n.to_string()));
        }
        assert_eq!(
            get(&mut c, "/static/style.css").header("content-type"),
            Some("text/css")
        );
        assert_eq!(get(&mut c, "/static/caf%C3%A9%20x.txt").body, b"accent");
        assert_eq!(
            get(&mut c, "/static/sub/deeper/a.json").header("content-type"),
            Some("application/json")
        );
        // A symlink inside the root is served; one leaving it is not.
        assert_eq!(get(&mut c, "/static/link-in").body, b"hello world\n");
        assert_eq!(get(&mut c, "/static/link-out").status, 403);
        assert_eq!(get(&mut c, "/static/link-abs").status, 403);
        assert_eq!(get(&mut c, "/static/up/secret.txt").status, 403);
        // Directories.
        assert_eq!(get(&mut c, "/static/dir/").body, b"<h1>index</h1>");
        assert_eq!(
            get(&mut c, "/static/dir/").header("content-type"),
            Some("text/html")
        );
        let r = get(&mut c, "/static/dir?a=1");
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("/static/dir/?a=1"))
        );
        assert_eq!(get(&mut c, "/static/noindex/").status, 403, "no listing");
        assert_eq!(
            get(&mut c, "/static/idxdir/").status,
            403,
            "an index that is a directory"
        );
        // Errors.
        assert_eq!(get(&mut c, "/static/missing.txt").status, 404);
        assert_eq!(get(&mut c, "/static/hello.txt/").status, 404);
        assert_eq!(get(&mut c, "/static/hello.txt/x").status, 404);
        assert_eq!(
            get(&mut c, "/static/fifo").status,
            404,
            "not a regular file"
        );
        // SAFETY: geteuid(2) has no preconditions. (Root reads any file.)
        let root_user = unsafe { libc::geteuid() } == 0;
        if !root_user {
            assert_eq!(get(&mut c, "/static/unreadable.txt").status, 403);
        }
        let r = req(&mut c, "POST /static/hello.txt", &[("Content-Length", "0")]);
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
        let r = req(&mut c, "DELETE /static/hello.txt", &[]);
        assert_eq!(r.status, 405);
        // HEAD: the headers of GET, no body.
        let r = req(&mut c, "HEAD /static/k64.bin", &[]);
        assert_eq!((r.status, r.header("content-length")), (200, Some("65536")));
        assert!(r.body.is_empty());
        // The connection is still in step after all of that.
        assert_eq!(get(&mut c, "/static/hello.txt").status, 200);
        let st = srv.stats();
        assert_eq!(st.file_copied, 0, "{backend}: {st:?}");
        assert!(st.file_sent > 65536, "{backend}: {st:?}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_traversal_form_is_refused_with_either_resolution() {
    let d = tree("trav");
    let root = d.join("root");
    for walk in [false, true] {
        let srv = start("", &root, FilesOptions::default(), walk, Proto::Http);
        for (target, want) in [
            ("/static/../secret.txt", &[400][..]),
            ("/static/../../etc/passwd", &[400]),
            ("/static/sub/../../secret.txt", &[400]),
            ("/static/%2e%2e/secret.txt", &[400]),
            ("/static/%2E%2E/secret.txt", &[400]),
            ("/static/.%2e/secret.txt", &[400]),
            ("/static/..%2fsecret.txt", &[404]),
            ("/static/..%2Fsecret.txt", &[404]),
            ("/static/%2e%2e%2fsecret.txt", &[404]),
            ("/static/..\\secret.txt", &[400]),
            ("/static/..%5csecret.txt", &[400]),
            ("/static/hello.txt%00.png", &[400]),
            ("/static/%zz", &[400]),
            ("/static/link-out", &[403]),
            ("/static/up/secret.txt", &[403]),
            ("/static/up/root/hello.txt", &[403]),
            ("/static//etc/passwd", &[404]),
            ("/static/%2fetc%2fpasswd", &[404]),
        ] {
            // Raw bytes: no client normalises them.
            let mut s = std::net::TcpStream::connect(srv.tcp()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let text = String::from_utf8_lossy(&got);
            let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(want.contains(&status), "walk={walk} {target}: {text}");
            assert!(
                !text.contains("outside the root") && !text.contains("root:"),
                "{target}"
            );
        }
        // And the walk still serves what it should.
        let mut c = Client::connect(srv.tcp());
        assert_eq!(
            get(&mut c, "/static/link-in").body,
            b"hello world\n",
            "walk={walk}"
        );
        assert_eq!(
            get(&mut c, "/static/sub/../hello.txt").body,
            b"hello world\n"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn conditional_requests() {
    let d = tree("cond");
    let srv = start(
        "",
        &d.join("root"),
        FilesOptions::default(),
        false,
        Proto::Http,
    );
    let mut c = Client::connect(srv.tcp());
    let r = get(&mut c, "/static/hello.txt");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let old = "Thu, 01 Jan 1970 00:00:01 GMT";
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("If-None-Match", &etag)], 304),
        (vec![("If-None-Match", "*")], 304),
        (vec![("If-None-Match", "\"nope\"")], 200),
        (vec![("If-Modified-Since", &lm)], 304),
        (vec![("If-Modified-Since", future)], 304),
        (vec![("If-Modified-Since", old)], 200),
        (
            vec![("If-None-Match", "\"nope\""), ("If-Modified-Since", &lm)],
            200,
        ),
        (vec![("If-Match", &etag)], 200),
        (vec![("If-Match", "*")], 200),
        (vec![("If-Match", "\"nope\"")], 412),
        (vec![("If-Unmodified-Since", old)], 412),
        (vec![("If-Unmodified-Since", &lm)], 200),
        (
            vec![("If-Match", "\"nope\""), ("If-None-Match", &etag)],
            412,
        ),
    ];
    for (headers, status) in cases {
        let r = req(&mut c, "GET /static/hello.txt", &headers);
        assert_eq!(r.status, status, "{headers:?}");
        if status == 304 {
            assert!(r.body.is_empty());
            assert_eq!(
                r.header("etag"),
                Some(&*etag),
                "the 304 carries the validators"
            );
        }
        if status == 200 {
            assert_eq!(r.body, b"hello world\n");
        }
    }
    // HEAD too.
    let r = req(
        &mut c,
        "HEAD /static/hello.txt",
        &[("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    // Served later (outside the handler's call): the same rules.
    let r = req(&mut c, "GET /later/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    let r = req(&mut c, "GET /later/hello.txt", &[("Range", "bytes=0-4")]);
    assert_eq!((r.status, &r.body[..]), (206, &b"hello"[..]));
    let r = req(&mut c, "GET /later/dir?x", &[]);
    assert_eq!(r.header("location"), Some("/later/dir/?x"));
}

#[test]
fn ranges() {
    let d = tree("range");
    let srv = start(
        "",
        &d.join("root"),
        FilesOptions::default(),
        false,
        Proto::Http,
    );
    let mut c = Client::connect(srv.tcp());
    let body = content(64 * 1024);
    let r = req(&mut c, "GET /static/k64.bin", &[("Range", "bytes=100-199")]);
    assert_eq!(
        (r.status, r.header("content-range")),
        (206, Some("bytes 100-199/65536"))
    );
    assert!(r.body == body[100..200]);
    let r = req(&mut c, "GET /static/k64.bin", &[("Range", "bytes=-10")]);
    assert_eq!(r.header("content-range"), Some("bytes 65526-65535/65536"));
    assert!(r.body == body[65526..]);
    let r = req(&mut c, "GET /static/k64.bin", &[("Range", "bytes=65530-")]);
    assert!(r.body == body[65530..]);
    // Unsatisfiable.
    let r = req(&mut c, "GET /static/k64.bin", &[("Range", "bytes=70000-")]);
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */65536"))
    );
    let r = req(&mut c, "GET /static/empty.bin", &[("Range", "bytes=0-0")]);
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */0"))
    );
    // Bad syntax: the whole file.
    let r = req(&mut c, "GET /static/k64.bin", &[("Range", "bytes=5-1")]);
    assert_eq!((r.status, r.body.len()), (200, 65536));
    // HEAD ignores Range.
    let r = req(&mut c, "HEAD /static/k64.bin", &[("Range", "bytes=0-9")]);
    assert_eq!((r.status, r.header("content-length")), (200, Some("65536")));
    // Several: multipart/byteranges.
    let r = req(
        &mut c,
        "GET /static/k64.bin",
        &[("Range", "bytes=0-9, 1000-1009")],
    );
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let text = r.body.clone();
    let mut want = Vec::new();
    for (a, b) in [(0, 9), (1000, 1009)] {
        want.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{b}/65536\r\n\r\n").as_bytes(),
        );
        want.extend_from_slice(&body[a..=b]);
    }
    want.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert!(text == want, "{:?}", String::from_utf8_lossy(&text));
    // If-Range: the range with the current ETag, the whole file with another.
    let etag = get(&mut c, "/static/k64.bin")
        .header("etag")
        .unwrap()
        .to_string();
    let r = req(
        &mut c,
        "GET /static/k64.bin",
        &[("Range", "bytes=0-0"), ("If-Range", &etag)],
    );
    assert_eq!((r.status, r.body.len()), (206, 1));
    let r = req(
        &mut c,
        "GET /static/k64.bin",
        &[("Range", "bytes=0-0"), ("If-Range", "\"old\"")],
    );
    assert_eq!((r.status, r.body.len()), (200, 65536));
}

#[test]
fn precompressed_siblings_cache_control_and_the_open_file_cache() {
    let d = tree("pre");
    let opts = FilesOptions {
        cache_control: Some("max-age=60".into()),
        ..FilesOptions::default()
    };
    let srv = start("", &d.join("root"), opts, false, Proto::Http);
    let mut c = Client::connect(srv.tcp());
    let ae =
        |c: &mut Client, p: &str, v: &str| req(c, &format!("GET {p}"), &[("Accept-Encoding", v)]);
    let r = ae(&mut c, "/static/app.js", "gzip, deflate, br");
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("br"), &b"brotli js"[..])
    );
    assert_eq!(r.header("content-type"), Some("application/javascript"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    let br_tag = r.header("etag").unwrap().to_string();
    let r = ae(&mut c, "/static/app.js", "gzip");
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"gzip js"[..])
    );
    assert_ne!(
        r.header("etag"),
        Some(&*br_tag),
        "each representation has its own tag"
    );
    let r = ae(&mut c, "/static/app.js", "br;q=0, gzip;q=0");
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (None, &b"plain js"[..])
    );
    let r = get(&mut c, "/static/app.js");
    assert_eq!(&r.body[..], b"plain js");
    let r = ae(&mut c, "/static/only.css", "br, gzip");
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"gzipped"[..])
    );
    let r = ae(&mut c, "/static/hello.txt", "br, gzip");
    assert_eq!((r.header("content-encoding"), r.status), (None, 200));
    // A 304 keeps Cache-Control.
    let r = req(
        &mut c,
        "GET /static/app.js",
        &[("Accept-Encoding", "br"), ("If-None-Match", &br_tag)],
    );
    assert_eq!(
        (r.status, r.header("cache-control")),
        (304, Some("max-age=60"))
    );
    // A hot file costs no open per request.
    let before = srv.on_loop(|_| FS.with(|f| f.borrow().as_ref().unwrap().stats()));
    for _ in 0..50 {
        assert_eq!(get(&mut c, "/static/hello.txt").status, 200);
    }
    let after = srv.on_loop(|_| FS.with(|f| f.borrow().as_ref().unwrap().stats()));
    assert!(after.opens - before.opens <= 2, "{before:?} -> {after:?}");
    assert!(after.hits - before.hits >= 48, "{before:?} -> {after:?}");
}

#[test]
fn fastcgi_serves_files_as_records() {
    use common::fcgi;
    let d = tree("fcgi");
    let srv = start(
        "",
        &d.join("root"),
        FilesOptions::default(),
        false,
        Proto::Fcgi,
    );
    let mut c = fcgi::Client::connect(srv.tcp());
    c.send(&fcgi::request(1, "GET", "/static/k64.bin", b"", true));
    let (out, _, status) = c.response(1);
    assert_eq!(status, 0);
    let (st, head, body) = fcgi::parse_cgi(&out);
    assert_eq!(st, 200, "{head}");
    assert!(body == content(64 * 1024));
    c.send(&fcgi::request(2, "GET", "/static/../secret.txt", b"", true));
    let (out, _, _) = c.response(2);
    assert_eq!(fcgi::parse_cgi(&out).0, 400);
}
