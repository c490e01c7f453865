//! The C ABI over the `myriad` crate: extern "C" functions only. `include/myriad.h` is
//! generated from this crate by cbindgen (see build.rs) and committed.
//!
//! Conventions: every function returns 0 or a negative `MYRIAD_E*` code (or a value, for
//! accessors), catches panics (`MYRIAD_EPANIC`), validates integers instead of reading Rust
//! enums, and takes callbacks with `void *userdata` last plus an optional destructor.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

mod accesslog;
#[cfg(test)]
mod alloc_test;
mod cookie;
mod files;
mod form;
mod loops;
mod router;
mod server;
mod stream;
mod supervisor;
mod systemd;
mod tls;
mod work;
mod ws;

pub use accesslog::*;
pub use cookie::*;
pub use files::*;
pub use form::*;
pub use loops::*;
pub use router::*;
pub use server::*;
pub use stream::*;
pub use supervisor::*;
pub use systemd::*;
pub use tls::*;
pub use work::*;
pub use ws::*;

/// ABI major version (the soname is libmyriad.so.MAJOR).
pub const MYRIAD_VERSION_MAJOR: c_int = 0;
/// Minor version.
pub const MYRIAD_VERSION_MINOR: c_int = 1;
/// Patch version.
pub const MYRIAD_VERSION_PATCH: c_int = 0;

/// Success.
pub const MYRIAD_OK: c_int = 0;
/// An argument is invalid (NULL where not allowed, out of range, bad UTF-8...).
pub const MYRIAD_EINVAL: c_int = -1;
/// Out of memory.
pub const MYRIAD_ENOMEM: c_int = -2;
/// The object is in the wrong state for this call (e.g. headers after the head was sent,
/// a server already started).
pub const MYRIAD_ESTATE: c_int = -3;
/// Nothing matched (no such header, timer, signal watch...).
pub const MYRIAD_ENOTFOUND: c_int = -4;
/// An address string is not HOST:PORT, [V6]:PORT, unix:PATH or fd:N.
pub const MYRIAD_EADDR: c_int = -5;
/// A loop-thread-only function was called from another thread.
pub const MYRIAD_EWRONGTHREAD: c_int = -6;
/// A panic inside the library was caught (a bug; the call had no effect).
pub const MYRIAD_EPANIC: c_int = -7;
/// The request is gone: finished, or aborted by the client or front end.
pub const MYRIAD_EGONE: c_int = -8;
/// Not supported on this platform or build.
pub const MYRIAD_EUNSUPPORTED: c_int = -9;
/// Base of operating-system errors: a call failing with errno E returns
/// `MYRIAD_EOS_BASE - E` (e.g. EADDRINUSE).
pub const MYRIAD_EOS_BASE: c_int = -1000;

/// A destructor for user data, called once when the library no longer needs it.
pub type myriad_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

pub(crate) fn os_err(e: &std::io::Error) -> c_int {
    match e.raw_os_error() {
        Some(n) => MYRIAD_EOS_BASE - n,
        None => match e.kind() {
            std::io::ErrorKind::InvalidInput => MYRIAD_EINVAL,
            std::io::ErrorKind::Unsupported => MYRIAD_EUNSUPPORTED,
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::AddrInUse => {
                MYRIAD_EOS_BASE - libc::EADDRINUSE
            }
            _ => MYRIAD_EOS_BASE - libc::EIO,
        },
    }
}

/// Identifies a thread for the handles' owner checks (its `pthread_t`, an integer on
/// Linux and a pointer on the BSDs, as a plain number).
pub(crate) type ThreadKey = usize;

/// This thread's key: `pthread_self`, one load from the thread pointer. (A thread-local
/// costs a `__tls_get_addr` call in a shared library, and every request and loop call
/// checks its thread.) A key may be reused after its thread exits; handles do not outlive
/// their owner thread's use of them, so the check still catches one live thread using
/// another's handle.
pub(crate) fn this_thread() -> ThreadKey {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// Runs `f`, turning a panic into `MYRIAD_EPANIC`.
pub(crate) fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error!("panic caught at the C boundary");
        MYRIAD_EPANIC
    })
}

/// Runs `f`, turning a panic into `default`.
pub(crate) fn guard_or<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// User data with its destructor, released when dropped.
pub(crate) struct UserData {
    pub ptr: *mut c_void,
    pub dtor: myriad_free_fn,
}

impl UserData {
    /// The pointer. A method (not the field) so that closures capture the whole value —
    /// and with it the destructor — rather than just the raw pointer.
    pub(crate) fn get(&self) -> *mut c_void {
        self.ptr
    }
}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(d) = self.dtor {
            // SAFETY: the C caller registered `d` to release `ptr`, once.
            unsafe { d(self.ptr) };
        }
    }
}

// SAFETY: user data crossing threads is the C caller's contract (documented per function).
unsafe impl Send for UserData {}

/// Copies `s` into the caller's `buf` of `cap` bytes with a terminating NUL; returns its
/// length, or MYRIAD_EINVAL if `buf` is NULL or too small.
pub(crate) unsafe fn copy_cstr(s: &str, buf: *mut c_char, cap: usize) -> c_int {
    if buf.is_null() || cap < s.len() + 1 {
        return MYRIAD_EINVAL;
    }
    // SAFETY: `buf` has `cap` > s.len() writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    s.len() as c_int
}

/// Caller-owned bytes queued without copying; the caller's free function runs when the
/// queue drops them (written, or discarded with the connection).
pub(crate) struct FreeBuf {
    p: *const u8,
    len: usize,
    _free: UserData,
}

impl FreeBuf {
    pub(crate) fn new(p: *const u8, len: usize, free_fn: myriad_free_fn, ud: *mut c_void) -> Self {
        FreeBuf {
            p,
            len,
            _free: UserData {
                ptr: ud,
                dtor: free_fn,
            },
        }
    }
}

impl AsRef<[u8]> for FreeBuf {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller keeps the bytes valid until the free function runs.
        unsafe { std::slice::from_raw_parts(self.p, self.len) }
    }
}

/// Borrows a (ptr, len) string from C. NULL with len 0 is "".
pub(crate) unsafe fn c_str<'a>(p: *const c_char, len: usize) -> Option<&'a str> {
    if p.is_null() {
        return (len == 0).then_some("");
    }
    // SAFETY: the caller passes `len` readable bytes at `p`.
    let b = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    std::str::from_utf8(b).ok()
}

/// Borrows (ptr, len) bytes from C.
pub(crate) unsafe fn c_bytes<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        return (len == 0).then_some(&[]);
    }
    // SAFETY: the caller passes `len` readable bytes at `p`.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The library version, e.g. "0.1.0" (static, NUL-terminated). Any thread.
#[no_mangle]
pub extern "C" fn myriad_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static, NUL-terminated description of an error code (any value is accepted).
/// Any thread.
#[no_mangle]
pub extern "C" fn myriad_strerror(code: c_int) -> *const c_char {
    let s: &'static str = match code {
        MYRIAD_OK => "success\0",
        MYRIAD_EINVAL => "invalid argument\0",
        MYRIAD_ENOMEM => "out of memory\0",
        MYRIAD_ESTATE => "wrong state for this call\0",
        MYRIAD_ENOTFOUND => "not found\0",
        MYRIAD_EADDR => "bad address (expected HOST:PORT, [V6]:PORT, unix:PATH or fd:N)\0",
        MYRIAD_EWRONGTHREAD => "called from a thread other than the loop's\0",
        MYRIAD_EPANIC => "internal error (panic caught)\0",
        MYRIAD_EGONE => "the request is finished or was aborted\0",
        MYRIAD_EUNSUPPORTED => "not supported\0",
        MYRIAD_ETIMEDOUT => "timed out\0",
        MYRIAD_ERESOLVE => "host name could not be resolved\0",
        MYRIAD_EFULL => "the work pool's queue is full\0",
        MYRIAD_ECANCELED => "cancelled before it started\0",
        MYRIAD_EPATTERN => "malformed route pattern or method\0",
        MYRIAD_ECONFLICT => "route conflicts with one already registered\0",
        MYRIAD_EMETHOD => "method not allowed for this path\0",
        MYRIAD_EBADREQ => "malformed request (bad percent-encoding or form body)\0",
        MYRIAD_ETOOLARGE => "a form limit was exceeded (parts, headers, field or body size)\0",
        MYRIAD_EMEDIATYPE => "unsupported content type\0",
        MYRIAD_ESTOPPED => "stopped by the callback\0",
        MYRIAD_ECOOKIE => "invalid cookie name, value or attribute\0",
        MYRIAD_ETLS => "TLS configuration error (see myriad_tls_config_error)\0",
        MYRIAD_EWS_REFUSED => "not a valid WebSocket upgrade (answered with a 4xx)\0",
        MYRIAD_EWS_BACKPRESSURE => "the WebSocket's queue is over its backpressure limit\0",
        MYRIAD_EWS_CLOSED => "the WebSocket is closing or closed\0",
        MYRIAD_EWS_CODE => "invalid WebSocket close code\0",
        MYRIAD_EWS_PROTOCOL => {
            "this request cannot switch protocols (FastCGI, HTTP/1.0, head sent)\0"
        }
        c if files::strerror(c).is_some() => files::strerror(c).unwrap_or("\0"),
        c if c <= MYRIAD_EOS_BASE && c > MYRIAD_EOS_BASE - 4096 => {
            // SAFETY: strerror returns a static (per-thread) string for any errno; glibc's
            // messages for known errno values are static.
            return unsafe { libc::strerror(MYRIAD_EOS_BASE - c) };
        }
        _ => "unknown error code\0",
    };
    s.as_ptr().cast()
}

thread_local! {
    /// The detail of the last failure recorded on this thread (see myriad_last_error_detail).
    static LAST_ERROR: std::cell::RefCell<std::ffi::CString> =
        std::cell::RefCell::new(std::ffi::CString::default());
}

/// Records `msg` as this thread's last error detail and returns `code`.
pub(crate) fn fail(code: c_int, msg: impl Into<String>) -> c_int {
    let mut m: Vec<u8> = msg.into().into_bytes();
    m.retain(|b| *b != 0);
    let c = std::ffi::CString::new(m).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
    code
}

/// Forgets this thread's last error detail (at the start of a call that records one).
pub(crate) fn clear_detail() {
    LAST_ERROR.with(|l| {
        if !l.borrow().is_empty() {
            *l.borrow_mut() = std::ffi::CString::default();
        }
    });
}

/// An I/O error in words: the OS's message without Rust's "(os error N)" suffix.
pub(crate) fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // SAFETY: strerror returns a NUL-terminated string for any errno.
        Some(n) => unsafe { std::ffi::CStr::from_ptr(libc::strerror(n)) }
            .to_string_lossy()
            .into_owned(),
        None => e.to_string(),
    }
}

/// The detail of the last error recorded on the calling thread, as a NUL-terminated string
/// ("" if none): which address, path, option or name a failing call was about, e.g.
/// `http listener 127.0.0.1:8080: Address already in use (...)` where the return code only
/// says MYRIAD_EOS_BASE - EADDRINUSE. Recorded by myriad_server_listen,
/// myriad_server_start, myriad_stream_listen and myriad_stream_connect, which clear it
/// when they start (like errno, other calls leave it as it is). The string is owned by the
/// library and valid until the next of those calls on the same thread. Any thread (each
/// has its own).
#[no_mangle]
pub extern "C" fn myriad_last_error_detail() -> *const c_char {
    guard_or(c"".as_ptr(), || LAST_ERROR.with(|l| l.borrow().as_ptr()))
}

/// Log callback: level (1 error .. 5 trace), message bytes (not NUL-terminated), userdata.
pub type myriad_log_fn = Option<
    unsafe extern "C" fn(level: c_int, msg: *const c_char, len: usize, userdata: *mut c_void),
>;

struct CLogger;

/// The registered log callback and its user data (as an address).
type LogSink = (
    unsafe extern "C" fn(c_int, *const c_char, usize, *mut c_void),
    usize,
);

static LOGGER: std::sync::Mutex<Option<LogSink>> = std::sync::Mutex::new(None);

impl log::Log for CLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let cb = *LOGGER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, ud)) = cb {
            let msg = format!("{}: {}", r.target(), r.args());
            // SAFETY: the registered callback takes (level, bytes, len, userdata).
            unsafe {
                f(
                    r.level() as c_int,
                    msg.as_ptr().cast(),
                    msg.len(),
                    ud as *mut c_void,
                )
            };
        }
    }
    fn flush(&self) {}
}

/// Routes the library's log records (levels up to `max_level`, 1 error .. 5 trace; 0
/// turns logging off) to `cb`. `cb` may be called from any loop thread, concurrently:
/// it must be thread-safe. Pass NULL to stop logging. Any thread.
/// Errors: MYRIAD_EINVAL for a level above 5.
#[no_mangle]
pub extern "C" fn myriad_set_logger(
    cb: myriad_log_fn,
    userdata: *mut c_void,
    max_level: c_int,
) -> c_int {
    guard(|| {
        if !(0..=5).contains(&max_level) {
            return MYRIAD_EINVAL;
        }
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let _ = log::set_logger(&CLogger);
        });
        *LOGGER.lock().unwrap_or_else(|e| e.into_inner()) = cb.map(|f| (f, userdata as usize));
        let lvl = match (cb.is_some(), max_level) {
            (false, _) | (_, 0) => log::LevelFilter::Off,
            (_, 1) => log::LevelFilter::Error,
            (_, 2) => log::LevelFilter::Warn,
            (_, 3) => log::LevelFilter::Info,
            (_, 4) => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        };
        log::set_max_level(lvl);
        MYRIAD_OK
    })
}

/// Test hook for the panic boundary: panics inside the library when `really` is non-zero
/// and returns MYRIAD_EPANIC; returns 0 otherwise. Any thread.
#[no_mangle]
pub extern "C" fn myriad_test_panic(really: c_int) -> c_int {
    guard(|| {
        if really != 0 {
            panic!("myriad_test_panic");
        }
        MYRIAD_OK
    })
}

thread_local! {
    /// The loop whose callback is running on this thread (for re-entrant calls from C).
    pub(crate) static CURRENT: Cell<(*const c_void, *mut myriad::Loop)> =
        const { Cell::new((std::ptr::null(), std::ptr::null_mut())) };
}
