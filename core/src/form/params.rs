//! Header parameters (`; name=value; name="quoted \"value\""`, RFC 9110 §5.6.6), as in
//! Content-Type and Content-Disposition, and RFC 8187 extended values (`filename*`).

use crate::percent;

/// The parameters after a media type or disposition type: `rest` starts at the first `;`
/// (or is empty). Names keep their case; values are unquoted (`\x` gives `x`). Empty
/// elements (`;;`) and elements without `=` are skipped. Errors: an unterminated quoted
/// string, or bytes after one before the next `;`.
pub(crate) fn parse_params(rest: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let b = rest.as_bytes();
    let mut i = 0;
    let ows = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    while i < b.len() {
        ows(&mut i);
        if i < b.len() && b[i] == b';' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        if i == b.len() || b[i] == b';' {
            continue; // no '=': skipped
        }
        let name = rest[start..i].trim_matches([' ', '\t']).to_string();
        i += 1;
        ows(&mut i);
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err("unterminated quoted string"),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        v.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            ows(&mut i);
            if i < b.len() && b[i] != b';' {
                return Err("characters after a quoted string");
            }
            // Only whole UTF-8 sequences were copied (the quote and backslash are ASCII).
            String::from_utf8(v).map_err(|_| "bad UTF-8 in a parameter")?
        } else {
            let s = i;
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            rest[s..i].trim_matches([' ', '\t']).to_string()
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Decodes an RFC 8187 ext-value (`UTF-8'en'%E2%82%AC%20rates`): UTF-8 or ISO-8859-1.
/// None for another charset or a bad encoding (the plain parameter is used instead).
pub(crate) fn decode_ext_value(v: &str) -> Option<String> {
    let mut it = v.splitn(3, '\'');
    let charset = it.next()?;
    let _lang = it.next()?;
    let value = it.next()?;
    let bytes = percent::decode_strict(value.as_bytes()).ok()?;
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes.into_owned()).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.iter().map(|&c| char::from(c)).collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        parse_params(s).unwrap()
    }

    #[test]
    fn params() {
        assert_eq!(
            p("; boundary=abc; charset=\"utf-8\""),
            vec![
                ("boundary".into(), "abc".into()),
                ("charset".into(), "utf-8".into())
            ]
        );
        assert_eq!(
            p(";name=\"a \\\"q\\\" b\";;x"),
            vec![("name".into(), "a \"q\" b".into())]
        );
        assert_eq!(
            p(" ; filename=\"a;b.txt\" "),
            vec![("filename".into(), "a;b.txt".into())]
        );
        assert_eq!(p(""), vec![]);
        assert!(parse_params("; name=\"open").is_err());
        assert!(parse_params("; name=\"a\"b").is_err());
    }

    #[test]
    fn ext_value() {
        assert_eq!(
            decode_ext_value("UTF-8''%E2%82%AC%20rates").as_deref(),
            Some("€ rates")
        );
        assert_eq!(decode_ext_value("iso-8859-1'en'%A3").as_deref(), Some("£"));
        assert_eq!(decode_ext_value("koi8-r''x"), None);
        assert_eq!(decode_ext_value("UTF-8''%zz"), None);
        assert_eq!(decode_ext_value("UTF-8''%FF"), None);
        assert_eq!(decode_ext_value("nothing"), None);
    }
}
