//! Listener options written after the address, so that every front end (the C ABI, the Lua
//! and Node bindings, the demos' flags) can set them without an API of its own:
//! `unix:/run/app.sock?mode=0660&group=www-data`, `127.0.0.1:8080?reuseport`.

use std::ffi::CString;

use super::{Addr, AddrError, ListenOptions};

/// Parses `ADDR[?OPTION[&OPTION]...]` into the address and its listener options.
///
/// Options: `mode=OCTAL` (a Unix socket's file mode, e.g. `0660`), `owner=USER|UID` and
/// `group=GROUP|GID` (its owner and group: names are looked up in the user and group
/// databases), and `reuseport` (or `reuseport=1`: a TCP port shared with other sockets
/// that ask for it too, other processes included). Unknown options, a mode on a TCP
/// address or a reuseport on a Unix one are errors naming what is wrong.
pub fn parse_listen(s: &str) -> Result<(Addr, ListenOptions), AddrError> {
    let (a, q) = match s.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (s, None),
    };
    let addr: Addr = a.parse()?;
    let mut o = ListenOptions::default();
    let Some(q) = q else {
        return Ok((addr, o));
    };
    let bad = |why: String| AddrError(format!("listener {s:?}: {why}"));
    let unix = matches!(addr, Addr::Unix(_));
    for kv in q.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "mode" | "owner" | "group" if !unix => {
                return Err(bad(format!("{k}= applies to unix:PATH listeners only")))
            }
            "mode" => {
                let m = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777 && !v.is_empty());
                o.unix_mode = Some(m.ok_or_else(|| {
                    bad(format!("mode={v:?} is not an octal file mode (e.g. 0660)"))
                })?);
            }
            "owner" => o.unix_owner = Some(lookup_id(v, false).map_err(bad)?),
            "group" => o.unix_group = Some(lookup_id(v, true).map_err(bad)?),
            "reuseport" if !matches!(addr, Addr::Tcp(_)) => {
                return Err(bad("reuseport applies to TCP listeners only".into()))
            }
            "reuseport" => match v {
                "" | "1" | "on" | "true" => o.reuseport = true,
                "0" | "off" | "false" => o.reuseport = false,
                _ => return Err(bad(format!("reuseport={v:?}: expected 1 or 0"))),
            },
            _ => {
                return Err(bad(format!(
                    "unknown option {k:?} (known: mode, owner, group, reuseport)"
                )))
            }
        }
    }
    Ok((addr, o))
}

/// A uid or gid: a decimal number, or a name looked up with getpwnam_r / getgrnam_r.
fn lookup_id(v: &str, group: bool) -> Result<u32, String> {
    let what = if group { "group" } else { "owner" };
    if v.is_empty() {
        return Err(format!("{what}= needs a name or a number"));
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map_err(|_| format!("{what}={v}: id out of range"));
    }
    let name = CString::new(v).map_err(|_| format!("{what}= contains NUL"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut found: *mut libc::c_void = std::ptr::null_mut();
    let (rc, id) = if group {
        // SAFETY: all-zero is a valid `group`; getgrnam_r writes into it and `buf`.
        let mut g: libc::group = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated, `buf` has the length passed, `found` is writable.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut g,
                buf.as_mut_ptr().cast(),
                buf.len(),
                (&mut found as *mut *mut libc::c_void).cast(),
            )
        };
        (rc, g.gr_gid)
    } else {
        // SAFETY: all-zero is a valid `passwd`; getpwnam_r writes into it and `buf`.
        let mut p: libc::passwd = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut p,
                buf.as_mut_ptr().cast(),
                buf.len(),
                (&mut found as *mut *mut libc::c_void).cast(),
            )
        };
        (rc, p.pw_uid)
    };
    if rc != 0 {
        return Err(format!(
            "{what}={v}: lookup failed: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!(
            "{what}={v}: no such {}",
            if group { "group" } else { "user" }
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_after_the_address() {
        let (a, o) = parse_listen("unix:/tmp/x.sock?mode=0660&owner=0&group=root").unwrap();
        assert_eq!(a, Addr::Unix("/tmp/x.sock".into()));
        assert_eq!(
            (o.unix_mode, o.unix_owner, o.unix_group),
            (Some(0o660), Some(0), Some(0))
        );
        let (_, o) = parse_listen("127.0.0.1:0?reuseport").unwrap();
        assert!(o.reuseport);
        let (_, o) = parse_listen("127.0.0.1:0").unwrap();
        assert!(!o.reuseport && o.unix_mode.is_none());
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (s, want) in [
            ("unix:/x?mode=999", "not an octal file mode"),
            ("unix:/x?mode=", "not an octal file mode"),
            ("unix:/x?owner=no-such-user-here", "no such user"),
            ("unix:/x?group=no-such-group-here", "no such group"),
            ("unix:/x?reuseport", "TCP listeners only"),
            ("127.0.0.1:1?mode=0600", "unix:PATH listeners only"),
            ("127.0.0.1:1?reuseport=maybe", "expected 1 or 0"),
            ("127.0.0.1:1?nodelay", "unknown option \"nodelay\""),
        ] {
            let e = parse_listen(s).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(s), "{s}: {e}");
        }
    }
}
