//! The HTTP head parser on requests built from parts (a method, a target, a version, a
//! header list, line endings): checked against a model of RFC 9112's framing rules, so
//! an accepted request is framed as the RFC says and a request the RFC calls faulty
//! (CL + TE, differing lengths, TE not ending in chunked, a missing or repeated Host...)
//! is rejected.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myriad::fuzzing::{parse_head, BodyFraming, HeadOutcome};

#[derive(Arbitrary, Debug)]
enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    Token(u8),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Digits(u64),
    Text(u8),
    Codings(Vec<bool>),
    List(Vec<u16>),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Field {
    name: Name,
    value: Value,
    space: bool,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: u8,
    target: u8,
    minor: bool,
    fields: Vec<Field>,
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "OPTIONS", "X-CUSTOM"];
const TARGETS: [&str; 6] = ["/", "/a/b?c=d", "*", "http://h/p?q", "https://h", "/%41"];
const TEXT: [&str; 6] = ["close", "keep-alive", "100-continue", "h", "a, b", "x y"];

/// What RFC 9112 makes of the framing: Ok(body) or Err(()) for a faulty request.
fn model(minor: u8, fields: &[(String, Vec<u8>)]) -> Result<BodyFraming, ()> {
    let mut hosts = 0;
    let mut cl: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut te = false;
    for (n, v) in fields {
        let v = std::str::from_utf8(v).map_err(|_| ())?;
        match n.to_ascii_lowercase().as_str() {
            "host" => {
                // RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ]; an IP-literal is
                // "[" ( IPv6address / IPvFuture ) "]" (mutations do make them).
                let v = v.trim_matches([' ', '\t']);
                let (h, port) = if let Some(lit) = v.strip_prefix('[') {
                    let (inner, rest) = lit.split_once(']').ok_or(())?;
                    let future = inner
                        .strip_prefix(['v', 'V'])
                        .and_then(|f| f.split_once('.'))
                        .is_some_and(|(x, y)| {
                            !x.is_empty()
                                && x.bytes().all(|c| c.is_ascii_hexdigit())
                                && !y.is_empty()
                                && y.chars().all(|c| {
                                    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:".contains(c)
                                })
                        });
                    if !future && inner.parse::<std::net::Ipv6Addr>().is_err() {
                        return Err(());
                    }
                    let port = match rest.strip_prefix(':') {
                        Some(p) => p,
                        None if rest.is_empty() => "",
                        None => return Err(()),
                    };
                    ("", port)
                } else {
                    v.split_once(':').unwrap_or((v, ""))
                };
                let reg = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=%".contains(c);
                let pct_ok = h
                    .split('%')
                    .skip(1)
                    .all(|p| p.len() >= 2 && p.bytes().take(2).all(|c| c.is_ascii_hexdigit()));
                if !pct_ok || !h.chars().all(reg) || !port.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(());
                }
                hosts += 1;
            }
            "content-length" => {
                for t in v.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                    if t.is_empty() || t.len() > 19 || !t.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(());
                    }
                    let x: u64 = t.parse().map_err(|_| ())?;
                    if cl.is_some_and(|c| c != x) {
                        return Err(());
                    }
                    cl = Some(x);
                }
            }
            "transfer-encoding" => {
                te = true;
                codings.extend(
                    v.split(',')
                        .map(|t| t.trim_matches([' ', '\t']).to_ascii_lowercase()),
                );
            }
            "expect"
                if minor == 1
                    && !v
                        .trim_matches([' ', '\t'])
                        .eq_ignore_ascii_case("100-continue") =>
            {
                return Err(());
            }
            _ => {}
        }
    }
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(());
    }
    if te {
        if cl.is_some() || minor == 0 || codings.last().map(String::as_str) != Some("chunked") {
            return Err(());
        }
        if codings.len() != 1 {
            return Err(()); // 400 or 501: not served either way
        }
        return Ok(BodyFraming::Chunked);
    }
    Ok(match cl {
        None | Some(0) => BodyFraming::None,
        Some(v) => BodyFraming::Length(v),
    })
}

fuzz_target!(|r: Req| {
    let method = METHODS[r.method as usize % METHODS.len()];
    let target = TARGETS[r.target as usize % TARGETS.len()];
    let minor = u8::from(r.minor);
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let mut clean = true;
    for f in &r.fields {
        let name = match f.name {
            Name::Host => "Host".to_string(),
            Name::ContentLength => "Content-Length".into(),
            Name::TransferEncoding => "Transfer-Encoding".into(),
            Name::Connection => "Connection".into(),
            Name::Expect => "Expect".into(),
            Name::Token(t) => format!("X-{}", t % 16),
        };
        let value: Vec<u8> = match &f.value {
            Value::Digits(d) => d.to_string().into_bytes(),
            Value::Text(t) => TEXT[*t as usize % TEXT.len()].into(),
            Value::Codings(c) => c
                .iter()
                .map(|&ch| if ch { "chunked" } else { "gzip" })
                .collect::<Vec<_>>()
                .join(", ")
                .into_bytes(),
            Value::List(l) => l
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            Value::Bytes(b) => {
                // Visible ASCII and spaces inside only: anything else is the byte soup's job.
                if b.iter().any(|&c| !(0x21..0x7f).contains(&c)) {
                    clean = false;
                }
                b.clone()
            }
        };
        fields.push((name, value));
        let _ = f.space;
    }
    if !clean {
        return;
    }
    let mut buf = format!("{method} {target} HTTP/1.{minor}\r\n").into_bytes();
    for (i, (n, v)) in fields.iter().enumerate() {
        buf.extend_from_slice(n.as_bytes());
        buf.extend_from_slice(if r.fields[i].space { b": " } else { b":" });
        buf.extend_from_slice(v);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    // The size limits (100 fields, 64 KiB) are not part of the framing model.
    if fields.len() > 100 || buf.len() > 60 * 1024 {
        return;
    }
    let got = parse_head(&buf, 64 * 1024, 8192);
    // Method and target rules (RFC 9112 §3.2): '*' only for OPTIONS.
    let target_ok = target != "*" || method == "OPTIONS";
    let want = if target_ok {
        model(minor, &fields)
    } else {
        Err(())
    };
    match (&got, &want) {
        (HeadOutcome::Complete(h), Ok(body)) => {
            assert_eq!(h.body, *body);
            assert_eq!(h.consumed, buf.len());
            assert_eq!(
                (h.method.as_str(), h.target.as_str(), h.minor),
                (method, target, minor)
            );
            assert_eq!(h.headers.len(), fields.len());
            for ((k, v), (n, w)) in h.headers.iter().zip(&fields) {
                assert_eq!(k, n);
                assert_eq!(v, w.as_slice().trim_ascii(), "values trimmed of OWS");
            }
        }
        (HeadOutcome::Reject(_), Err(())) => {}
        _ => panic!(
            "parser {got:?}, RFC model {want:?} for {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
});
