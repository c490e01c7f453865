//! The supervisor of worker processes in C: configure with setters, bind listeners, then
//! `myriad_sup_run` forks workers that each run a C callback (or `myriad_sup_run_exec`
//! executes a command N times). See `myriad::Supervisor`.

use std::ffi::{c_char, c_int, c_void, OsString};
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use myriad::{Addr, Proto, Supervisor, SupervisorOptions};

use crate::{
    c_str, copy_cstr, guard, guard_or, myriad_free_fn, myriad_server_listen, myriad_server_t,
    os_err, UserData, MYRIAD_EADDR, MYRIAD_EINVAL, MYRIAD_ENOTFOUND, MYRIAD_ESTATE, MYRIAD_FCGI,
    MYRIAD_HTTP, MYRIAD_HTTPS, MYRIAD_OK,
};
use crate::{myriad_server_listen_tls, myriad_tls_config_t, MYRIAD_ETLS};

/// `myriad_sup_listener_addr`'s protocol for a status listener (not MYRIAD_HTTPS's 3).
pub const MYRIAD_SUP_STATUS: c_int = 8;

/// Workers always running (static size, or a dynamic pool's minimum; 1..=1024; default 1).
pub const MYRIAD_SUP_WORKERS: c_int = 1;
/// A dynamic pool's maximum (0 or at most WORKERS: static).
pub const MYRIAD_SUP_MAX_WORKERS: c_int = 2;
/// A worker retires after this many requests (0: never).
pub const MYRIAD_SUP_MAX_REQUESTS: c_int = 3;
/// A worker retires above this resident size in bytes (0: never).
pub const MYRIAD_SUP_MAX_RSS: c_int = 4;
/// A worker whose loop has not moved for this many milliseconds is killed (0: off).
pub const MYRIAD_SUP_WATCHDOG_MS: c_int = 5;
/// A retiring worker is killed after this many milliseconds (default 10000).
pub const MYRIAD_SUP_DRAIN_TIMEOUT_MS: c_int = 6;
/// Dynamic pool: an extra worker idle this long retires (default 10000).
pub const MYRIAD_SUP_IDLE_TIMEOUT_MS: c_int = 7;
/// Dynamic pool: every worker busy this long starts one more (default 200).
pub const MYRIAD_SUP_GROW_AFTER_MS: c_int = 8;
/// A request running longer than this counts as slow in the status (default 5000).
pub const MYRIAD_SUP_SLOW_REQUEST_MS: c_int = 9;

/// A supervisor (opaque). Set options, bind listeners, then run it, on one thread that
/// runs no loop (it becomes the supervisor's).
pub struct myriad_sup_t {
    opts: SupervisorOptions,
    sup: Option<Supervisor>,
    bound: Vec<(String, c_int)>,
    ran: bool,
}

/// A worker's view (opaque), valid during the worker callback only.
pub struct myriad_worker_t {
    listeners: Vec<(c_int, c_int)>,
    slot: usize,
}

/// The worker callback: runs in each forked worker process; its return value is the
/// worker's exit code. Create a loop and a server there, add the worker's listeners with
/// `myriad_worker_listen`, make SIGTERM shut the server down gracefully and run the loop.
pub type myriad_worker_fn =
    Option<unsafe extern "C" fn(w: *mut myriad_worker_t, userdata: *mut c_void) -> c_int>;

/// A hook called in the supervisor (reload, reopen).
pub type myriad_sup_hook_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Creates a supervisor with default options (1 worker, 10 s drain timeout). Errors:
/// MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_new(out: *mut *mut myriad_sup_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        let s = Box::new(myriad_sup_t {
            opts: SupervisorOptions::default(),
            sup: None,
            bound: Vec::new(),
            ran: false,
        });
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(s) };
        MYRIAD_OK
    })
}

/// Frees a supervisor (closing its listeners); NULL is a no-op. In a worker process, the
/// supervisor's handle is not to be freed (the worker exits when its callback returns).
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_free(sup: *mut myriad_sup_t) {
    if sup.is_null() {
        return;
    }
    guard(|| {
        // SAFETY: from myriad_sup_new, not used again.
        drop(unsafe { Box::from_raw(sup) });
        MYRIAD_OK
    });
}

unsafe fn sup_mut<'a>(sup: *mut myriad_sup_t) -> Option<&'a mut myriad_sup_t> {
    // SAFETY: the caller passes a live supervisor or NULL.
    unsafe { sup.as_mut() }
}

/// Sets option `opt` (MYRIAD_SUP_*) to `value`. Before the first listener is bound.
/// Errors: MYRIAD_EINVAL (unknown option, value out of range), MYRIAD_ESTATE (listeners
/// bound already).
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_set(sup: *mut myriad_sup_t, opt: c_int, value: i64) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { sup_mut(sup) }) else {
            return MYRIAD_EINVAL;
        };
        if s.sup.is_some() || s.ran {
            return MYRIAD_ESTATE;
        }
        if value < 0 {
            return MYRIAD_EINVAL;
        }
        let ms = Duration::from_millis(value as u64);
        let o = &mut s.opts;
        match opt {
            MYRIAD_SUP_WORKERS if (1..=1024).contains(&value) => o.workers = value as usize,
            MYRIAD_SUP_MAX_WORKERS if value <= 4096 => o.max_workers = value as usize,
            MYRIAD_SUP_MAX_REQUESTS => o.max_requests = value as u64,
            MYRIAD_SUP_MAX_RSS => o.max_rss = value as u64,
            MYRIAD_SUP_WATCHDOG_MS => o.watchdog = (value > 0).then_some(ms),
            MYRIAD_SUP_DRAIN_TIMEOUT_MS => o.drain_timeout = ms,
            MYRIAD_SUP_IDLE_TIMEOUT_MS => o.idle_timeout = ms,
            MYRIAD_SUP_GROW_AFTER_MS => o.grow_after = ms,
            MYRIAD_SUP_SLOW_REQUEST_MS => o.slow_request = ms,
            _ => return MYRIAD_EINVAL,
        }
        MYRIAD_OK
    })
}

/// Runs the workers as `user` (and `group`, NULL/0 for the user's): looked up now.
/// Errors: MYRIAD_EINVAL, MYRIAD_ENOTFOUND (no such user or group), MYRIAD_EOS_BASE -
/// EPERM (this process is not root and not that user), MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_set_user(
    sup: *mut myriad_sup_t,
    user: *const c_char,
    user_len: usize,
    group: *const c_char,
    group_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(u), Some(g)) = (
            unsafe { sup_mut(sup) },
            unsafe { c_str(user, user_len) },
            unsafe { c_str(group, group_len) },
        ) else {
            return MYRIAD_EINVAL;
        };
        if s.sup.is_some() || s.ran {
            return MYRIAD_ESTATE;
        }
        let g = (!g.is_empty()).then(|| g.to_string());
        match myriad::supervisor::check_user(u, g.as_deref()) {
            Ok(()) => {
                s.opts.user = Some(u.to_string());
                s.opts.group = g;
                MYRIAD_OK
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MYRIAD_ENOTFOUND,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                crate::MYRIAD_EOS_BASE - libc::EPERM
            }
            Err(e) => os_err(&e),
        }
    })
}

/// Workers chroot into `dir` (an absolute path to an existing directory, checked now)
/// before they switch user, as PHP-FPM's `chroot`: the listeners and the shared status page
/// are already open, but a worker that opens files afterwards sees only `dir` (an exec
/// mode worker must find its program inside it). Root only, like the switch itself: a
/// failure to chroot stops the worker before it serves (its exit is logged).
/// Errors: MYRIAD_EINVAL (NULL, not UTF-8, a relative path, not a directory),
/// MYRIAD_ENOTFOUND (no such directory), MYRIAD_ESTATE (after myriad_sup_listen or run).
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_set_chroot(
    sup: *mut myriad_sup_t,
    dir: *const c_char,
    dir_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(d)) = (unsafe { sup_mut(sup) }, unsafe { c_str(dir, dir_len) }) else {
            return MYRIAD_EINVAL;
        };
        if s.sup.is_some() || s.ran {
            return MYRIAD_ESTATE;
        }
        let path = std::path::Path::new(d);
        if !path.is_absolute() {
            return MYRIAD_EINVAL;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                s.opts.chroot = Some(path.to_path_buf());
                MYRIAD_OK
            }
            Ok(_) => MYRIAD_EINVAL,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MYRIAD_ENOTFOUND,
            Err(e) => os_err(&e),
        }
    })
}

fn started(s: &mut myriad_sup_t) -> &mut Supervisor {
    let opts = s.opts.clone();
    s.sup.get_or_insert_with(|| Supervisor::new(opts))
}

/// Binds a listener now (`proto` MYRIAD_HTTP, MYRIAD_FCGI or MYRIAD_HTTPS; `addr`
/// HOST:PORT, [V6]:PORT, unix:PATH or fd:N): TCP gets one SO_REUSEPORT socket per worker
/// slot. Options are fixed from the first call on. An HTTPS listener is bound plain here
/// and wrapped in TLS by each worker with its own certificates (myriad_worker_listen_tls),
/// so a SIGHUP reload, which replaces every worker, reads them again; an executed worker
/// (myriad_sup_run_exec) gets it named `https` in LISTEN_FDNAMES. Errors: MYRIAD_EINVAL, MYRIAD_EADDR, MYRIAD_ESTATE (run already),
/// OS errors (e.g. address in use).
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_listen(
    sup: *mut myriad_sup_t,
    proto: c_int,
    addr: *const c_char,
    addr_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(a)) = (unsafe { sup_mut(sup) }, unsafe { c_str(addr, addr_len) }) else {
            return MYRIAD_EINVAL;
        };
        let p = match proto {
            MYRIAD_HTTP | MYRIAD_HTTPS => Proto::Http,
            MYRIAD_FCGI => Proto::Fcgi,
            _ => return MYRIAD_EINVAL,
        };
        if s.ran {
            return MYRIAD_ESTATE;
        }
        let Ok(a) = a.parse::<Addr>() else {
            return MYRIAD_EADDR;
        };
        let sv = started(s);
        let r = if proto == MYRIAD_HTTPS {
            sv.listen_tls(&a)
        } else {
            sv.listen(&a, p)
        };
        match r {
            Ok(got) => {
                s.bound.push((got.to_string(), proto));
                MYRIAD_OK
            }
            Err(e) => os_err(&e),
        }
    })
}

/// Takes the listening sockets of socket activation (systemd's LISTEN_FDS for this
/// process; an fd named "fcgi" serves FastCGI, the others HTTP) as the supervisor's
/// listeners, shared by every worker (one socket each: systemd made them). The variables
/// stay set, so a SIGUSR2 re-exec (same pid, same fds) finds them again. Returns how many
/// were taken (0: not socket-activated). Errors: MYRIAD_EINVAL (malformed variables;
/// myriad_last_error_detail says which), MYRIAD_ESTATE (run already), OS errors.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_listen_inherited(sup: *mut myriad_sup_t) -> c_int {
    crate::clear_detail();
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { sup_mut(sup) }) else {
            return MYRIAD_EINVAL;
        };
        if s.ran {
            return MYRIAD_ESTATE;
        }
        let fds = match myriad::systemd::listen_fds(false) {
            Ok(fds) => fds,
            Err(e) => return crate::fail(MYRIAD_EINVAL, e.to_string()),
        };
        let n = fds.len();
        for f in fds {
            let p = f.proto();
            let proto = if p == Proto::Fcgi {
                MYRIAD_FCGI
            } else {
                MYRIAD_HTTP
            };
            let a = Addr::Fd(std::os::fd::IntoRawFd::into_raw_fd(f.fd));
            match started(s).listen(&a, p) {
                Ok(got) => s.bound.push((got.to_string(), proto)),
                Err(e) => return os_err(&e),
            }
        }
        n as c_int
    })
}

/// Binds a status listener now, served by the supervisor itself: JSON (PHP-FPM's fields
/// and one entry per worker) on any path, OpenMetrics on a path ending in `/metrics`.
/// Errors: as myriad_sup_listen.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_status_listen(
    sup: *mut myriad_sup_t,
    addr: *const c_char,
    addr_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(a)) = (unsafe { sup_mut(sup) }, unsafe { c_str(addr, addr_len) }) else {
            return MYRIAD_EINVAL;
        };
        if s.ran {
            return MYRIAD_ESTATE;
        }
        let Ok(a) = a.parse::<Addr>() else {
            return MYRIAD_EADDR;
        };
        match started(s).status_listen(&a) {
            Ok(got) => {
                s.bound.push((got.to_string(), MYRIAD_SUP_STATUS));
                MYRIAD_OK
            }
            Err(e) => os_err(&e),
        }
    })
}

/// Number of listeners bound (status listeners included).
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_listener_count(sup: *const myriad_sup_t) -> usize {
    // SAFETY: a live supervisor or NULL.
    guard_or(0, || unsafe { sup.as_ref() }.map_or(0, |s| s.bound.len()))
}

/// Writes listener `i`'s bound address as a NUL-terminated string into `buf` (capacity
/// `cap`) and its protocol (MYRIAD_HTTP, MYRIAD_HTTPS, MYRIAD_FCGI, MYRIAD_SUP_STATUS) into `*proto`
/// (optional). Returns the length. Errors: MYRIAD_EINVAL (short buffer), MYRIAD_ENOTFOUND.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_listener_addr(
    sup: *const myriad_sup_t,
    i: usize,
    proto: *mut c_int,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard(|| {
        // SAFETY: a live supervisor or NULL.
        let Some(s) = (unsafe { sup.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        let Some((a, p)) = s.bound.get(i) else {
            return MYRIAD_ENOTFOUND;
        };
        // SAFETY: `buf` has `cap` writable bytes.
        let n = unsafe { copy_cstr(a, buf, cap) };
        if n >= 0 && !proto.is_null() {
            // SAFETY: `proto` is NULL or writable.
            unsafe { *proto = *p };
        }
        n
    })
}

struct Hook {
    cb: unsafe extern "C" fn(*mut c_void),
    ud: UserData,
}

fn set_hook(
    sup: *mut myriad_sup_t,
    cb: myriad_sup_hook_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
    reload: bool,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(cb)) = (unsafe { sup_mut(sup) }, cb) else {
            return MYRIAD_EINVAL;
        };
        if s.ran {
            return MYRIAD_ESTATE;
        }
        let h = Hook {
            cb,
            ud: UserData {
                ptr: userdata,
                dtor,
            },
        };
        let f = move || {
            // SAFETY: the C caller registered this callback with this user data.
            unsafe { (h.cb)(h.ud.get()) }
        };
        if reload {
            started(s).on_reload(f);
        } else {
            started(s).on_reopen(f);
        }
        MYRIAD_OK
    })
}

/// `cb(userdata)` runs in the supervisor on SIGHUP, before the workers are replaced
/// (re-read configuration: workers forked afterwards inherit it). `dtor(userdata)` runs
/// when the supervisor is freed. Errors: MYRIAD_EINVAL, MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_on_reload(
    sup: *mut myriad_sup_t,
    cb: myriad_sup_hook_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    set_hook(sup, cb, userdata, dtor, true)
}

/// `cb(userdata)` runs in the supervisor on SIGUSR1 (reopen log files). As
/// myriad_sup_on_reload.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_on_reopen(
    sup: *mut myriad_sup_t,
    cb: myriad_sup_hook_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    set_hook(sup, cb, userdata, dtor, false)
}

fn take_sup(sup: *mut myriad_sup_t) -> Result<Supervisor, c_int> {
    // SAFETY: forwarded.
    let Some(s) = (unsafe { sup_mut(sup) }) else {
        return Err(MYRIAD_EINVAL);
    };
    if s.ran {
        return Err(MYRIAD_ESTATE);
    }
    let Some(sv) = s.sup.take() else {
        return Err(MYRIAD_EINVAL);
    };
    s.ran = true;
    Ok(sv)
}

fn exit_code(r: std::io::Result<i32>) -> c_int {
    match r {
        Ok(c) => c,
        Err(e) => {
            log::error!("supervisor: {e}");
            eprintln!("myriad supervisor: {e}");
            os_err(&e).min(-1)
        }
    }
}

/// Runs the pool: forks the workers, each calling `cb(worker, userdata)` in its own process
/// (its return value is that process's exit code; it never returns here), and supervises
/// them until SIGTERM/SIGINT has drained them (or SIGQUIT). Signals: HUP reload, USR2
/// re-exec of the program in place (the same `main` runs again and must ask for the same
/// listeners), USR1 the reopen hook. Call on a thread that runs no loop, outside callbacks;
/// once per supervisor. Returns 0 after a graceful stop, or a negative error: MYRIAD_EINVAL
/// (no listener, no callback), MYRIAD_ESTATE (ran already), an OS error (a worker could not
/// switch to its user: never serves as root).
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_run(
    sup: *mut myriad_sup_t,
    cb: myriad_worker_fn,
    userdata: *mut c_void,
) -> c_int {
    guard(|| {
        let Some(cb) = cb else {
            return MYRIAD_EINVAL;
        };
        let sv = match take_sup(sup) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let ud = userdata as usize;
        exit_code(sv.run(move |w| {
            let mut cw = myriad_worker_t {
                listeners: w
                    .listeners()
                    .iter()
                    .enumerate()
                    .map(|(i, (a, p))| {
                        let fd = match a {
                            Addr::Fd(fd) => *fd,
                            _ => -1,
                        };
                        let proto = match p {
                            Proto::Fcgi => MYRIAD_FCGI,
                            _ if w.is_https(i) => MYRIAD_HTTPS,
                            _ => MYRIAD_HTTP,
                        };
                        (fd, proto)
                    })
                    .collect(),
                slot: w.slot(),
            };
            // SAFETY: the C caller's callback with its user data, in the worker process.
            unsafe { cb(&mut cw, ud as *mut c_void) }
        }))
    })
}

/// Runs the pool in exec mode: each worker executes `argv` (`argc` NUL-terminated
/// strings; argv[0] looked up on PATH) with the listeners as fds 3.. and LISTEN_FDS,
/// LISTEN_PID, LISTEN_FDNAMES (`http`/`fcgi`) set, as systemd hands them; a myriad program
/// there finds its supervisor page by itself (heartbeat, counts). Otherwise as
/// myriad_sup_run.
#[no_mangle]
pub unsafe extern "C" fn myriad_sup_run_exec(
    sup: *mut myriad_sup_t,
    argv: *const *const c_char,
    argc: usize,
) -> c_int {
    guard(|| {
        if argv.is_null() || argc == 0 {
            return MYRIAD_EINVAL;
        }
        let mut args = Vec::with_capacity(argc);
        for i in 0..argc {
            // SAFETY: `argv` has `argc` entries.
            let p = unsafe { *argv.add(i) };
            if p.is_null() {
                return MYRIAD_EINVAL;
            }
            // SAFETY: a NUL-terminated string from the caller.
            let b = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec();
            args.push(OsString::from_vec(b));
        }
        let sv = match take_sup(sup) {
            Ok(s) => s,
            Err(e) => return e,
        };
        exit_code(sv.run_exec(args))
    })
}

/// Number of listeners the worker serves.
#[no_mangle]
pub unsafe extern "C" fn myriad_worker_listener_count(w: *const myriad_worker_t) -> usize {
    // SAFETY: a live worker or NULL.
    guard_or(0, || unsafe { w.as_ref() }.map_or(0, |w| w.listeners.len()))
}

/// Listener `i` of the worker: returns its fd (a listening socket inherited from the
/// supervisor, to serve as `fd:N`) and writes its protocol into `*proto` (optional).
/// Errors: MYRIAD_EINVAL, MYRIAD_ENOTFOUND.
#[no_mangle]
pub unsafe extern "C" fn myriad_worker_listener(
    w: *const myriad_worker_t,
    i: usize,
    proto: *mut c_int,
) -> c_int {
    guard(|| {
        // SAFETY: a live worker or NULL.
        let Some(w) = (unsafe { w.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        let Some(&(fd, p)) = w.listeners.get(i) else {
            return MYRIAD_ENOTFOUND;
        };
        if !proto.is_null() {
            // SAFETY: `proto` is NULL or writable.
            unsafe { *proto = p };
        }
        fd
    })
}

/// The worker's slot (0..workers; extra workers of a dynamic pool count on).
#[no_mangle]
pub unsafe extern "C" fn myriad_worker_slot(w: *const myriad_worker_t) -> c_int {
    guard_or(MYRIAD_EINVAL, || {
        // SAFETY: a live worker or NULL.
        unsafe { w.as_ref() }.map_or(MYRIAD_EINVAL, |w| w.slot as c_int)
    })
}

/// Adds every listener of the worker to `srv` (not started yet), as myriad_server_listen
/// with `fd:N` addresses. Errors: MYRIAD_EINVAL, MYRIAD_ESTATE (server started),
/// MYRIAD_ETLS (the worker has an HTTPS listener: use myriad_worker_listen_tls).
#[no_mangle]
pub unsafe extern "C" fn myriad_worker_listen(
    w: *const myriad_worker_t,
    srv: *mut myriad_server_t,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { myriad_worker_listen_tls(w, srv, std::ptr::null_mut()) }
}

/// As myriad_worker_listen, the HTTPS listeners with the certificates of `tls` (loaded by
/// the worker: after a SIGHUP every worker is new and loads them again). `tls` may be NULL
/// when the worker has no HTTPS listener. The configuration is not taken: free it after the
/// server. Errors: MYRIAD_EINVAL, MYRIAD_ESTATE, MYRIAD_ETLS (an HTTPS listener and `tls`
/// NULL: myriad_last_error_detail names it; or `tls` without a certificate:
/// myriad_tls_config_error says so).
#[no_mangle]
pub unsafe extern "C" fn myriad_worker_listen_tls(
    w: *const myriad_worker_t,
    srv: *mut myriad_server_t,
    tls: *mut myriad_tls_config_t,
) -> c_int {
    guard(|| {
        // SAFETY: a live worker or NULL.
        let Some(w) = (unsafe { w.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        for &(fd, p) in &w.listeners {
            let a = format!("fd:{fd}");
            let r = if p == MYRIAD_HTTPS {
                if tls.is_null() {
                    return crate::fail(
                        MYRIAD_ETLS,
                        format!(
                            "{a} is an HTTPS listener: myriad_worker_listen_tls with certificates"
                        ),
                    );
                }
                // SAFETY: forwarded; `a` is live for the call, `tls` a live configuration.
                unsafe { myriad_server_listen_tls(srv, a.as_ptr().cast(), a.len(), tls) }
            } else {
                // SAFETY: forwarded; `a` is live for the call.
                unsafe { myriad_server_listen(srv, p, a.as_ptr().cast(), a.len()) }
            };
            if r != MYRIAD_OK {
                return r;
            }
        }
        MYRIAD_OK
    })
}
