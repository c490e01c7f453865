//! TLS configurations (certificates and keys, versions, ALPN, sessions, CA roots) for
//! HTTPS listeners (myriad_server_listen_tls), TLS stream listeners and connects
//! (myriad_stream_listen_tls, myriad_stream_connect_tls), and the TLS facts of a request
//! or stream.

use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::sync::Arc;

use myriad::net::TlsInfo;
use myriad::tls::{TlsAcceptor, TlsConfig, TlsConnector};

use crate::{c_bytes, c_str, guard, MYRIAD_EINVAL, MYRIAD_ENOTFOUND, MYRIAD_OK};

/// A TLS configuration is unusable: a certificate or key file is missing, unreadable or
/// not PEM, a key does not match its certificate, no certificate was added... The
/// configuration's myriad_tls_config_error tells which, naming the file.
pub const MYRIAD_ETLS: c_int = -14;

/// TLS version 1.2 (for myriad_tls_config_set_versions).
pub const MYRIAD_TLS1_2: c_int = 0x0303;
/// TLS version 1.3.
pub const MYRIAD_TLS1_3: c_int = 0x0304;

/// TLS fact: the protocol version, "TLSv1.2" or "TLSv1.3".
pub const MYRIAD_TLS_VERSION: c_int = 1;
/// TLS fact: the cipher suite's IANA name, e.g. "TLS_AES_128_GCM_SHA256".
pub const MYRIAD_TLS_CIPHER: c_int = 2;
/// TLS fact: the server name the client sent (SNI; server side only).
pub const MYRIAD_TLS_SNI: c_int = 3;
/// TLS fact: the application protocol agreed by ALPN, e.g. "http/1.1".
pub const MYRIAD_TLS_ALPN: c_int = 4;

/// A TLS configuration (opaque): certificate chains with their keys (the first is the
/// default, the others chosen by SNI against their DNS names), protocol versions, ALPN,
/// session resumption, and for clients the CA roots. Configure it from one thread at a
/// time; listeners and connects copy what they need when attached, so it may be freed
/// after (but myriad_tls_config_reload needs it alive).
pub struct myriad_tls_config_t {
    cfg: TlsConfig,
    /// Made when the configuration is first attached to a listener; shared by all the
    /// listeners it was attached to (reloading replaces what it holds).
    acceptor: Option<TlsAcceptor>,
    /// The message of the last failed call, NUL-terminated.
    error: CString,
}

impl myriad_tls_config_t {
    fn fail(&mut self, msg: &str) -> c_int {
        self.error = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        MYRIAD_ETLS
    }

    /// Keeps `msg` as the last error (see myriad_tls_config_error).
    pub(crate) fn record_error(&mut self, msg: &str) {
        self.fail(msg);
    }

    fn record(&mut self, r: Result<(), myriad::tls::TlsError>) -> c_int {
        match r {
            Ok(()) => MYRIAD_OK,
            Err(e) => self.fail(e.message()),
        }
    }

    /// The acceptor of listeners attached with this configuration (made now if needed).
    pub(crate) fn acceptor(&mut self) -> Result<TlsAcceptor, c_int> {
        if let Some(a) = &self.acceptor {
            return Ok(a.clone());
        }
        match TlsAcceptor::new(&self.cfg) {
            Ok(a) => {
                self.acceptor = Some(a.clone());
                Ok(a)
            }
            Err(e) => Err(self.fail(e.message())),
        }
    }

    /// A connector for outbound connections with this configuration.
    pub(crate) fn connector(&mut self) -> Result<TlsConnector, c_int> {
        TlsConnector::new(&self.cfg).map_err(|e| self.fail(e.message()))
    }
}

unsafe fn cfg_mut<'a>(c: *mut myriad_tls_config_t) -> Option<&'a mut myriad_tls_config_t> {
    // SAFETY: the caller passes a live configuration or NULL.
    unsafe { c.as_mut() }
}

/// Creates a TLS configuration into `*out`: no certificate, TLS 1.2 and 1.3, ALPN
/// "http/1.1" for servers (none for clients), TLS 1.3 session tickets (keys rotated every
/// 6 hours) and a cache of 1,024 TLS 1.2 sessions, the system's CA roots for clients.
/// Free it with myriad_tls_config_free. Any thread. Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_new(out: *mut *mut myriad_tls_config_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        let c = Box::new(myriad_tls_config_t {
            cfg: TlsConfig::new(),
            acceptor: None,
            error: CString::default(),
        });
        // SAFETY: `out` is writable (checked).
        unsafe { *out = Box::into_raw(c) };
        MYRIAD_OK
    })
}

/// Frees a configuration (NULL: no-op). Listeners and streams made with it keep working
/// with what they copied. Any thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_free(cfg: *mut myriad_tls_config_t) {
    if !cfg.is_null() {
        guard(|| {
            // SAFETY: from myriad_tls_config_new, not used again.
            drop(unsafe { Box::from_raw(cfg) });
            MYRIAD_OK
        });
    }
}

/// The message of the last call on `cfg` that failed with MYRIAD_ETLS (e.g.
/// "key.pem: private key does not match the certificate in cert.pem"), NUL-terminated,
/// valid until the next call on `cfg`; "" if none. NULL gives "".
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_error(cfg: *const myriad_tls_config_t) -> *const c_char {
    // SAFETY: a live configuration or NULL.
    match unsafe { cfg.as_ref() } {
        Some(c) => c.error.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Adds a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, RSA or
/// SEC1 EC), both given as bytes. The first added is the default; the others are chosen
/// when the client's SNI matches one of their DNS names (wildcards included).
/// Errors: MYRIAD_EINVAL, MYRIAD_ETLS (not PEM, no key, key not matching; see
/// myriad_tls_config_error).
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_add_cert_pem(
    cfg: *mut myriad_tls_config_t,
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded: a live configuration, and the lengths given.
        let (Some(c), Some(cert), Some(key)) = (
            unsafe { cfg_mut(cfg) },
            unsafe { c_bytes(cert, cert_len) },
            unsafe { c_bytes(key, key_len) },
        ) else {
            return MYRIAD_EINVAL;
        };
        let r = c.cfg.add_cert_pem(cert, key);
        c.record(r)
    })
}

/// myriad_tls_config_add_cert_pem with the chain and key read from two files (paths as
/// pointer + length). Errors: MYRIAD_EINVAL, MYRIAD_ETLS (the message names the file:
/// missing, unreadable, not PEM, or a key that does not match its certificate).
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_add_cert_files(
    cfg: *mut myriad_tls_config_t,
    cert_path: *const c_char,
    cert_path_len: usize,
    key_path: *const c_char,
    key_path_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded: a live configuration, and the lengths given.
        let (Some(c), Some(cp), Some(kp)) = (
            unsafe { cfg_mut(cfg) },
            unsafe { c_str(cert_path, cert_path_len) },
            unsafe { c_str(key_path, key_path_len) },
        ) else {
            return MYRIAD_EINVAL;
        };
        let r = c.cfg.add_cert_files(Path::new(cp), Path::new(kp));
        c.record(r)
    })
}

/// The protocol versions allowed: MYRIAD_TLS1_2 or MYRIAD_TLS1_3 each, `min` <= `max`
/// (default both). Errors: MYRIAD_EINVAL, MYRIAD_ETLS (another version).
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_set_versions(
    cfg: *mut myriad_tls_config_t,
    min: c_int,
    max: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(c) = (unsafe { cfg_mut(cfg) }) else {
            return MYRIAD_EINVAL;
        };
        let (Ok(min), Ok(max)) = (u16::try_from(min), u16::try_from(max)) else {
            return c.fail("TLS versions out of range");
        };
        let r = c.cfg.set_versions(min, max);
        c.record(r)
    })
}

/// The ALPN protocols, comma-separated in preference order (e.g. "h2,http/1.1"): offered
/// by clients, accepted by servers (a client offering ALPN without any of them is refused
/// with no_application_protocol). "" for none. Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_set_alpn(
    cfg: *mut myriad_tls_config_t,
    list: *const c_char,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(c), Some(l)) = (unsafe { cfg_mut(cfg) }, unsafe { c_str(list, len) }) else {
            return MYRIAD_EINVAL;
        };
        let protos: Vec<&[u8]> = l
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::as_bytes)
            .collect();
        if protos.iter().any(|p| p.len() > 255) {
            return MYRIAD_EINVAL;
        }
        c.cfg.set_alpn(&protos);
        MYRIAD_OK
    })
}

/// Session resumption: `tickets` 1 sends TLS 1.3 session tickets (0: none); `cache` is
/// the number of sessions the server remembers (TLS 1.2 session ids; 0: none).
/// Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_set_sessions(
    cfg: *mut myriad_tls_config_t,
    tickets: c_int,
    cache: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(c) = (unsafe { cfg_mut(cfg) }) else {
            return MYRIAD_EINVAL;
        };
        if !(0..=1).contains(&tickets) {
            return MYRIAD_EINVAL;
        }
        c.cfg.set_sessions(tickets == 1, cache);
        MYRIAD_OK
    })
}

/// Clients: trusts the CA certificates of a PEM file (path as pointer + length) instead
/// of the system's. Errors: MYRIAD_EINVAL, MYRIAD_ETLS (the message names the file).
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_add_ca_file(
    cfg: *mut myriad_tls_config_t,
    path: *const c_char,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(c), Some(p)) = (unsafe { cfg_mut(cfg) }, unsafe { c_str(path, len) }) else {
            return MYRIAD_EINVAL;
        };
        let r = c.cfg.add_ca_file(Path::new(p));
        c.record(r)
    })
}

/// Clients: trusts the CA certificates of PEM bytes instead of the system's.
/// Errors: MYRIAD_EINVAL, MYRIAD_ETLS.
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_add_ca_pem(
    cfg: *mut myriad_tls_config_t,
    pem: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(c), Some(p)) = (unsafe { cfg_mut(cfg) }, unsafe { c_bytes(pem, len) }) else {
            return MYRIAD_EINVAL;
        };
        let r = c.cfg.add_ca_pem_named(p, "CA PEM");
        c.record(r)
    })
}

/// Reload: the listeners attached with `live` (myriad_server_listen_tls,
/// myriad_stream_listen_tls) use `fresh`'s certificates and settings for the connections
/// they accept from now on; open connections keep theirs, and resumable sessions stay
/// resumable. Any thread (listeners pick it up at their next accept). On error nothing
/// changes. Errors: MYRIAD_EINVAL, MYRIAD_ETLS (`fresh` unusable, e.g. no certificate;
/// the message is `live`'s myriad_tls_config_error), MYRIAD_ENOTFOUND (`live` was never
/// attached to a listener).
#[no_mangle]
pub unsafe extern "C" fn myriad_tls_config_reload(
    live: *mut myriad_tls_config_t,
    fresh: *const myriad_tls_config_t,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded: two live configurations (or NULL).
        let (Some(l), Some(f)) = (unsafe { cfg_mut(live) }, unsafe { fresh.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        let Some(a) = l.acceptor.clone() else {
            return MYRIAD_ENOTFOUND;
        };
        match a.reload(&f.cfg) {
            Ok(()) => {
                l.cfg = f.cfg.clone();
                MYRIAD_OK
            }
            Err(e) => l.fail(e.message()),
        }
    })
}

/// Points `*s`/`*len` at TLS fact `what` (MYRIAD_TLS_VERSION, _CIPHER, _SNI, _ALPN) of
/// `info`: MYRIAD_OK, MYRIAD_ENOTFOUND (no TLS, or no such fact), MYRIAD_EINVAL.
///
/// # Safety
/// `s` and `len` are writable; the bytes stay valid while `info` lives.
pub(crate) unsafe fn tls_fact(
    info: Option<&TlsInfo>,
    what: c_int,
    s: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    if s.is_null() || len.is_null() {
        return MYRIAD_EINVAL;
    }
    let Some(i) = info else {
        return MYRIAD_ENOTFOUND;
    };
    let v: Option<&[u8]> = match what {
        MYRIAD_TLS_VERSION => Some(i.version.as_bytes()),
        MYRIAD_TLS_CIPHER => Some(i.cipher.as_bytes()),
        MYRIAD_TLS_SNI => i.sni.as_deref().map(str::as_bytes),
        MYRIAD_TLS_ALPN => i.alpn.as_deref(),
        _ => return MYRIAD_EINVAL,
    };
    match v {
        Some(v) if !v.is_empty() => {
            // SAFETY: both writable (checked above, per the contract).
            unsafe {
                *s = v.as_ptr().cast();
                *len = v.len();
            }
            MYRIAD_OK
        }
        _ => MYRIAD_ENOTFOUND,
    }
}

/// The facts of a TLS connection, kept by a stream once its handshake is done.
pub(crate) type Facts = Option<Arc<TlsInfo>>;
