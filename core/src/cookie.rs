//! Cookies: the `Cookie` request header (RFC 6265 §5.4, as sent per §4.2.1) and a
//! `Set-Cookie` builder (§4.1) that refuses names and values a browser would not take back.
//!
//! Values are given as they are on the wire: not percent-decoded (RFC 6265 defines no
//! encoding; encode values yourself if they need more than cookie-octets), with one pair of
//! surrounding double quotes removed.

/// Every `(name, value)` of a `Cookie` header value, in order (a name may repeat: the
/// first is the most specific one, RFC 6265 §5.4 point 2). Pairs are separated by `;`,
/// spaces and tabs around names and values are ignored, pairs without `=` or with an empty
/// name are skipped.
pub fn parse(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        let n = n.trim_matches([' ', '\t']);
        if n.is_empty() {
            return None;
        }
        let v = v.trim_matches([' ', '\t']);
        let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => inner,
            None => v,
        };
        Some((n, v))
    })
}

/// The value of the first cookie named `name` in a `Cookie` header value.
pub fn get<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    parse(header).find(|(n, _)| *n == name).map(|p| p.1)
}

/// The `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (browsers require `Secure` with it).
    None,
}

/// Why a Set-Cookie could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieError {
    /// The name is empty or not an HTTP token.
    Name,
    /// The value has a byte outside cookie-octets (controls, space, `"`, `,`, `;`, `\`,
    /// non-ASCII).
    Value,
    /// The Path has a control character or `;`.
    Path,
    /// The Domain is not a host name (letters, digits, `-`, `.`).
    Domain,
    /// `SameSite=None` without `Secure`, which browsers reject.
    SameSiteNoneInsecure,
}

impl std::fmt::Display for CookieError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CookieError::Name => "invalid cookie name",
            CookieError::Value => "invalid cookie value",
            CookieError::Path => "invalid cookie Path",
            CookieError::Domain => "invalid cookie Domain",
            CookieError::SameSiteNoneInsecure => "SameSite=None needs Secure",
        })
    }
}

impl std::error::Error for CookieError {}

/// A `Set-Cookie` header value under construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetCookie {
    /// Cookie name (a token).
    pub name: String,
    /// Cookie value (cookie-octets, optionally in double quotes).
    pub value: String,
    /// `Path=`.
    pub path: Option<String>,
    /// `Domain=`.
    pub domain: Option<String>,
    /// `Max-Age=` in seconds (0 or less: expire now).
    pub max_age: Option<i64>,
    /// `Expires=` as seconds since the Unix epoch (formatted as an IMF-fixdate).
    pub expires: Option<u64>,
    /// `Secure`.
    pub secure: bool,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite=`.
    pub same_site: Option<SameSite>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// RFC 6265 §4.1.1 cookie-octet.
fn is_cookie_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Whether `name` may be a cookie name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// Whether `value` may be a cookie value (cookie-octets, or them in double quotes).
pub fn valid_value(value: &str) -> bool {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    inner.bytes().all(is_cookie_octet)
}

impl SetCookie {
    /// A cookie with this name and value and no attributes (checked by [`Self::build`]).
    pub fn new(name: &str, value: &str) -> SetCookie {
        SetCookie {
            name: name.into(),
            value: value.into(),
            ..SetCookie::default()
        }
    }

    /// The header value, e.g. `id=42; Path=/; Max-Age=60; HttpOnly; SameSite=Lax`.
    pub fn build(&self) -> Result<String, CookieError> {
        if !valid_name(&self.name) {
            return Err(CookieError::Name);
        }
        if !valid_value(&self.value) {
            return Err(CookieError::Value);
        }
        let mut s = format!("{}={}", self.name, self.value);
        if let Some(p) = &self.path {
            if p.bytes()
                .any(|c| c.is_ascii_control() || c == b';' || c > 0x7E)
            {
                return Err(CookieError::Path);
            }
            s.push_str("; Path=");
            s.push_str(p);
        }
        if let Some(d) = &self.domain {
            let host = d.strip_prefix('.').unwrap_or(d);
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
            {
                return Err(CookieError::Domain);
            }
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(m) = self.max_age {
            s.push_str(&format!("; Max-Age={m}"));
        }
        if let Some(e) = self.expires {
            s.push_str("; Expires=");
            s.push_str(std::str::from_utf8(&crate::http::format_date(e)).unwrap_or(""));
        }
        if self.secure {
            s.push_str("; Secure");
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        match self.same_site {
            Some(SameSite::Strict) => s.push_str("; SameSite=Strict"),
            Some(SameSite::Lax) => s.push_str("; SameSite=Lax"),
            Some(SameSite::None) if !self.secure => return Err(CookieError::SameSiteNoneInsecure),
            Some(SameSite::None) => s.push_str("; SameSite=None"),
            None => {}
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cookie_header() {
        let h = " a=1; b = two ;c=\"quoted\"; novalue; =skip; a=again;empty=;d=x=y";
        let got: Vec<_> = parse(h).collect();
        assert_eq!(
            got,
            vec![
                ("a", "1"),
                ("b", "two"),
                ("c", "quoted"),
                ("a", "again"),
                ("empty", ""),
                ("d", "x=y")
            ]
        );
        assert_eq!(get(h, "a"), Some("1"), "the first one");
        assert_eq!(get(h, "missing"), None);
        assert_eq!(parse("").count(), 0);
        assert_eq!(get("x=%20", "x"), Some("%20"), "not decoded");
    }

    #[test]
    fn builds_set_cookie() {
        let mut c = SetCookie::new("id", "42");
        assert_eq!(c.build().unwrap(), "id=42");
        c.path = Some("/".into());
        c.domain = Some("example.com".into());
        c.max_age = Some(60);
        c.expires = Some(784_111_777);
        c.secure = true;
        c.http_only = true;
        c.same_site = Some(SameSite::Lax);
        assert_eq!(
            c.build().unwrap(),
            "id=42; Path=/; Domain=example.com; Max-Age=60; \
             Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(SetCookie::new("q", "\"v\"").build().unwrap(), "q=\"v\"");
    }

    #[test]
    fn refuses_invalid() {
        let e = |n: &str, v: &str| SetCookie::new(n, v).build().err();
        assert_eq!(e("", "v"), Some(CookieError::Name));
        assert_eq!(e("a b", "v"), Some(CookieError::Name));
        assert_eq!(e("a=b", "v"), Some(CookieError::Name));
        assert_eq!(e("a;", "v"), Some(CookieError::Name));
        for bad in [
            "a b",
            "a;b",
            "a,b",
            "a\"b",
            "a\\b",
            "é",
            "a\r\nSet-Cookie: x=1",
            "\"open",
        ] {
            assert_eq!(e("n", bad), Some(CookieError::Value), "{bad:?}");
        }
        let mut c = SetCookie::new("n", "v");
        c.path = Some("/a;b".into());
        assert_eq!(c.build(), Err(CookieError::Path));
        c.path = Some("/a\nb".into());
        assert_eq!(c.build(), Err(CookieError::Path));
        c.path = None;
        c.domain = Some("exa mple.com".into());
        assert_eq!(c.build(), Err(CookieError::Domain));
        c.domain = Some(".example.com".into());
        c.same_site = Some(SameSite::None);
        assert_eq!(c.build(), Err(CookieError::SameSiteNoneInsecure));
        c.secure = true;
        assert!(c.build().unwrap().ends_with("; Secure; SameSite=None"));
    }
}
