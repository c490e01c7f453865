//! Router and form benchmarks (seconds long), printing figures for bench/RESULTS.md:
//! route lookup cost with 10 and with 1,000 routes registered (same run, same paths
//! shape), multipart parsing throughput, and the server's CPU time per request of a 3 MiB
//! multipart upload over loopback HTTP (one keep-alive connection, the loop on this
//! thread, the client on another; CPU from CLOCK_THREAD_CPUTIME_ID of the loop's thread).
//!
//!   cargo run --release -p myriad --example router_bench

use std::cell::RefCell;
use std::hint::black_box;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use myriad::form::{Event, Form, Limits};
use myriad::router::{Match, Params, Router};
use myriad::{Body, ListenOptions, Listener, Loop, Proto, ServerOptions};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A router with `n` routes of three shapes, and paths that hit some of them.
fn routes(n: usize) -> (Router<usize>, Vec<String>) {
    let mut r = Router::new();
    for i in 0..n {
        let p = match i % 3 {
            0 => format!("/api/v1/items{i}/:id"),
            1 => format!("/static{i}/*path"),
            _ => format!("/pages/p{i}/about"),
        };
        r.add("GET", &p, i).unwrap();
    }
    r.add("GET", "/hello/:name", n).unwrap();
    let paths = (0..n)
        .step_by((n / 10).max(1))
        .map(|i| match i % 3 {
            0 => format!("/api/v1/items{i}/12345"),
            1 => format!("/static{i}/css/site.css"),
            _ => format!("/pages/p{i}/about"),
        })
        .chain(["/hello/world".to_string(), "/hello/a%2Fb".to_string()])
        .collect();
    (r, paths)
}

fn lookup_ns(r: &Router<usize>, paths: &[String], rounds: usize) -> f64 {
    let mut params = Params::new();
    let t = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for p in paths {
            if let Match::Found(v) = r.find("GET", black_box(p), &mut params) {
                found += *v;
            }
        }
    }
    black_box(found);
    t.elapsed().as_nanos() as f64 / (rounds * paths.len()) as f64
}

const BOUNDARY: &str = "----myriadbench7MA4YWxkTrZu0gW";

fn upload_body(size: usize) -> Vec<u8> {
    let mut b = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nbench\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    // Data with CRs and dashes, as binary files have.
    b.extend((0..size).map(|i| b"ab\r\n-cd\rxyz0123456789"[i % 20]));
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn main() {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    println!("# router_bench");
    let (r10, p10) = routes(10);
    let (r1k, p1k) = routes(1000);
    // Warm up, then measure each twice interleaved; report the better of each.
    let (mut a, mut b) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        a = a.min(lookup_ns(&r10, &p10, 200_000));
        b = b.min(lookup_ns(&r1k, &p1k, 200_000));
    }
    println!("route lookup, 10 routes registered: {a:.1} ns");
    println!("route lookup, 1000 routes registered: {b:.1} ns");

    let body = upload_body(3 << 20);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = thread_cpu();
        let mut n = 0usize;
        let mut f = Form::new(&ct, Limits::default()).unwrap();
        for piece in body.chunks(64 << 10) {
            f.feed(piece, |e| {
                if let Event::Data(d) = e {
                    n += d.len();
                }
            })
            .unwrap();
        }
        f.finish(|_| {}).unwrap();
        assert_eq!(n, (3 << 20) + 5);
        best = best.min((thread_cpu() - t).as_secs_f64());
    }
    println!(
        "multipart parse of a 3 MiB upload (64 KiB pieces): {:.0} us CPU ({:.2} GB/s)",
        best * 1e6,
        body.len() as f64 / best / 1e9
    );

    // Through the server: the loop on this thread, a client thread on loopback.
    let mut lp = Loop::new().unwrap();
    let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap();
    let addr = l.addr().to_string();
    let opts = ServerOptions {
        max_body: 64 << 20,
        ..Default::default()
    };
    let ct2 = ct.clone();
    let srv = lp.server(opts, move |_lp, req, res| {
        let mut form = Form::new(&ct2, Limits::default()).unwrap();
        let res = Rc::new(RefCell::new(Some(res)));
        let mut bytes = 0usize;
        req.on_body(move |b| match b {
            Body::Data(d) => {
                let _ = form.feed(d, |e| {
                    if let Event::Data(d) = e {
                        bytes += d.len();
                    }
                });
            }
            Body::End => {
                let ok = form.finish(|_| {}).is_ok();
                if let Some(r) = res.borrow_mut().take() {
                    let msg = format!("{ok} {bytes}");
                    let _ = r.send(200, "text/plain", msg.as_bytes());
                }
            }
            Body::Aborted => drop(res.borrow_mut().take()),
        });
    });
    srv.listen(&mut lp, l, Proto::Http);
    let h = lp.handle();
    let n_req = 40usize;
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut buf = vec![0u8; 4096];
        for _ in 0..n_req {
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
            let n = s.read(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.contains("true 3145733"), "{text}");
        }
        h.stop();
    });
    let t0 = thread_cpu();
    let w0 = Instant::now();
    lp.run().unwrap();
    let cpu = thread_cpu() - t0;
    let wall = w0.elapsed();
    client.join().unwrap();
    println!(
        "3 MiB multipart upload over HTTP: {:.0} us server CPU per request ({n_req} requests, {:.0} ms wall each)",
        cpu.as_secs_f64() * 1e6 / n_req as f64,
        wall.as_secs_f64() * 1e3 / n_req as f64
    );
}
