//! Request-head parsing: httparse for the syntax, plus the RFC 9112/9110 rules that keep
//! requests from being smuggled (framing conflicts, bad lengths, bare LF, missing or
//! repeated Host...). Sans-IO: bytes in, a filled [`Request`] and its framing out.

use std::mem::MaybeUninit;

use crate::app::{Request, Span};

/// Most headers per request (more gives 431).
pub(crate) const MAX_HEADERS: usize = 100;

/// Limits applied while parsing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_head: usize,
    pub max_line: usize,
}

/// How the body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// What the connection needs to know about a parsed head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    pub body: BodyKind,
    pub keep_alive: bool,
    pub is_head: bool,
}

/// A head that cannot be served: the status to answer (then close).
pub(crate) type Reject = u16;

fn span_of(base: &[u8], part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&c| c == b',').map(trim_ows)
}

/// Every LF must follow a CR (no bare LF line endings: a smuggling vector between parsers
/// that disagree on them).
fn has_bare_lf(head: &[u8]) -> bool {
    let Some((&first, rest)) = head.split_first() else {
        return false;
    };
    // No early exit: the whole head is scanned in vector-wide steps (it is short).
    first == b'\n'
        || head
            .iter()
            .zip(rest)
            .fold(false, |bad, (&p, &c)| bad | ((c == b'\n') & (p != b'\r')))
}

/// Parses the head at the start of `buf` into `req`. `Ok(None)`: incomplete (read more);
/// `Ok(Some((n, framing)))`: the head took `n` bytes; `Err(status)`: reject.
pub(crate) fn parse_head(
    buf: &[u8],
    limits: &Limits,
    req: &mut Request,
) -> Result<Option<(usize, Framing)>, Reject> {
    // Uninitialised: initialising 100 headers (3.2 KB) per request cost more than the parse.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut []);
    let n = match r.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Skip the empty lines a client may send before the request line.
            let start = buf
                .iter()
                .position(|&c| c != b'\r' && c != b'\n')
                .unwrap_or(0);
            let line_done = buf[start..].contains(&b'\n');
            // Past the limit even if the last byte seen is the line's CR: a complete head
            // is held to the same length, so where the reads were cut does not matter.
            if !line_done && buf.len() - start > limits.max_line + 1 {
                return Err(414);
            }
            // Incomplete and already at the limit: it can only grow past it.
            if buf.len() >= limits.max_head {
                return Err(431);
            }
            return Ok(None);
        }
        Err(httparse::Error::Version) => {
            // "GET /a b HTTP/1.1" also lands here; only a real version token is a 505.
            // (After the empty lines a client may send first, as httparse skips them.)
            let start = buf
                .iter()
                .position(|&c| c != b'\r' && c != b'\n')
                .unwrap_or(0);
            let rest = &buf[start..];
            let line_done = rest.contains(&b'\n');
            let line = rest.split(|&c| c == b'\n').next().unwrap_or(b"");
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut parts = line.split(|&c| c == b' ');
            let (_, _, v, extra) = (parts.next(), parts.next(), parts.next(), parts.next());
            return match (v, extra) {
                // "HTTP/2" with the line unfinished: 505 or 400 depends on what follows
                // (found by fuzz/http_conn: the status depended on where reads were cut).
                (Some(v), None)
                    if !line_done && version_prefix(v) && rest.len() <= limits.max_line =>
                {
                    Ok(None)
                }
                (Some(v), None) if line_done && v.len() == 8 && version_prefix(v) => Err(505),
                _ => Err(400),
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    if n > limits.max_head {
        return Err(431);
    }
    let first = buf
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .unwrap_or(0);
    let head = &buf[..n];
    if has_bare_lf(&head[first..]) {
        return Err(400);
    }
    let method = r.method.unwrap_or("");
    let target = r.path.unwrap_or("");
    let minor = r.version.unwrap_or(1);
    // The request line (without its CRLF) is held to the limit the incomplete one is
    // (found by fuzz/http_head: a line cut before its end was 414, whole it was accepted).
    let line = head[first..].split(|&c| c == b'\n').next().unwrap_or(b"");
    if line.len().saturating_sub(1) > limits.max_line || target.len() > limits.max_line {
        return Err(414);
    }

    req.reset();
    req.buf.extend_from_slice(head);
    let base = &buf[..n];
    req.method = span_of(base, method.as_bytes());
    req.target = span_of(base, target.as_bytes());
    req.minor = minor;

    if method == "CONNECT" {
        return Err(501);
    }
    // Request-target forms (RFC 9112 §3.2).
    let path_part: &str = if target.starts_with('/') {
        target
    } else if target == "*" {
        if method != "OPTIONS" {
            return Err(400);
        }
        target
    } else if let Some(rest) = strip_scheme(target) {
        // absolute-form: the path starts at the first '/' after the authority.
        let after = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
        if after.is_empty() || after.starts_with('?') {
            // "http://host" or "http://host?q": the path is "/".
            let q = after;
            let p = req.store(b"/");
            req.path = p;
            req.query = query_span(base, q, req);
            return finish(r.headers, base, minor, method, req, n);
        }
        after
    } else {
        return Err(400);
    };
    let b = path_part.as_bytes();
    if b.contains(&b'#') {
        return Err(400);
    }
    // '?' is ASCII: the split is at a char boundary.
    let (path, query) = match b.iter().position(|&c| c == b'?') {
        Some(i) => (&path_part[..i], &path_part[i..]),
        None => (path_part, ""),
    };
    req.path = span_of(base, path.as_bytes());
    req.query = query_span(base, query, req);
    finish(r.headers, base, minor, method, req, n)
}

/// Whether `v` is `HTTP/` DIGIT `.` DIGIT or a beginning of one (at least "HTTP/").
fn version_prefix(v: &[u8]) -> bool {
    const PAT: &[u8; 8] = b"HTTP/0.0";
    v.len() >= 5
        && v.len() <= 8
        && v.iter().zip(PAT).all(|(&c, &p)| {
            if p == b'0' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
}

/// The target after an `http://` or `https://` scheme (any case), if it has one. Compares
/// bytes: the target is the client's, and slicing it as a `&str` at a fixed length could
/// cut a multi-byte character in two (a panic). The split after a matched ASCII prefix is at
/// a character boundary.
fn strip_scheme(t: &str) -> Option<&str> {
    for s in ["http://", "https://"] {
        let head = t.as_bytes().get(..s.len());
        if head.is_some_and(|h| h.eq_ignore_ascii_case(s.as_bytes())) {
            return t.get(s.len()..);
        }
    }
    None
}

fn query_span(base: &[u8], q: &str, req: &Request) -> Span {
    match q.strip_prefix('?') {
        Some(rest) => span_of(base, rest.as_bytes()),
        None => (req.buf.len() as u32, req.buf.len() as u32),
    }
}

fn finish(
    headers: &[httparse::Header<'_>],
    base: &[u8],
    minor: u8,
    method: &str,
    req: &mut Request,
    n: usize,
) -> Result<Option<(usize, Framing)>, Reject> {
    let mut hosts = 0;
    let mut cl: Option<u64> = None;
    let mut te_seen = false;
    let mut te_codings: Vec<&[u8]> = Vec::new();
    let mut conn_close = false;
    let mut conn_keep = false;
    let mut expect = false;
    for h in headers {
        req.headers
            .push((span_of(base, h.name.as_bytes()), span_of(base, h.value)));
        let name = h.name.as_bytes();
        // Only these five names matter here; their lengths tell them apart.
        if !matches!(name.len(), 4 | 6 | 10 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to
            // any HTTP/1.1 request message that lacks a Host header field and to any
            // request message that contains more than one Host header field line or a Host
            // header field with an invalid field value."
            if !valid_host(trim_ows(h.value)) {
                return Err(400);
            }
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for t in tokens(h.value) {
                let v = parse_length(t).ok_or(400u16)?;
                if cl.is_some_and(|c| c != v) {
                    return Err(400);
                }
                cl = Some(v);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            te_codings.extend(tokens(h.value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") && minor == 1 {
            if trim_ows(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect = true;
            } else {
                return Err(417);
            }
        }
    }
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(400);
    }
    let body = if te_seen {
        // RFC 9112 §6.1: TE with CL, or TE in HTTP/1.0, is faulty framing.
        if cl.is_some() || minor == 0 {
            return Err(400);
        }
        match te_codings.last() {
            Some(last) if last.eq_ignore_ascii_case(b"chunked") => {}
            _ => return Err(400),
        }
        let chunked = te_codings
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count();
        if chunked > 1 || te_codings.iter().any(|c| c.is_empty()) {
            return Err(400);
        }
        if te_codings.len() > 1 {
            return Err(501);
        }
        req.chunked = true;
        BodyKind::Chunked
    } else {
        match cl {
            Some(0) | None => BodyKind::None,
            Some(v) => BodyKind::Length(v),
        }
    };
    req.content_length = cl;
    req.expect_continue = expect && body != BodyKind::None;
    // Method, target, path and query were all set from `&str` views of `base`.
    req.str_spans = true;
    let keep_alive = if minor == 1 {
        !conn_close
    } else {
        conn_keep && !conn_close
    };
    Ok(Some((
        n,
        Framing {
            body,
            keep_alive,
            is_head: method == "HEAD",
        },
    )))
}

/// Whether `v` is a valid Host field value (RFC 9110 §7.2, RFC 3986 §3.2.2):
///
/// ```text
/// Host       = uri-host [ ":" port ]
/// uri-host   = IP-literal / IPv4address / reg-name
/// IP-literal = "[" ( IPv6address / IPvFuture ) "]"
/// IPvFuture  = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
/// reg-name   = *( unreserved / pct-encoded / sub-delims )
/// port       = *DIGIT
/// ```
///
/// An IPv4 address is a reg-name as far as bytes go. Empty is valid (a target without an
/// authority). Whitespace, `@` (userinfo), `/ ? #` (the rest of a URI), `\`, control bytes,
/// raw non-ASCII (a name must be punycoded or percent-encoded) and a non-numeric port are
/// not. An IPv6 literal must be a whole IPv6 address (RFC 4291 §2.2 text form, as
/// `std::net::Ipv6Addr` parses it: `[3333333]` is refused).
fn valid_host(v: &[u8]) -> bool {
    let (host, rest) = if let Some(lit) = v.strip_prefix(b"[") {
        let Some(end) = lit.iter().position(|&c| c == b']') else {
            return false;
        };
        let (inner, rest) = (&lit[..end], &lit[end + 1..]);
        let ok = match inner {
            [b'v' | b'V', future @ ..] => {
                let dot = future.iter().position(|&c| c == b'.');
                dot.is_some_and(|d| {
                    d > 0
                        && future[..d].iter().all(u8::is_ascii_hexdigit)
                        && future.len() > d + 1
                        && future[d + 1..]
                            .iter()
                            .all(|&c| c == b':' || reg_name_byte(c))
                })
            }
            _ => std::str::from_utf8(inner)
                .ok()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        };
        if !ok {
            return false;
        }
        (&[][..], rest)
    } else {
        let colon = v.iter().position(|&c| c == b':').unwrap_or(v.len());
        (&v[..colon], &v[colon..])
    };
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    port_ok && valid_reg_name(host)
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        if h[i] == b'%' {
            let hex = h.get(i + 1..i + 3);
            if !hex.is_some_and(|x| x.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if reg_name_byte(h[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// unreserved / sub-delims (RFC 3986 §2.2, §2.3).
fn reg_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c)
}

/// 1*DIGIT, at most 19 digits (no sign, no spaces, no hex).
fn parse_length(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_head: 64 * 1024,
        max_line: 8192,
    };

    fn parse(b: &[u8]) -> Result<Option<(usize, Framing)>, Reject> {
        let mut r = Request::new();
        parse_head(b, &L, &mut r)
    }

    fn ok(b: &[u8]) -> (Request, Framing) {
        let mut r = Request::new();
        let (n, f) = parse_head(b, &L, &mut r).unwrap().unwrap();
        assert_eq!(n, b.len(), "whole head consumed");
        (r, f)
    }

    fn rej(b: &[u8]) -> u16 {
        match parse(b) {
            Err(s) => s,
            other => panic!("{:?} accepted: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn valid_requests() {
        let (r, f) = ok(b"GET /a/b?x=1&y HTTP/1.1\r\nHost: h\r\nX: 1\r\nx: 2\r\n\r\n");
        assert_eq!(
            (r.method(), r.target(), r.path(), r.query()),
            ("GET", "/a/b?x=1&y", "/a/b", "x=1&y")
        );
        assert_eq!(r.header("X"), Some(&b"1"[..]));
        assert_eq!(
            r.headers()
                .filter(|h| h.0.eq_ignore_ascii_case("x"))
                .count(),
            2
        );
        assert_eq!(
            f,
            Framing {
                body: BodyKind::None,
                keep_alive: true,
                is_head: false
            }
        );
        let (r, f) = ok(b"HEAD http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!((r.path(), r.query()), ("/p", "q"));
        assert!(f.is_head);
        let (r, _) = ok(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.path(), "/");
        let (_, f) = ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(f.body, BodyKind::None);
        let (_, f) = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!f.keep_alive, "1.0 closes by default");
        let (_, f) = ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(f.keep_alive);
        let (_, f) = ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n");
        assert!(!f.keep_alive);
        let (r, f) =
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((f.body, r.content_length()), (BodyKind::Length(5), Some(5)));
        let (r, f) = ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(f.body, BodyKind::Chunked);
        assert!(r.expect_continue);
        let (_, f) = ok(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(f.body, BodyKind::None);
    }

    #[test]
    fn smuggling_and_abuse_rejected() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX\x01: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: h\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"\r\nGET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTP/2\r\n\r\n", 400),
            (b"GET / HTTP/\r\0\0\x001.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/2.x\r\n\r\n", 400),
            (b"GET / HTTP/2.1\0t: t\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET a HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
            (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
            // A target that is not origin-form, with a multi-byte character across the
            // length of "http://" or "https://": a 400, not a panic.
            (b"GET aaaaaa\xc3\xa9 HTTP/1.0\r\n\r\n", 400),
            (b"GET aaaaaaa\xc3\xa9 HTTP/1.0\r\n\r\n", 400),
            (b"GET \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            // fuzz/http_head: a multi-byte character across byte 7 of a target that is
            // not origin-form panicked in the scheme check.
            (b";J ^!zzz!\xdd\x85z HTTP/1.0\r\n\r\n", 400),
            ("GET \u{e9}\u{e9}\u{e9}\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes(), 400),
        ];
        for (b, want) in cases {
            assert_eq!(rej(b), *want, "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn targets_with_multibyte_characters_at_every_offset() {
        // No offset of a multi-byte character panics the scheme check; a scheme spelled
        // with one is not a scheme.
        for pre in 0..10 {
            for ch in ["\u{e9}", "\u{20ac}", "\u{1f600}"] {
                let t = format!("{}{ch}x", "h".repeat(pre));
                let head = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
                assert_eq!(rej(head.as_bytes()), 400, "{t:?}");
                let abs = format!("GET http://h/{t} HTTP/1.1\r\nHost: h\r\n\r\n");
                let (r, _) = ok(abs.as_bytes());
                assert_eq!(r.path(), format!("/{t}"));
            }
        }
        let (r, _) = ok(b"GET HTTPS://h/p HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.path(), "/p");
    }

    #[test]
    fn host_values() {
        let good: &[&[u8]] = &[
            b"h",
            b"",
            b"example.com",
            b"example.com:8080",
            b"example.com:",
            b"127.0.0.1",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:8080",
            b"[2001:db8::7]",
            b"[::ffff:192.0.2.1]:1",
            b"[v1.fe80::a+en1]",
            b"xn--caf-dma.example",
            b"a%20b",
            b"a_b-c~d!$&'()*+,;=",
        ];
        for v in good {
            assert!(valid_host(v), "{:?}", String::from_utf8_lossy(v));
            let head = [&b"GET / HTTP/1.1\r\nHost: "[..], v, b"\r\n\r\n"].concat();
            ok(&head);
        }
        let bad: &[&[u8]] = &[
            b"a b",
            b"a\tb",
            b"user@h",
            b"h/p",
            b"h?q",
            b"h#f",
            b"h\\x",
            b"h\x01",
            b"h\x7f",
            b"caf\xc3\xa9",
            b"h:80a",
            b"h:-1",
            b"h: 80",
            b"h:80:80",
            b"[::1",
            b"::1",
            b"[]",
            b"[::g]",
            // Found by the http_request fuzz target: hex digits that are no IPv6 address.
            b"[3333333]",
            b"[1:2:3:4:5:6:7:8:9]",
            b"[::1]x",
            b"[::1]:a",
            b"[v1]",
            b"[v.x]",
            b"[vx.y]",
            b"a%2",
            b"a%zz",
            b"\"h\"",
            b"<h>",
        ];
        for v in bad {
            assert!(!valid_host(v), "{:?}", String::from_utf8_lossy(v));
            let head = [&b"GET / HTTP/1.1\r\nHost: "[..], v, b"\r\n\r\n"].concat();
            if let Ok(Some(_)) | Ok(None) = parse(&head) {
                panic!("accepted Host {:?}", String::from_utf8_lossy(v));
            }
        }
        // HTTP/1.0 without a Host is still fine; with a bad one it is not.
        ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(rej(b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n"), 400);
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
        assert_eq!(rej(long.as_bytes()), 414);
        let partial = format!("GET /{}", "a".repeat(9000));
        assert_eq!(rej(partial.as_bytes()), 414);
        // A target under the limit in a line over it: 414 whole and cut alike (it was
        // accepted whole, 414 cut; found by fuzz/http_head).
        let line = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(8185));
        assert_eq!(rej(line.as_bytes()), 414);
        assert_eq!(rej(&line.as_bytes()[..8195]), 414);
        // A line of exactly the limit, whole and cut just before its LF.
        let exact = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(8192 - 14));
        assert!(parse(exact.as_bytes()).unwrap().is_some());
        assert_eq!(parse(&exact.as_bytes()[..8193]), Ok(None));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\n{}",
            "X-A: aaaaaaaaaa\r\n".repeat(5000)
        );
        assert_eq!(rej(big.as_bytes()), 431);
        let many = format!(
            "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "X: a\r\n".repeat(150)
        );
        assert_eq!(rej(many.as_bytes()), 431);
    }

    #[test]
    fn valid_requests_split_at_every_byte() {
        let reqs: [&[u8]; 3] = [
            b"GET /p?q=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nContent-Type: text/x\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for full in reqs {
            for cut in 0..full.len() {
                assert_eq!(parse(&full[..cut]), Ok(None), "prefix of {cut} bytes");
            }
            let (r, _) = ok(full);
            assert_eq!(r.header("host"), Some(&b"h"[..]));
        }
        // A version that will be refused is refused the same way however it is cut.
        let v2 = b"GET / HTTP/2.0\r\nHost: h\r\n\r\n";
        for cut in 12..v2.len() {
            assert!(
                matches!(parse(&v2[..cut]), Ok(None) | Err(505)),
                "cut at {cut}"
            );
        }
    }
}
