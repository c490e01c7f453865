//! A FastCGI test client, written independently of the library's codec.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::Duration;

pub const BEGIN: u8 = 1;
pub const ABORT: u8 = 2;
pub const END: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// One record; the padding is chosen by the caller (to exercise padding skipping).
pub fn record(kind: u8, id: u16, content: &[u8], pad: u8) -> Vec<u8> {
    assert!(content.len() <= 65535);
    let mut v = vec![
        1,
        kind,
        (id >> 8) as u8,
        id as u8,
        (content.len() >> 8) as u8,
        content.len() as u8,
        pad,
        0,
    ];
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0xEE, pad as usize));
    v
}

pub fn pair(out: &mut Vec<u8>, n: &[u8], v: &[u8]) {
    for len in [n.len(), v.len()] {
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(n);
    out.extend_from_slice(v);
}

pub fn begin(id: u16, role: u16, keep: bool) -> Vec<u8> {
    record(
        BEGIN,
        id,
        &[(role >> 8) as u8, role as u8, keep as u8, 0, 0, 0, 0, 0],
        0,
    )
}

/// PARAMS for a request (split into records of `rec` bytes), then the empty PARAMS.
pub fn params(id: u16, method: &str, uri: &str, extra: &[(&str, &str)], rec: usize) -> Vec<u8> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut p = Vec::new();
    for (n, v) in [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", uri),
        ("SCRIPT_NAME", path),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "10.1.2.3"),
        ("REMOTE_PORT", "4567"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("HTTP_HOST", "example.test"),
    ]
    .iter()
    .chain(extra.iter())
    {
        pair(&mut p, n.as_bytes(), v.as_bytes());
    }
    let mut out = Vec::new();
    for c in p.chunks(rec.max(1)) {
        out.extend(record(PARAMS, id, c, (8 - c.len() % 8) as u8 % 8));
    }
    out.extend(record(PARAMS, id, b"", 0));
    out
}

/// STDIN records of `rec` bytes each, then the empty STDIN.
pub fn stdin(id: u16, body: &[u8], rec: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(rec.max(1)) {
        out.extend(record(STDIN, id, c, 3));
    }
    out.extend(record(STDIN, id, b"", 0));
    out
}

/// A whole request: BEGIN, PARAMS, STDIN.
pub fn request(id: u16, method: &str, uri: &str, body: &[u8], keep: bool) -> Vec<u8> {
    let mut v = begin(id, 1, keep);
    let cl = body.len().to_string();
    let extra: Vec<(&str, &str)> = if body.is_empty() {
        vec![]
    } else {
        vec![("CONTENT_LENGTH", &cl)]
    };
    v.extend(params(id, method, uri, &extra, 4096));
    v.extend(stdin(id, body, 65535));
    v
}

/// A received record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub kind: u8,
    pub id: u16,
    pub content: Vec<u8>,
}

pub struct Client {
    pub s: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(a: std::net::SocketAddr) -> Client {
        let s = std::net::TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next record, or None at EOF.
    pub fn next(&mut self) -> Option<Rec> {
        loop {
            if self.buf.len() >= 8 {
                let len = u16::from_be_bytes([self.buf[4], self.buf[5]]) as usize;
                let pad = self.buf[6] as usize;
                assert_eq!(self.buf[0], 1, "version");
                assert_eq!(
                    (8 + len + pad) % 8,
                    0,
                    "output records are padded to 8 bytes"
                );
                if self.buf.len() >= 8 + len + pad {
                    let r = Rec {
                        kind: self.buf[1],
                        id: u16::from_be_bytes([self.buf[2], self.buf[3]]),
                        content: self.buf[8..8 + len].to_vec(),
                    };
                    self.buf.drain(..8 + len + pad);
                    return Some(r);
                }
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads until END_REQUEST for `id`, returning (stdout, stderr, protocolStatus) and the
    /// other records seen meanwhile.
    pub fn response(&mut self, id: u16) -> (Vec<u8>, Vec<u8>, u8) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            let r = self.next().expect("END_REQUEST before EOF");
            assert_eq!(r.id, id, "unexpected record {r:?}");
            match r.kind {
                STDOUT => out.extend(r.content),
                STDERR => err.extend(r.content),
                END => return (out, err, r.content[4]),
                k => panic!("unexpected record type {k}"),
            }
        }
    }
}

/// Splits a CGI response into (status, headers, body).
pub fn parse_cgi(out: &[u8]) -> (u16, String, Vec<u8>) {
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("CGI head")
        + 4;
    let head = String::from_utf8(out[..end].to_vec()).unwrap();
    let status = head
        .lines()
        .find_map(|l| l.strip_prefix("Status: "))
        .map(|s| s[..3].parse().unwrap())
        .unwrap_or(200);
    (status, head, out[end..].to_vec())
}
