//! The access log (myriad_access_log_t): one line per finished request, to a file, stderr
//! or a callback, set on servers with myriad_server_set_access_log.

use std::ffi::{c_char, c_int, c_void};

use myriad::AccessLog;

use crate::server::{myriad_server_t, srv_mut};
use crate::{
    c_str, guard, myriad_free_fn, os_err, UserData, MYRIAD_EINVAL, MYRIAD_ESTATE, MYRIAD_OK,
};

/// An access log (opaque). Any thread: it may be shared by servers on several loops and
/// threads; each server keeps its own reference, so the handle can be freed once set.
pub struct myriad_access_log_t {
    log: AccessLog,
}

/// Counters of an access log (see myriad_access_log_stats).
#[repr(C)]
#[derive(Default)]
pub struct myriad_access_log_stats_t {
    /// Lines written to the sink (or passed to the callback).
    pub lines: u64,
    /// write() (or send()) calls made: far fewer than lines, since lines are buffered.
    pub writes: u64,
    /// Lines dropped because the sink failed (a full disk...) or could not keep up.
    pub dropped: u64,
}

/// A line callback: `line` (`len` bytes, no newline, not NUL-terminated) is valid only
/// during the call. Called on the loop thread that served the request, as it finishes;
/// with several threads, concurrently from each of them. Must not block, nor call into the
/// library (hand the line to a queue of your own).
pub type myriad_access_log_fn =
    Option<unsafe extern "C" fn(line: *const c_char, len: usize, userdata: *mut c_void)>;

/// Resolves the format argument: NULL means the combined log format.
unsafe fn format_arg<'a>(format: *const c_char, len: usize) -> Result<Option<&'a str>, c_int> {
    if format.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded.
    unsafe { c_str(format, len) }.map(Some).ok_or(MYRIAD_EINVAL)
}

fn put(out: *mut *mut myriad_access_log_t, r: std::io::Result<AccessLog>) -> c_int {
    match r {
        Ok(log) => {
            // SAFETY: `out` was checked non-NULL by the caller of put.
            unsafe { *out = Box::into_raw(Box::new(myriad_access_log_t { log })) };
            MYRIAD_OK
        }
        Err(e) => os_err(&e),
    }
}

/// Creates an access log appending to the file `path` (created with mode 0644), or
/// writing to stderr if `path` is "-" (never blocking: a pipe gets a non-blocking
/// description of its own, a socket non-blocking sends). `format` is an nginx
/// log_format-like string ($remote_addr, $time_local, $request, $status,
/// $body_bytes_sent, $http_NAME, $request_time, $protocol... see the README); NULL
/// gives the combined log format. Lines are buffered per server and loop, and written
/// when the buffer fills, every second, and when the server shuts down or is freed. A
/// failing sink (a full disk) is reported once through the log hook; its lines are
/// dropped and counted, and requests are not affected. Any thread. Errors: MYRIAD_EINVAL
/// (NULL `out` or `path`, bad UTF-8, an unknown variable or bad syntax in `format`), OS
/// errors of the open (e.g. MYRIAD_EOS_BASE - EACCES).
#[no_mangle]
pub unsafe extern "C" fn myriad_access_log_new(
    out: *mut *mut myriad_access_log_t,
    path: *const c_char,
    path_len: usize,
    format: *const c_char,
    format_len: usize,
) -> c_int {
    guard(|| {
        if out.is_null() || path.is_null() {
            return MYRIAD_EINVAL;
        }
        // SAFETY: forwarded.
        let Some(p) = (unsafe { c_str(path, path_len) }).filter(|p| !p.is_empty()) else {
            return MYRIAD_EINVAL;
        };
        // SAFETY: forwarded.
        let f = match unsafe { format_arg(format, format_len) } {
            Ok(f) => f,
            Err(e) => return e,
        };
        put(out, AccessLog::open(p, f))
    })
}

/// Creates an access log whose lines go to `cb` (see myriad_access_log_fn) instead of a
/// file; `format` as for myriad_access_log_new. `dtor(userdata)` runs when the log is
/// no longer used by anyone (the handle freed and every server using it freed). With a
/// server of several threads, `cb` must be thread-safe. Any thread. Errors:
/// MYRIAD_EINVAL (NULL `out` or `cb`, a bad format).
#[no_mangle]
pub unsafe extern "C" fn myriad_access_log_new_callback(
    out: *mut *mut myriad_access_log_t,
    format: *const c_char,
    format_len: usize,
    cb: myriad_access_log_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    guard(|| {
        let (false, Some(cb)) = (out.is_null(), cb) else {
            return MYRIAD_EINVAL;
        };
        // SAFETY: forwarded.
        let f = match unsafe { format_arg(format, format_len) } {
            Ok(f) => f,
            Err(e) => return e,
        };
        let ud = SyncUserData(UserData {
            ptr: userdata,
            dtor,
        });
        put(
            out,
            AccessLog::callback(f, move |line| {
                let ud = &ud;
                // SAFETY: the C callback contract above; `line` is valid during the call.
                unsafe { cb(line.as_ptr().cast(), line.len(), ud.0.get()) }
            }),
        )
    })
}

/// User data of a callback that may run on several threads (the documented C contract).
struct SyncUserData(UserData);
// SAFETY: the callback's user data is the C caller's to make thread-safe (documented).
unsafe impl Sync for SyncUserData {}

/// Frees the handle; servers it was set on keep using the log. NULL is a no-op. Any
/// thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_access_log_free(log: *mut myriad_access_log_t) {
    if log.is_null() {
        return;
    }
    guard(|| {
        // SAFETY: `log` came from myriad_access_log_new* and is not used again.
        drop(unsafe { Box::from_raw(log) });
        MYRIAD_OK
    });
}

/// Opens a file log's path again: after logrotate renamed the file, new lines go to a
/// new file at that path (call it on SIGUSR1, as nginx does). Stderr and callback logs
/// have nothing to reopen (MYRIAD_OK). On an error the old file stays in use. Any
/// thread. Errors: MYRIAD_EINVAL, OS errors of the open.
#[no_mangle]
pub unsafe extern "C" fn myriad_access_log_reopen(log: *mut myriad_access_log_t) -> c_int {
    guard(|| {
        // SAFETY: a valid handle or NULL.
        let Some(l) = (unsafe { log.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        match l.log.reopen() {
            Ok(()) => MYRIAD_OK,
            Err(e) => os_err(&e),
        }
    })
}

/// Copies the log's counters (over every server and thread using it) into `*out`. Any
/// thread. Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_access_log_stats(
    log: *const myriad_access_log_t,
    out: *mut myriad_access_log_stats_t,
) -> c_int {
    guard(|| {
        // SAFETY: a valid handle or NULL.
        let (Some(l), false) = (unsafe { log.as_ref() }, out.is_null()) else {
            return MYRIAD_EINVAL;
        };
        let s = l.log.stats();
        // SAFETY: `out` is writable.
        unsafe {
            *out = myriad_access_log_stats_t {
                lines: s.lines,
                writes: s.writes,
                dropped: s.dropped,
            }
        };
        MYRIAD_OK
    })
}

/// Logs the server's finished requests to `log` (the server takes its own reference;
/// NULL turns the access log off). Before myriad_server_start. Errors: MYRIAD_EINVAL,
/// MYRIAD_ESTATE (started).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_set_access_log(
    srv: *mut myriad_server_t,
    log: *const myriad_access_log_t,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { srv_mut(srv) }) else {
            return MYRIAD_EINVAL;
        };
        if s.is_started() {
            return MYRIAD_ESTATE;
        }
        // SAFETY: a valid handle or NULL.
        s.opts.access_log = unsafe { log.as_ref() }.map(|l| l.log.clone());
        MYRIAD_OK
    })
}
