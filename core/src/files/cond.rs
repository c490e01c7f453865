//! Validators and conditional requests (RFC 9110 §8.8 and §13): the strong ETag of a file,
//! HTTP-date parsing (all three formats a recipient must accept), the evaluation order of
//! §13.2.2 (If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, then If-Range),
//! and Accept-Encoding for the precompressed siblings.

/// A strong entity tag for a file of `size` bytes last modified at `mtime` (seconds and
/// nanoseconds since the epoch), nginx's form `"<mtime hex>-<size hex>"` with the
/// nanoseconds too where the file system keeps them (a change within the same second
/// changes the tag).
pub(crate) fn etag(mtime: u64, nanos: u32, size: u64) -> String {
    if nanos == 0 {
        format!("\"{mtime:x}-{size:x}\"")
    } else {
        format!("\"{mtime:x}.{nanos:x}-{size:x}\"")
    }
}

/// What the preconditions decide (§13.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    /// Go on with the request (then If-Range for a Range request).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// The request's preconditions as header values (the first field of each name).
#[derive(Clone, Copy, Default)]
pub(crate) struct Preconditions<'a> {
    pub(crate) if_match: Option<&'a [u8]>,
    pub(crate) if_unmodified_since: Option<&'a [u8]>,
    pub(crate) if_none_match: Option<&'a [u8]>,
    pub(crate) if_modified_since: Option<&'a [u8]>,
}

/// Evaluates the preconditions of a GET or HEAD against the file's validators (its strong
/// `etag` and `mtime`, in seconds), in the order of RFC 9110 §13.2.2.
pub(crate) fn evaluate(p: &Preconditions<'_>, etag: &str, mtime: u64) -> Cond {
    // 1. If-Match: a strong match, or `*` (the file exists).
    if let Some(v) = p.if_match {
        if !list_matches(v, etag, true) {
            return Cond::Failed;
        }
    } else if let Some(d) = p.if_unmodified_since.and_then(parse_http_date) {
        // 2. If-Unmodified-Since (an invalid date is ignored).
        if mtime > d {
            return Cond::Failed;
        }
    }
    // 3. If-None-Match: a weak match means not modified (for GET and HEAD).
    if let Some(v) = p.if_none_match {
        if list_matches(v, etag, false) {
            return Cond::NotModified;
        }
    } else if let Some(d) = p.if_modified_since.and_then(parse_http_date) {
        // 4. If-Modified-Since, only without If-None-Match.
        if mtime <= d {
            return Cond::NotModified;
        }
    }
    Cond::Proceed
}

/// §13.1.5: whether a Range request's If-Range lets the range apply: a strong ETag
/// equal to the file's, or an HTTP-date equal to its Last-Modified. Anything else
/// (a weak tag, another date, garbage) means the whole file is sent.
pub(crate) fn if_range_holds(v: &[u8], etag: &str, mtime: u64) -> bool {
    let v = trim(v);
    if v.starts_with(b"\"") {
        return v == etag.as_bytes();
    }
    if v.starts_with(b"W/") {
        return false;
    }
    parse_http_date(v) == Some(mtime)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(s, |e| e + 1);
    &v[s..e]
}

/// Whether an If-Match / If-None-Match list (`*` or entity-tags) matches `etag` (a
/// strong tag), by strong or weak comparison (§8.8.3.2).
fn list_matches(list: &[u8], etag: &str, strong: bool) -> bool {
    let list = trim(list);
    if list == b"*" {
        return true;
    }
    for item in list.split(|&c| c == b',') {
        let item = trim(item);
        let (weak, tag) = match item.strip_prefix(b"W/") {
            Some(t) => (true, t),
            None => (false, item),
        };
        if tag == etag.as_bytes() && !(strong && weak) {
            return true;
        }
    }
    false
}

/// Whether Accept-Encoding `ae` accepts content coding `coding` (a name, q > 0, or `*`
/// with q > 0 when the coding is not named; `gzip` matches `x-gzip` too).
pub(crate) fn accepts(ae: &[u8], coding: &str) -> bool {
    let mut star = None;
    for item in ae.split(|&c| c == b',') {
        let mut parts = item.split(|&c| c == b';');
        let name = trim(parts.next().unwrap_or_default());
        let mut q_ok = true;
        for p in parts {
            let p = trim(p);
            if p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") {
                q_ok = qvalue_positive(&p[2..]);
            }
        }
        let named = name.eq_ignore_ascii_case(coding.as_bytes())
            || (coding == "gzip" && name.eq_ignore_ascii_case(b"x-gzip"));
        if named {
            return q_ok;
        }
        if name == b"*" {
            star = Some(q_ok);
        }
    }
    star.unwrap_or(false)
}

/// Whether a qvalue ("0", "0.000", "0.5", "1") is above zero; a malformed one is taken
/// as zero.
fn qvalue_positive(q: &[u8]) -> bool {
    let q = trim(q);
    match q.first() {
        Some(b'1') => true,
        Some(b'0') => q[1..].iter().any(|c| (b'1'..=b'9').contains(c)),
        _ => false,
    }
}

const MONTHS: [&[u8]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn month(t: &[u8]) -> Option<u64> {
    MONTHS
        .iter()
        .position(|m| t.eq_ignore_ascii_case(m))
        .map(|i| i as u64 + 1)
}

fn num(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 4 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(t.iter().fold(0, |n, &c| n * 10 + u64::from(c - b'0')))
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = y as i64 - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

/// Parses an HTTP-date (§5.6.7): IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, the
/// obsolete RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` and asctime `Sun Nov  6 08:49:37
/// 1994`. Seconds since the epoch; `None` if it is none of them.
pub(crate) fn parse_http_date(v: &[u8]) -> Option<u64> {
    let toks: Vec<&[u8]> = v
        .split(|c| matches!(c, b' ' | b',' | b'-' | b':'))
        .filter(|t| !t.is_empty())
        .collect();
    let (d, mo, y, hms) = match toks.as_slice() {
        [_, d, m, y, h, mi, s, gmt] if gmt.eq_ignore_ascii_case(b"GMT") => {
            let mut y = num(y)?;
            if y < 100 {
                // RFC 850's two-digit year (§5.6.7: more than 50 years ahead is the past).
                y += if y < 70 { 2000 } else { 1900 };
            }
            (num(d)?, month(m)?, y, [h, mi, s])
        }
        [_, m, d, h, mi, s, y] => (num(d)?, month(m)?, num(y)?, [h, mi, s]),
        _ => return None,
    };
    let (h, mi, s) = (num(hms[0])?, num(hms[1])?, num(hms[2])?);
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 || y < 1970 {
        return None;
    }
    Some(days_from_civil(y, mo, d)? * 86400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"5f-10\"";
    /// Sun, 06 Nov 1994 08:49:37 GMT
    const T: u64 = 784_111_777;

    #[test]
    fn the_three_date_formats_parse() {
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(T));
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(T));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(T));
        assert_eq!(parse_http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
        for bad in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37 CET",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let formatted = crate::http::date::format_date(1_795_392_123);
        assert_eq!(parse_http_date(&formatted), Some(1_795_392_123));
    }

    fn eval(p: Preconditions<'_>) -> Cond {
        evaluate(&p, TAG, T)
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        let p = |m: &'static str| Preconditions {
            if_match: Some(m.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(p("\"5f-10\"")), Cond::Proceed);
        assert_eq!(eval(p("\"x\", \"5f-10\"")), Cond::Proceed);
        assert_eq!(eval(p("*")), Cond::Proceed);
        assert_eq!(eval(p("\"x\"")), Cond::Failed);
        // If-Match compares strongly: a weak tag never matches.
        assert_eq!(eval(p("W/\"5f-10\"")), Cond::Failed);
        let ius = |d: &'static str| Preconditions {
            if_unmodified_since: Some(d.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(ius("Sun, 06 Nov 1994 08:49:37 GMT")), Cond::Proceed);
        assert_eq!(eval(ius("Sun, 06 Nov 1994 08:49:36 GMT")), Cond::Failed);
        assert_eq!(eval(ius("garbage")), Cond::Proceed);
        // If-Match present: If-Unmodified-Since is not looked at.
        let both = Preconditions {
            if_match: Some(b"*"),
            if_unmodified_since: Some(b"Sun, 06 Nov 1994 08:49:36 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(both), Cond::Proceed);
    }

    #[test]
    fn if_none_match_and_if_modified_since_give_304() {
        let inm = |m: &'static str| Preconditions {
            if_none_match: Some(m.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(inm("\"5f-10\"")), Cond::NotModified);
        // Weak comparison: W/ matches too.
        assert_eq!(eval(inm("W/\"5f-10\"")), Cond::NotModified);
        assert_eq!(eval(inm("\"a\" , W/\"5f-10\"")), Cond::NotModified);
        assert_eq!(eval(inm("*")), Cond::NotModified);
        assert_eq!(eval(inm("\"5f-11\"")), Cond::Proceed);
        let ims = |d: &'static str| Preconditions {
            if_modified_since: Some(d.as_bytes()),
            ..Default::default()
        };
        assert_eq!(
            eval(ims("Sun, 06 Nov 1994 08:49:37 GMT")),
            Cond::NotModified
        );
        assert_eq!(
            eval(ims("Mon, 07 Nov 1994 08:49:37 GMT")),
            Cond::NotModified
        );
        assert_eq!(eval(ims("Sun, 06 Nov 1994 08:49:36 GMT")), Cond::Proceed);
        assert_eq!(eval(ims("not a date")), Cond::Proceed);
        // If-None-Match present: If-Modified-Since is ignored.
        let both = Preconditions {
            if_none_match: Some(b"\"other\""),
            if_modified_since: Some(b"Mon, 07 Nov 1994 08:49:37 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(both), Cond::Proceed);
        // A failed If-Match wins over a matching If-None-Match.
        let both = Preconditions {
            if_match: Some(b"\"x\""),
            if_none_match: Some(b"*"),
            ..Default::default()
        };
        assert_eq!(eval(both), Cond::Failed);
    }

    #[test]
    fn if_range_needs_a_strong_tag_or_the_exact_date() {
        assert!(if_range_holds(b"\"5f-10\"", TAG, T));
        assert!(!if_range_holds(b"W/\"5f-10\"", TAG, T));
        assert!(!if_range_holds(b"\"other\"", TAG, T));
        assert!(if_range_holds(b"Sun, 06 Nov 1994 08:49:37 GMT", TAG, T));
        assert!(!if_range_holds(b"Mon, 07 Nov 1994 08:49:37 GMT", TAG, T));
        assert!(!if_range_holds(b"junk", TAG, T));
    }

    #[test]
    fn accept_encoding_with_qvalues() {
        assert!(accepts(b"gzip, deflate, br", "br"));
        assert!(accepts(b"gzip, deflate, br", "gzip"));
        assert!(!accepts(b"gzip", "br"));
        assert!(!accepts(b"br;q=0, gzip", "br"));
        assert!(!accepts(b"br;q=0.000", "br"));
        assert!(accepts(b"br;q=0.001", "br"));
        assert!(accepts(b"BR ; Q=1", "br"));
        assert!(accepts(b"*", "br"));
        assert!(!accepts(b"*;q=0", "gzip"));
        assert!(!accepts(b"*, br;q=0", "br"));
        assert!(accepts(b"x-gzip", "gzip"));
        assert!(!accepts(b"", "gzip"));
        assert!(!accepts(b"identity", "gzip"));
    }

    #[test]
    fn etags_change_with_size_and_time() {
        assert_eq!(etag(0x5f, 0, 0x10), TAG);
        assert_ne!(etag(0x5f, 1, 0x10), TAG);
        assert_ne!(etag(0x5f, 0, 0x11), TAG);
    }
}
