//! Percent-decoding: strict for path segments (RFC 3986 §2.1: a `%` not followed by two hex
//! digits is an error), lenient for query strings and form bodies (the WHATWG
//! `application/x-www-form-urlencoded` parser: `+` is a space, a bad escape stays as it is).
//!
//! Plain functions over byte slices, so tests and fuzzers call them directly.

use std::borrow::Cow;

/// A `%` not followed by two hex digits, at this byte offset of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidEscape(pub usize);

impl std::fmt::Display for InvalidEscape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid percent-encoding at byte {}", self.0)
    }
}

impl std::error::Error for InvalidEscape {}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte escaped at `input[i..i + 3]` when it is `%XX`.
fn escape_at(input: &[u8], i: usize) -> Option<u8> {
    let h = hex(*input.get(i + 1)?)?;
    let l = hex(*input.get(i + 2)?)?;
    Some(h << 4 | l)
}

/// Strict percent-decoding (path segments: `+` stays `+`). Borrows when there is nothing
/// to decode.
pub fn decode_strict(input: &[u8]) -> Result<Cow<'_, [u8]>, InvalidEscape> {
    let Some(first) = input.iter().position(|&c| c == b'%') else {
        return Ok(Cow::Borrowed(input));
    };
    let mut out = Vec::with_capacity(input.len());
    decode_strict_into(input, first, &mut out)?;
    Ok(Cow::Owned(out))
}

/// Strict decoding of `input` appended to `out` (bytes before `from` are copied as they
/// are; `from` is where the first `%` may be).
pub(crate) fn decode_strict_into(
    input: &[u8],
    from: usize,
    out: &mut Vec<u8>,
) -> Result<(), InvalidEscape> {
    out.extend_from_slice(&input[..from]);
    let mut i = from;
    while i < input.len() {
        let c = input[i];
        if c == b'%' {
            out.push(escape_at(input, i).ok_or(InvalidEscape(i))?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(())
}

/// Lenient form decoding (query strings, urlencoded bodies): `+` is a space, `%XX` the
/// byte, any other `%` stays literal. Borrows when there is nothing to decode.
pub fn decode_form(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.iter().any(|&c| c == b'%' || c == b'+') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    decode_form_into(input, &mut out);
    Cow::Owned(out)
}

/// [`decode_form`] appending to `out`.
pub fn decode_form_into(input: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match escape_at(input, i) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// Splits a query string or urlencoded body into decoded `(name, value)` pairs, in order:
/// pairs are separated by `&`, the first `=` separates name from value (a pair without
/// `=` has an empty value), empty pairs (`a=1&&b=2`) are skipped, repeated names are all
/// kept.
pub fn parse_urlencoded(input: &[u8]) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    input
        .split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = split_pair(p);
            (decode_form(n), decode_form(v))
        })
}

/// A raw pair split at its first `=` (`"a"` gives `("a", "")`).
pub(crate) fn split_pair(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().position(|&c| c == b'=') {
        Some(e) => (&p[..e], &p[e + 1..]),
        None => (p, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(&*decode_strict(b"a%2Fb").unwrap(), b"a/b");
        assert_eq!(&*decode_strict(b"a+b").unwrap(), b"a+b");
        assert!(matches!(decode_strict(b"plain").unwrap(), Cow::Borrowed(_)));
        assert_eq!(&*decode_strict(b"%e2%82%AC").unwrap(), "€".as_bytes());
        assert_eq!(decode_strict(b"a%zz"), Err(InvalidEscape(1)));
        assert_eq!(decode_strict(b"a%4"), Err(InvalidEscape(1)));
        assert_eq!(decode_strict(b"%"), Err(InvalidEscape(0)));
        assert_eq!(&*decode_strict(b"%00").unwrap(), b"\0");
    }

    #[test]
    fn form() {
        assert_eq!(&*decode_form(b"a+b%20c"), b"a b c");
        assert_eq!(&*decode_form(b"100%"), b"100%");
        assert_eq!(&*decode_form(b"%zz%4"), b"%zz%4");
        assert_eq!(&*decode_form(b"%2B"), b"+");
        assert!(matches!(decode_form(b"x"), Cow::Borrowed(_)));
    }

    #[test]
    fn pairs() {
        let got: Vec<(Vec<u8>, Vec<u8>)> = parse_urlencoded(b"a=1&&b=x+y&a=2&flag&=v&e=&c=%zz")
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let want: Vec<(&[u8], &[u8])> = vec![
            (b"a", b"1"),
            (b"b", b"x y"),
            (b"a", b"2"),
            (b"flag", b""),
            (b"", b"v"),
            (b"e", b""),
            (b"c", b"%zz"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_slice(), g.1.as_slice()), w);
        }
        assert_eq!(parse_urlencoded(b"").count(), 0);
        let eq: Vec<_> = parse_urlencoded(b"k=a=b").collect();
        assert_eq!(&*eq[0].1, b"a=b");
    }
}
