//! The Range header (RFC 9110 §14.1.2, §14.2): byte ranges of a representation of known
//! size. An unknown unit or bad syntax means the header is ignored (the whole file); no
//! satisfiable range means 416; overlapping ranges are coalesced; more than
//! [`MAX_RANGES`] are answered with the whole file (§14.2 lets a server ignore a Range
//! asking for many small pieces).

/// Most ranges served as multipart/byteranges; beyond, the whole file.
pub(crate) const MAX_RANGES: usize = 16;

/// What a Range header asks of a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// Ignore it: the whole file, 200.
    Whole,
    /// No range overlaps the file: 416 with `Content-Range: bytes */SIZE`.
    Unsatisfiable,
    /// Satisfiable ranges as (first byte, last byte) inclusive, in order: one is a 206
    /// with Content-Range, several a multipart/byteranges 206.
    Parts(Vec<(u64, u64)>),
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

fn num(t: &[u8]) -> Option<u64> {
    if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    t.iter().try_fold(0u64, |n, &c| {
        n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// Parses Range `v` against a file of `size` bytes.
pub(crate) fn parse(v: &[u8], size: u64) -> Ranges {
    let v = trim(v);
    let Some(eq) = v.iter().position(|&c| c == b'=') else {
        return Ranges::Whole;
    };
    if !trim(&v[..eq]).eq_ignore_ascii_case(b"bytes") {
        return Ranges::Whole;
    }
    let mut parts = Vec::new();
    let mut specs = 0;
    for spec in v[eq + 1..].split(|&c| c == b',') {
        let spec = trim(spec);
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        let Some(dash) = spec.iter().position(|&c| c == b'-') else {
            return Ranges::Whole;
        };
        let (a, b) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
        let r = if a.is_empty() {
            // A suffix: the last n bytes.
            let Some(n) = num(b) else {
                return Ranges::Whole;
            };
            (n > 0 && size > 0).then(|| (size.saturating_sub(n), size - 1))
        } else {
            let Some(first) = num(a) else {
                return Ranges::Whole;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(l) if l >= first => l,
                    _ => return Ranges::Whole,
                }
            };
            (first < size).then(|| (first, last.min(size - 1)))
        };
        if let Some(r) = r {
            parts.push(r);
        }
    }
    if specs == 0 {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    if parts.len() > 1 {
        let overlap = parts.iter().enumerate().any(|(i, a)| {
            parts[i + 1..]
                .iter()
                .any(|b| a.0 <= b.1.saturating_add(1) && b.0 <= a.1.saturating_add(1))
        });
        if overlap {
            // Coalesce: sorted, overlapping or adjacent ranges merged.
            parts.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
            for p in parts {
                match merged.last_mut() {
                    Some(m) if p.0 <= m.1.saturating_add(1) => m.1 = m.1.max(p.1),
                    _ => merged.push(p),
                }
            }
            parts = merged;
        }
        if parts.len() > MAX_RANGES {
            return Ranges::Whole;
        }
    }
    Ranges::Parts(parts)
}

#[cfg(test)]
mod tests {
    use super::{parse, Ranges, MAX_RANGES};

    fn p(v: &str, size: u64) -> Ranges {
        parse(v.as_bytes(), size)
    }
    fn parts(v: &[(u64, u64)]) -> Ranges {
        Ranges::Parts(v.to_vec())
    }

    #[test]
    fn single_ranges_and_suffixes() {
        assert_eq!(p("bytes=0-0", 10), parts(&[(0, 0)]));
        assert_eq!(p("bytes=2-5", 10), parts(&[(2, 5)]));
        assert_eq!(p("bytes=2-", 10), parts(&[(2, 9)]));
        assert_eq!(p("bytes=2-100", 10), parts(&[(2, 9)]));
        assert_eq!(p("bytes=-3", 10), parts(&[(7, 9)]));
        assert_eq!(p("bytes=-30", 10), parts(&[(0, 9)]));
        assert_eq!(p("Bytes = 1-2 ", 10), parts(&[(1, 2)]));
    }

    #[test]
    fn unsatisfiable_ranges_give_416() {
        assert_eq!(p("bytes=10-", 10), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=10-20", 10), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=0-0", 0), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=-5", 0), Ranges::Unsatisfiable);
        // One satisfiable among others is served.
        assert_eq!(p("bytes=50-60, 1-1", 10), parts(&[(1, 1)]));
    }

    #[test]
    fn bad_syntax_or_other_units_are_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=1-2-3",
            "items=0-1",
            "bytes=1",
            "bytes=--1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(p(v, 10), Ranges::Whole, "{v}");
        }
    }

    #[test]
    fn several_ranges_keep_their_order_unless_they_overlap() {
        assert_eq!(p("bytes=5-6,0-1", 10), parts(&[(5, 6), (0, 1)]));
        assert_eq!(p("bytes=0-4,3-6,-2", 10), parts(&[(0, 6), (8, 9)]));
        assert_eq!(p("bytes=0-1,2-3", 10), parts(&[(0, 3)]));
        let many: Vec<String> = (0..=MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect();
        assert_eq!(p(&format!("bytes={}", many.join(",")), 1000), Ranges::Whole);
        let ok: Vec<String> = (0..MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect();
        assert!(
            matches!(p(&format!("bytes={}", ok.join(",")), 1000), Ranges::Parts(v) if v.len() == MAX_RANGES)
        );
    }
}
