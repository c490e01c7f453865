//! Access log formats: an nginx `log_format`-like string of literal text and `$variables`,
//! parsed once into pieces and rendered per request into a caller's buffer with no
//! allocation (the time fields are formatted once per second).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::app::Protocol;
use crate::app::Request;
use crate::net::PeerAddr;

/// The combined log format (nginx's and Apache's default for access logs).
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                            $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// One variable of a format.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    RemotePort,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    ServerProtocol,
    ServerAddr,
    ServerPort,
    Status,
    BodyBytesSent,
    RequestLength,
    RequestTime,
    Protocol,
    Pid,
    /// `$http_NAME`: the request header NAME ('_' for '-'), stored as the header name.
    Header(Box<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(Box<[u8]>),
    Var(Var),
}

/// A parsed format.
#[derive(Clone, Debug)]
pub(crate) struct Format {
    pieces: Vec<Piece>,
}

fn var_of(name: &str) -> Option<Var> {
    Some(match name {
        "remote_addr" => Var::RemoteAddr,
        "remote_port" => Var::RemotePort,
        "remote_user" => Var::RemoteUser,
        "time_local" => Var::TimeLocal,
        "time_iso8601" => Var::TimeIso8601,
        "msec" => Var::Msec,
        "request" => Var::Request,
        "request_method" => Var::RequestMethod,
        "request_uri" => Var::RequestUri,
        "uri" | "document_uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "server_protocol" => Var::ServerProtocol,
        "server_addr" => Var::ServerAddr,
        "server_port" => Var::ServerPort,
        "status" => Var::Status,
        "body_bytes_sent" => Var::BodyBytesSent,
        "request_length" => Var::RequestLength,
        "request_time" => Var::RequestTime,
        "protocol" => Var::Protocol,
        "pid" => Var::Pid,
        _ => {
            let h = name.strip_prefix("http_").filter(|h| !h.is_empty())?;
            Var::Header(h.replace('_', "-").to_ascii_lowercase().into())
        }
    })
}

impl Format {
    /// Parses `s`: literal text with `$name` or `${name}` variables (names of letters,
    /// digits and '_'). An unknown variable or a '$' without a name is an error naming it.
    pub(crate) fn parse(s: &str) -> io::Result<Format> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            let braced = b.get(i + 1) == Some(&b'{');
            let start = i + 1 + usize::from(braced);
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            let name = &s[start..end];
            if name.is_empty() {
                return Err(bad(format!(
                    "access log format: '$' without a variable name at byte {i}"
                )));
            }
            if braced && b.get(end) != Some(&b'}') {
                return Err(bad(format!(
                    "access log format: '${{{name}' is missing its '}}'"
                )));
            }
            let Some(v) = var_of(name) else {
                return Err(bad(format!("access log format: unknown variable ${name}")));
            };
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit).into()));
            }
            pieces.push(Piece::Var(v));
            i = end + usize::from(braced);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit.into()));
        }
        Ok(Format { pieces })
    }
}

/// What a finished request leaves for its log line.
pub(crate) struct Entry<'a> {
    pub(crate) req: &'a Request,
    pub(crate) status: u16,
    pub(crate) body_bytes: u64,
    pub(crate) body_in: u64,
    /// When the request's first byte arrived.
    pub(crate) start: SystemTime,
    pub(crate) now: SystemTime,
}

/// The time fields of one second, and the process id, formatted once.
pub(crate) struct Clock {
    secs: u64,
    local: [u8; 26],
    iso: [u8; 25],
    pid: ([u8; 20], usize),
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let mut c = Clock {
            secs: u64::MAX,
            local: [b' '; 26],
            iso: [b' '; 25],
            pid: ([0; 20], 0),
        };
        let mut t = [0; 20];
        let p = decimal(u64::from(std::process::id()), &mut t);
        c.pid.0[..p.len()].copy_from_slice(p);
        c.pid.1 = p.len();
        c
    }

    /// The pid is read again after a fork (the buffer of a forked worker is its own).
    pub(crate) fn refresh_pid(&mut self) {
        *self = Clock::new();
    }

    fn update(&mut self, secs: u64) {
        if secs == self.secs {
            return;
        }
        self.secs = secs;
        let t = secs as libc::time_t;
        // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: as above; localtime_r is the thread-safe variant.
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            // SAFETY: as above, for gmtime_r.
            unsafe { libc::gmtime_r(&t, &mut tm) };
            tm.tm_gmtoff = 0;
        }
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let two = |v: i32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
        let year = tm.tm_year + 1900;
        let y = [
            b'0' + (year / 1000 % 10) as u8,
            b'0' + (year / 100 % 10) as u8,
            b'0' + (year / 10 % 10) as u8,
            b'0' + (year % 10) as u8,
        ];
        let off = tm.tm_gmtoff;
        let sign = if off < 0 { b'-' } else { b'+' };
        let off = off.unsigned_abs() / 60;
        let (oh, om) = (two((off / 60) as i32), two((off % 60) as i32));
        let month = MONTHS[tm.tm_mon.clamp(0, 11) as usize];
        let (d, h, m, s) = (
            two(tm.tm_mday),
            two(tm.tm_hour),
            two(tm.tm_min),
            two(tm.tm_sec),
        );
        // 04/Dec/2026:18:29:41 +0000
        let l = &mut self.local;
        l[0..2].copy_from_slice(&d);
        l[2] = b'/';
        l[3..6].copy_from_slice(month);
        l[6] = b'/';
        l[7..11].copy_from_slice(&y);
        l[11] = b':';
        l[12..14].copy_from_slice(&h);
        l[14] = b':';
        l[15..17].copy_from_slice(&m);
        l[17] = b':';
        l[18..20].copy_from_slice(&s);
        l[20] = b' ';
        l[21] = sign;
        l[22..24].copy_from_slice(&oh);
        l[24..26].copy_from_slice(&om);
        // 2026-12-04T18:29:41+00:00
        let mo = two(tm.tm_mon + 1);
        let i = &mut self.iso;
        i[0..4].copy_from_slice(&y);
        i[4] = b'-';
        i[5..7].copy_from_slice(&mo);
        i[7] = b'-';
        i[8..10].copy_from_slice(&d);
        i[10] = b'T';
        i[11..13].copy_from_slice(&h);
        i[13] = b':';
        i[14..16].copy_from_slice(&m);
        i[16] = b':';
        i[17..19].copy_from_slice(&s);
        i[19] = sign;
        i[20..22].copy_from_slice(&oh);
        i[22] = b':';
        i[23..25].copy_from_slice(&om);
    }
}

/// Formats `v` in decimal into the end of `t`.
fn decimal(mut v: u64, t: &mut [u8; 20]) -> &[u8] {
    let mut i = t.len();
    loop {
        i -= 1;
        t[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &t[i..];
        }
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(decimal(v, &mut [0; 20]));
}

/// `ms` milliseconds as seconds with three decimals ("0.003").
fn put_millis(out: &mut Vec<u8>, ms: u64) {
    put_u64(out, ms / 1000);
    let f = ms % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

/// A value as nginx writes it (`escape=default`): '"', '\' and bytes outside printable
/// ASCII as `\xHH`; an empty value as "-".
fn put_escaped(out: &mut Vec<u8>, v: &[u8]) {
    if v.is_empty() {
        out.push(b'-');
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in v {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            out.push(c);
        }
    }
}

fn put_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    use std::io::Write;
    // Writing into a Vec cannot fail; a warmed-up buffer has the room.
    let _ = write!(out, "{ip}");
}

/// A span of the request's storage, or nothing if it is out of range.
fn span(req: &Request, s: crate::app::Span) -> &[u8] {
    req.buf.get(s.0 as usize..s.1 as usize).unwrap_or_default()
}

/// A FastCGI parameter of the request (last one wins), or nothing.
fn param<'a>(req: &'a Request, name: &[u8]) -> &'a [u8] {
    if req.proto != Protocol::Fcgi {
        return b"";
    }
    req.params
        .iter()
        .rev()
        .find(|(n, _)| span(req, *n) == name)
        .map_or(&[][..], |(_, v)| span(req, *v))
}

/// The request head's length as sent in canonical form: request line and header lines
/// (FastCGI: the parameters' names and values with their length bytes).
fn head_length(req: &Request) -> u64 {
    let len = |s: crate::app::Span| u64::from(s.1.saturating_sub(s.0));
    if req.proto == Protocol::Fcgi {
        return req
            .params
            .iter()
            .map(|(n, v)| {
                let lb = |l: u64| if l > 127 { 4 } else { 1 };
                len(*n) + len(*v) + lb(len(*n)) + lb(len(*v))
            })
            .sum();
    }
    let line = len(req.method) + 1 + len(req.target) + 1 + 8 + 2;
    let hdrs: u64 = req
        .headers
        .iter()
        .map(|(n, v)| len(*n) + 2 + len(*v) + 2)
        .sum();
    line + hdrs + 2
}

impl Format {
    /// Appends the line of `e` (with its newline) to `out`.
    pub(crate) fn render(&self, e: &Entry<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
        let req = e.req;
        let wall = e.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        for p in &self.pieces {
            let v = match p {
                Piece::Lit(l) => {
                    out.extend_from_slice(l);
                    continue;
                }
                Piece::Var(v) => v,
            };
            match v {
                Var::RemoteAddr => match req.peer {
                    PeerAddr::Inet(a) => put_ip(out, a.ip()),
                    PeerAddr::Unix => out.extend_from_slice(b"unix:"),
                },
                Var::RemotePort => match req.peer {
                    PeerAddr::Inet(a) => put_u64(out, u64::from(a.port())),
                    PeerAddr::Unix => out.push(b'-'),
                },
                Var::RemoteUser => put_escaped(out, param(req, b"REMOTE_USER")),
                Var::TimeLocal => {
                    clock.update(wall.as_secs());
                    out.extend_from_slice(&clock.local);
                }
                Var::TimeIso8601 => {
                    clock.update(wall.as_secs());
                    out.extend_from_slice(&clock.iso);
                }
                Var::Msec => {
                    put_u64(out, wall.as_secs());
                    let f = u64::from(wall.subsec_millis());
                    out.extend_from_slice(&[
                        b'.',
                        b'0' + (f / 100) as u8,
                        b'0' + (f / 10 % 10) as u8,
                        b'0' + (f % 10) as u8,
                    ]);
                }
                Var::Request => {
                    let m = span(req, req.method);
                    if m.is_empty() {
                        out.push(b'-');
                    } else {
                        put_escaped(out, m);
                        out.push(b' ');
                        put_escaped(out, span(req, req.target));
                        out.push(b' ');
                        out.extend_from_slice(req.version().as_bytes());
                    }
                }
                Var::RequestMethod => put_escaped(out, span(req, req.method)),
                Var::RequestUri => put_escaped(out, span(req, req.target)),
                Var::Uri => put_escaped(out, span(req, req.path)),
                Var::Args => put_escaped(out, span(req, req.query)),
                Var::ServerProtocol => out.extend_from_slice(req.version().as_bytes()),
                Var::ServerAddr => match req.local {
                    Some(a) => put_ip(out, a.ip()),
                    None => out.push(b'-'),
                },
                Var::ServerPort => match req.local {
                    Some(a) => put_u64(out, u64::from(a.port())),
                    None => out.push(b'-'),
                },
                Var::Status => put_u64(out, u64::from(e.status)),
                Var::BodyBytesSent => put_u64(out, e.body_bytes),
                Var::RequestLength => put_u64(out, head_length(req) + e.body_in),
                Var::RequestTime => {
                    let d = e.now.duration_since(e.start).unwrap_or_default();
                    put_millis(out, d.as_millis() as u64);
                }
                Var::Protocol => out.extend_from_slice(match req.proto {
                    Protocol::Http => b"HTTP",
                    Protocol::Fcgi => b"FastCGI",
                }),
                Var::Pid => out.extend_from_slice(&clock.pid.0[..clock.pid.1]),
                Var::Header(name) => put_escaped(out, req.header(name).unwrap_or_default()),
            }
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(proto: Protocol) -> Request {
        let mut r = Request::new();
        r.method = r.store(b"GET");
        r.target = r.store(b"/a/b?x=1");
        r.path = (r.target.0, r.target.0 + 4);
        r.query = (r.target.0 + 5, r.target.1);
        let (n, v) = (r.store(b"user-agent"), r.store(b"curl/8 \"quoted\"\x01"));
        r.headers.push((n, v));
        let (n, v) = (r.store(b"x-request-id"), r.store(b"abc"));
        r.headers.push((n, v));
        r.peer = PeerAddr::Inet("192.0.2.7:5555".parse().unwrap());
        r.local = Some("127.0.0.1:8080".parse().unwrap());
        r.proto = proto;
        r
    }

    extern "C" {
        fn tzset();
    }

    fn utc() {
        std::env::set_var("TZ", "UTC");
        // SAFETY: tzset (POSIX) reads TZ again; nothing else in these tests reads the time zone.
        unsafe { tzset() };
    }

    fn line(fmt: &str, req: &Request) -> String {
        let f = Format::parse(fmt).unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let e = Entry {
            req,
            status: 404,
            body_bytes: 10,
            body_in: 5,
            start,
            now: start + Duration::from_millis(1234),
        };
        let mut out = Vec::new();
        f.render(&e, &mut Clock::new(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_is_the_default_shape() {
        utc();
        let l = line(COMBINED, &request(Protocol::Http));
        assert_eq!(
            l,
            "192.0.2.7 - - [14/Nov/2023:22:13:21 +0000] \"GET /a/b?x=1 HTTP/1.1\" 404 10 \
             \"-\" \"curl/8 \\x22quoted\\x22\\x01\"\n"
        );
    }

    #[test]
    fn every_variable_renders() {
        utc();
        let req = request(Protocol::Http);
        let l = line(
            "$remote_port|$time_iso8601|$msec|$request_method|$request_uri|$uri|$args|\
             $server_protocol|$server_addr|$server_port|$request_time|$protocol|${http_x_request_id}x|$http_missing|$request_length",
            &req,
        );
        let len = 3 + 1 + 8 + 1 + 8 + 2 + (10 + 2 + 16 + 2) + (12 + 2 + 3 + 2) + 2 + 5;
        assert_eq!(
            l,
            format!(
                "5555|2023-11-14T22:13:21+00:00|1700000001.234|GET|/a/b?x=1|/a/b|x=1|HTTP/1.1|\
                 127.0.0.1|8080|1.234|HTTP|abcx|-|{len}\n"
            )
        );
        let l = line("$pid $protocol", &request(Protocol::Fcgi));
        assert_eq!(l, format!("{} FastCGI\n", std::process::id()));
    }

    #[test]
    fn bad_formats_name_the_problem() {
        for (f, msg) in [
            ("$nope", "unknown variable $nope"),
            ("a $ b", "without a variable name"),
            ("${status", "missing its '}'"),
            ("$http_", "unknown variable $http_"),
        ] {
            let e = Format::parse(f).unwrap_err();
            assert!(e.to_string().contains(msg), "{f}: {e}");
        }
        assert!(Format::parse("plain text, no variables").is_ok());
    }
}
