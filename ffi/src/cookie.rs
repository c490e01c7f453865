//! Cookies in the C ABI: the request's cookies, a Cookie header parser, and a Set-Cookie
//! builder that refuses invalid names, values and attributes.

use std::ffi::{c_char, c_int, c_void};

use myriad::cookie::{self, CookieError, SameSite, SetCookie};

use crate::server::{put_str, with_req, with_request};
use crate::{
    c_str, guard, myriad_pair_fn, myriad_req_t, MYRIAD_ECOOKIE, MYRIAD_EINVAL, MYRIAD_ENOTFOUND,
    MYRIAD_ESTOPPED, MYRIAD_OK,
};

/// The value of the request's first cookie named `name` (from its Cookie headers, as
/// sent: not decoded, one pair of quotes removed; not NUL-terminated; valid until the
/// request is finished). Loop thread.
/// Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL, MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_cookie(
    req: *mut myriad_req_t,
    name: *const c_char,
    name_len: usize,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: forwarded C string.
    let Some(name) = (unsafe { c_str(name, name_len) }) else {
        return MYRIAD_EINVAL;
    };
    with_req(req, |q| {
        with_request(q, |r| {
            for (h, v) in r.headers() {
                if !h.eq_ignore_ascii_case("cookie") {
                    continue;
                }
                let Ok(v) = std::str::from_utf8(v) else {
                    continue;
                };
                if let Some(c) = cookie::get(v, name) {
                    // SAFETY: the bytes live in the request until it is finished.
                    return unsafe { put_str(c.as_bytes(), out, len) };
                }
            }
            MYRIAD_ENOTFOUND
        })
        .unwrap_or(crate::MYRIAD_EGONE)
    })
}

/// Parses a Cookie header value (RFC 6265 §5.4), calling `cb` with each (name, value) in
/// order (repeated names included; the first is the one that counts). Any thread.
/// Errors: MYRIAD_EINVAL (NULL, not UTF-8), MYRIAD_ESTOPPED (`cb` returned non-zero).
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_parse(
    header: *const c_char,
    len: usize,
    cb: myriad_pair_fn,
    userdata: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's bytes.
        let (Some(h), Some(cb)) = (unsafe { c_str(header, len) }, cb) else {
            return MYRIAD_EINVAL;
        };
        for (n, v) in cookie::parse(h) {
            // SAFETY: bytes valid for the call.
            if unsafe {
                cb(
                    n.as_ptr().cast(),
                    n.len(),
                    v.as_ptr().cast(),
                    v.len(),
                    userdata,
                )
            } != 0
            {
                return MYRIAD_ESTOPPED;
            }
        }
        MYRIAD_OK
    })
}

/// Cookie attribute (string): Path.
pub const MYRIAD_COOKIE_PATH: c_int = 1;
/// Cookie attribute (string): Domain.
pub const MYRIAD_COOKIE_DOMAIN: c_int = 2;
/// Cookie attribute (string): SameSite, "Strict", "Lax" or "None" (any case).
pub const MYRIAD_COOKIE_SAMESITE: c_int = 3;
/// Cookie attribute (integer): Max-Age in seconds.
pub const MYRIAD_COOKIE_MAX_AGE: c_int = 4;
/// Cookie attribute (integer): Expires, seconds since the Unix epoch (>= 0).
pub const MYRIAD_COOKIE_EXPIRES: c_int = 5;
/// Cookie attribute (integer): Secure (0 or 1).
pub const MYRIAD_COOKIE_SECURE: c_int = 6;
/// Cookie attribute (integer): HttpOnly (0 or 1).
pub const MYRIAD_COOKIE_HTTPONLY: c_int = 7;

/// A Set-Cookie header value being built (opaque). One thread at a time.
pub struct myriad_cookie_t {
    c: SetCookie,
    built: String,
    error: Option<CookieError>,
}

fn cookie_mut<'a>(c: *mut myriad_cookie_t) -> Option<&'a mut myriad_cookie_t> {
    // SAFETY: the C contract: a live cookie or NULL.
    unsafe { c.as_mut() }
}

fn fail(c: &mut myriad_cookie_t, e: CookieError) -> c_int {
    c.error = Some(e);
    MYRIAD_ECOOKIE
}

/// Starts a Set-Cookie value `name=value`. Any thread. Errors: MYRIAD_EINVAL (NULL, not
/// UTF-8), MYRIAD_ECOOKIE (the name is not a token or the value has bytes outside
/// cookie-octets: nothing is created).
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_new(
    out: *mut *mut myriad_cookie_t,
    name: *const c_char,
    name_len: usize,
    value: *const c_char,
    value_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's strings.
        let (Some(n), Some(v)) = (unsafe { c_str(name, name_len) }, unsafe {
            c_str(value, value_len)
        }) else {
            return MYRIAD_EINVAL;
        };
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        if !cookie::valid_name(n) || !cookie::valid_value(v) {
            return MYRIAD_ECOOKIE;
        }
        let c = Box::new(myriad_cookie_t {
            c: SetCookie::new(n, v),
            built: String::new(),
            error: None,
        });
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(c) };
        MYRIAD_OK
    })
}

/// Sets a string attribute (MYRIAD_COOKIE_PATH, _DOMAIN, _SAMESITE). Errors:
/// MYRIAD_EINVAL (NULL, unknown attribute), MYRIAD_ECOOKIE (an invalid Path or Domain, an
/// unknown SameSite; myriad_cookie_error says which).
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_set(
    c: *mut myriad_cookie_t,
    attr: c_int,
    value: *const c_char,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's string.
        let (Some(c), Some(v)) = (cookie_mut(c), unsafe { c_str(value, len) }) else {
            return MYRIAD_EINVAL;
        };
        match attr {
            MYRIAD_COOKIE_PATH => c.c.path = Some(v.into()),
            MYRIAD_COOKIE_DOMAIN => c.c.domain = Some(v.into()),
            MYRIAD_COOKIE_SAMESITE => {
                c.c.same_site = Some(match v.to_ascii_lowercase().as_str() {
                    "strict" => SameSite::Strict,
                    "lax" => SameSite::Lax,
                    "none" => SameSite::None,
                    _ => return fail(c, CookieError::Value),
                })
            }
            _ => return MYRIAD_EINVAL,
        }
        // Checked now, so that the error names the attribute just set.
        let check = SetCookie {
            secure: true,
            ..c.c.clone()
        };
        match check.build() {
            Ok(_) => MYRIAD_OK,
            Err(e) => {
                match attr {
                    MYRIAD_COOKIE_PATH => c.c.path = None,
                    MYRIAD_COOKIE_DOMAIN => c.c.domain = None,
                    _ => {}
                }
                fail(c, e)
            }
        }
    })
}

/// Sets an integer attribute (MYRIAD_COOKIE_MAX_AGE, _EXPIRES, _SECURE, _HTTPONLY).
/// Errors: MYRIAD_EINVAL (NULL, unknown attribute, a negative Expires, a flag not 0/1).
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_set_int(
    c: *mut myriad_cookie_t,
    attr: c_int,
    value: i64,
) -> c_int {
    guard(|| {
        let Some(c) = cookie_mut(c) else {
            return MYRIAD_EINVAL;
        };
        let flag = || match value {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        match attr {
            MYRIAD_COOKIE_MAX_AGE => c.c.max_age = Some(value),
            MYRIAD_COOKIE_EXPIRES if value >= 0 => c.c.expires = Some(value as u64),
            MYRIAD_COOKIE_SECURE => match flag() {
                Some(f) => c.c.secure = f,
                None => return MYRIAD_EINVAL,
            },
            MYRIAD_COOKIE_HTTPONLY => match flag() {
                Some(f) => c.c.http_only = f,
                None => return MYRIAD_EINVAL,
            },
            _ => return MYRIAD_EINVAL,
        }
        MYRIAD_OK
    })
}

/// The Set-Cookie header value (not NUL-terminated; valid until the next call on `c`).
/// Errors: MYRIAD_EINVAL, MYRIAD_ECOOKIE (SameSite=None without Secure).
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_value(
    c: *mut myriad_cookie_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    guard(|| {
        let Some(c) = cookie_mut(c) else {
            return MYRIAD_EINVAL;
        };
        match c.c.build() {
            Ok(s) => {
                c.built = s;
                // SAFETY: writable out-pointers; the string lives in `c`.
                unsafe { put_str(c.built.as_bytes(), out, len) }
            }
            Err(e) => fail(c, e),
        }
    })
}

/// A static NUL-terminated description of the cookie's last error ("" if none).
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_error(c: *const myriad_cookie_t) -> *const c_char {
    // SAFETY: the C contract: a live cookie or NULL.
    let e = unsafe { c.as_ref() }.and_then(|c| c.error);
    let s: &'static str = match e {
        None => "\0",
        Some(CookieError::Name) => "invalid cookie name\0",
        Some(CookieError::Value) => "invalid cookie value or SameSite\0",
        Some(CookieError::Path) => "invalid cookie Path\0",
        Some(CookieError::Domain) => "invalid cookie Domain\0",
        Some(CookieError::SameSiteNoneInsecure) => "SameSite=None needs Secure\0",
    };
    s.as_ptr().cast()
}

/// Adds the cookie to the response as a Set-Cookie header (before the head is sent).
/// Loop thread of the request. Errors: MYRIAD_ECOOKIE, and those of myriad_req_header_add.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_set_cookie(
    req: *mut myriad_req_t,
    c: *mut myriad_cookie_t,
) -> c_int {
    let mut p: *const c_char = std::ptr::null();
    let mut n = 0usize;
    // SAFETY: forwarded.
    let rc = unsafe { myriad_cookie_value(c, &mut p, &mut n) };
    if rc != MYRIAD_OK {
        return rc;
    }
    // SAFETY: a live request; the value lives in `c` for the call.
    unsafe { crate::myriad_req_header_add(req, c"Set-Cookie".as_ptr(), 10, p, n) }
}

/// Frees a cookie builder. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn myriad_cookie_free(c: *mut myriad_cookie_t) {
    let _ = guard(|| {
        if !c.is_null() {
            // SAFETY: from myriad_cookie_new, not used again.
            drop(unsafe { Box::from_raw(c) });
        }
        MYRIAD_OK
    });
}
