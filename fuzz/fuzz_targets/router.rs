//! The router and percent-decoding (core/src/router.rs, percent.rs) and cookies
//! (cookie.rs): routes from arbitrary patterns never panic to add or look up; a concrete
//! path made from a route's pattern is found (or 405), with the parameters it was filled
//! with; percent-encoded bytes decode back to themselves; arbitrary input to the decoders
//! and the Cookie parser never panics and stays within bounds; a Set-Cookie that builds
//! round-trips through the Cookie parser.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myriad::router::{Match, Params, Router};
use myriad::{cookie, percent};

#[derive(Arbitrary, Debug)]
enum Seg {
    Static(u8),
    Param(u8),
    Wild(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Route {
    method: u8,
    segs: Vec<Seg>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<Route>,
    fills: Vec<Vec<u8>>,
    paths: Vec<String>,
    raw: Vec<u8>,
    cookie_name: String,
    cookie_value: String,
}

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const STATICS: [&str; 4] = ["a", "b", "users", ""];
const NAMES: [&str; 4] = ["id", "name", "x", "rest"];

fn encode(b: &[u8], upper: bool) -> String {
    let mut s = String::from("x"); // never a static segment's text
    for &c in b {
        if c.is_ascii_alphanumeric() || c == b'-' {
            s.push(c as char);
        } else if upper {
            s.push_str(&format!("%{c:02X}"));
        } else {
            s.push_str(&format!("%{c:02x}"));
        }
    }
    s
}

fuzz_target!(|inp: Input| {
    // Percent-decoding: encoded bytes come back; raw input stays in bounds.
    let enc = encode(&inp.raw, inp.raw.len().is_multiple_of(2));
    let dec = percent::decode_strict(enc.as_bytes()).expect("valid escapes");
    assert_eq!(&dec[1..], &inp.raw[..]);
    if let Ok(d) = percent::decode_strict(&inp.raw) {
        assert!(d.len() <= inp.raw.len());
    }
    let f = percent::decode_form(&inp.raw);
    assert!(f.len() <= inp.raw.len());
    let pairs = percent::parse_urlencoded(&inp.raw).count();
    assert!(pairs <= inp.raw.iter().filter(|&&c| c == b'&').count() + 1);

    // Cookies.
    if let Ok(s) = std::str::from_utf8(&inp.raw) {
        for (n, v) in cookie::parse(s) {
            assert!(n.len() + v.len() <= s.len());
        }
    }
    if let Ok(sc) = cookie::SetCookie::new(&inp.cookie_name, &inp.cookie_value).build() {
        assert!(sc.starts_with(&format!("{}={}", inp.cookie_name, inp.cookie_value)));
        let header = format!("{}={}", inp.cookie_name, inp.cookie_value);
        // A DQUOTE-wrapped value is read without its quotes (RFC 6265 §4.1.1).
        let v = inp.cookie_value.as_str();
        let bare = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        assert_eq!(cookie::get(&header, &inp.cookie_name), Some(bare));
    }

    // The router.
    let mut r: Router<usize> = Router::new();
    let mut added = Vec::new();
    for (i, route) in inp.routes.iter().enumerate().take(32) {
        let mut pattern = String::new();
        for s in &route.segs {
            pattern.push('/');
            match s {
                Seg::Static(k) => pattern.push_str(STATICS[*k as usize % STATICS.len()]),
                Seg::Param(k) => {
                    pattern.push(':');
                    pattern.push_str(NAMES[*k as usize % NAMES.len()]);
                }
                Seg::Wild(k) => {
                    pattern.push('*');
                    pattern.push_str(NAMES[*k as usize % NAMES.len()]);
                }
                Seg::Raw(t) => pattern.push_str(t),
            }
        }
        if pattern.is_empty() {
            pattern.push('/');
        }
        let method = METHODS[route.method as usize % METHODS.len()];
        if r.add(method, &pattern, i).is_ok() {
            added.push((method, pattern, i));
        }
    }
    let mut params = Params::new();
    for p in &inp.paths {
        let _ = r.find("GET", p, &mut params);
        for k in 0..params.len() {
            assert!(params.at(k).is_some());
        }
    }
    let mut fill = inp.fills.iter().cycle();
    for (method, pattern, i) in &added {
        if inp.fills.is_empty() || pattern.contains(['%', '?', '#']) {
            continue;
        }
        let mut path = String::new();
        let mut want: Vec<(String, Vec<u8>)> = Vec::new();
        for seg in pattern.split('/').skip(1) {
            path.push('/');
            if let Some(name) = seg.strip_prefix(':').filter(|n| !n.is_empty()) {
                let v = fill.next().unwrap();
                path.push_str(&encode(v, true));
                let mut full = b"x".to_vec();
                full.extend_from_slice(v);
                want.push((name.to_string(), full));
            } else if seg.starts_with('*') {
                let v = fill.next().unwrap();
                path.push_str(&encode(v, false));
            } else {
                path.push_str(seg);
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        match r.find(method, &path, &mut params) {
            Match::Found(j) if j == i => {
                for (name, v) in &want {
                    if let Ok(s) = std::str::from_utf8(v) {
                        assert_eq!(params.get(name), Some(s), "{name} of {pattern} for {path}");
                    }
                }
            }
            // Another route may take precedence (static > param > wildcard), or the value
            // not be UTF-8 (400).
            Match::Found(_) | Match::MethodNotAllowed(_) | Match::BadRequest => {}
            Match::NotFound => panic!("{path} made from {pattern} not found"),
        }
    }
});
