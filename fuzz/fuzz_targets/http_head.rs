//! The HTTP request-head parser on raw bytes: no panic; spans inside the request (checked
//! in myriad::fuzzing); only the head's bytes matter; every proper prefix of an accepted
//! head is incomplete; the fields agree with the head's framing rules.
#![no_main]
use libfuzzer_sys::fuzz_target;
use myriad::fuzzing::{parse_head, BodyFraming, HeadOutcome};

fuzz_target!(|data: &[u8]| {
    // An odd first byte picks small limits, so that 414 and 431 are reached.
    let (max_head, max_line, buf) = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => (64 + b as usize * 4, 16 + b as usize, rest),
        _ => (64 * 1024, 8192, data),
    };
    let whole = parse_head(buf, max_head, max_line);
    let HeadOutcome::Complete(h) = &whole else {
        return;
    };
    let n = h.consumed;
    assert!(n <= max_head);
    assert_eq!(
        parse_head(&buf[..n], max_head, max_line),
        whole,
        "only the head counts"
    );
    for k in [0, n / 2, n - 1] {
        let p = parse_head(&buf[..k], max_head, max_line);
        assert_eq!(p, HeadOutcome::Partial, "prefix of {k} of {n} bytes");
    }
    assert!(!h.method.is_empty() && h.target.len() <= max_line);
    assert!(
        h.path.starts_with('/') || h.path == "*",
        "path {:?}",
        h.path
    );
    assert!(h.minor <= 1 && h.headers.len() <= 100);
    let has = |name: &str| h.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    match h.body {
        BodyFraming::Chunked => {
            assert!(has("transfer-encoding") && !has("content-length") && h.minor == 1)
        }
        BodyFraming::Length(v) => {
            assert!(v > 0 && h.content_length == Some(v) && !has("transfer-encoding"))
        }
        BodyFraming::None => assert!(!has("transfer-encoding")),
    }
    if h.minor == 1 {
        assert_eq!(
            h.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                .count(),
            1
        );
    }
    for (k, v) in &h.headers {
        assert!(!k.is_empty() && !k.contains(':'));
        assert!(!v.contains(&b'\r') && !v.contains(&b'\n') && !v.contains(&0));
    }
});
