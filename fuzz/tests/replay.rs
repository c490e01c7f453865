//! The connection harnesses on hand-written cases and on every committed seed, without the
//! fuzzer (`cargo test` in fuzz/): a check that the harnesses pass on inputs a server must
//! handle, and a quick replay of the seed corpora.
use myriad_fuzz::{fcgi_conn, http_conn};

fn http(stream: &[u8], cuts: &[u16]) {
    http_conn::run(&http_conn::Input {
        items: vec![http_conn::Item::Raw(stream.to_vec())],
        cuts: cuts.to_vec(),
    });
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!v.is_empty(), "no seeds for {target}");
    v.sort();
    v
}

#[test]
fn http_pipelined_garbage_is_answered_after_the_good_request() {
    // The first finding of fuzz/http_conn (both responses were lost to a reset).
    http(b"GET /echo HTTP/1.1\r\nHost: fuzz\r\n\r\n\0", &[]);
    http(b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n\0", &[]);
    http(b"GET /echo HTTP/1.1\r\nHost: fuzz\r\n\r\n\0", &[33]);
}

#[test]
fn http_seeds() {
    for s in seeds("http_conn") {
        http_conn::run(&http_conn::Input::from_fuzz(&s));
    }
}

#[test]
fn fcgi_seeds() {
    for s in seeds("fcgi_conn") {
        fcgi_conn::run(&fcgi_conn::Input::from_fuzz(&s));
    }
}

#[test]
fn ws_frame_seeds() {
    for s in seeds("ws_frame") {
        myriad_fuzz::ws_frame::run(&s);
    }
}
