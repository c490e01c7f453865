//! Loops, timers, signals, fd watchers and cross-thread posts.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use myriad::{Handle, Interest, Loop, SignalId, TimerId, Token};

use crate::{
    guard, guard_or, os_err, UserData, CURRENT, MYRIAD_EINVAL, MYRIAD_ENOTFOUND,
    MYRIAD_EWRONGTHREAD, MYRIAD_OK,
};

/// An event loop (opaque). Create with myriad_loop_new, free with myriad_loop_free.
pub struct myriad_loop_t {
    lp: UnsafeCell<Loop>,
    pub(crate) handle: Handle,
    owner: crate::ThreadKey,
}

impl myriad_loop_t {
    pub(crate) fn new(lp: Loop) -> Box<myriad_loop_t> {
        let handle = lp.handle();
        Box::new(myriad_loop_t {
            lp: UnsafeCell::new(lp),
            handle,
            owner: crate::this_thread(),
        })
    }
}

/// Runs `f` with the loop: the `&mut Loop` of the callback running on this thread when the
/// call comes from inside one (re-entrant use from C), else the loop itself. Fails with
/// MYRIAD_EWRONGTHREAD off the loop's thread.
pub(crate) unsafe fn with_loop(
    lb: *const myriad_loop_t,
    f: impl FnOnce(&mut Loop) -> c_int,
) -> c_int {
    if lb.is_null() {
        return MYRIAD_EINVAL;
    }
    // SAFETY: the caller passes a live loop from myriad_loop_new.
    let b = unsafe { &*lb };
    if crate::this_thread() != b.owner {
        return MYRIAD_EWRONGTHREAD;
    }
    let (cur, lp) = CURRENT.with(|c| c.get());
    if cur == lb.cast() && !lp.is_null() {
        // SAFETY: `lp` comes from the `&mut Loop` of the callback now running on this
        // thread, which does not touch it until we return.
        return f(unsafe { &mut *lp });
    }
    // SAFETY: no callback of this loop is running on this thread, so nothing else
    // borrows the loop (it is only used from its owner thread).
    f(unsafe { &mut *b.lp.get() })
}

/// Stores a new registration's id in the optional out-pointer `id`, or maps its error.
unsafe fn registered(r: std::io::Result<u64>, id: *mut u64) -> c_int {
    match r {
        Ok(v) => {
            if !id.is_null() {
                // SAFETY: the caller passes NULL or a writable u64.
                unsafe { *id = v };
            }
            MYRIAD_OK
        }
        Err(e) => os_err(&e),
    }
}

/// MYRIAD_OK if something was removed, MYRIAD_ENOTFOUND if the id was stale.
fn removed(found: bool) -> c_int {
    if found {
        MYRIAD_OK
    } else {
        MYRIAD_ENOTFOUND
    }
}

/// Calls C code from a loop callback, making `lp` the loop for re-entrant calls.
pub(crate) fn enter<R>(lb: *const c_void, lp: &mut Loop, f: impl FnOnce() -> R) -> R {
    let prev = CURRENT.with(|c| c.replace((lb, lp as *mut Loop)));
    struct Restore((*const c_void, *mut Loop));
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _r = Restore(prev);
    f()
}

/// Creates a loop on the default backend and stores it in `*out`: the one named by the
/// environment variable MYRIAD_BACKEND ("epoll", "io_uring", "kqueue") if set, else epoll
/// on Linux and kqueue on FreeBSD and macOS. The loop
/// belongs to the calling thread: loop functions must be called from it (or from its
/// callbacks).
/// Errors: MYRIAD_EINVAL (out is NULL), OS errors.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_new(out: *mut *mut myriad_loop_t) -> c_int {
    // SAFETY: as documented, `out` is NULL or writable.
    unsafe { myriad_loop_new_backend(out, std::ptr::null(), 0) }
}

/// Like myriad_loop_new with a backend name: "epoll" or "io_uring" (Linux 5.11+), "kqueue"
/// (FreeBSD, macOS); NULL or "" for the default.
/// Errors: MYRIAD_EINVAL, MYRIAD_EUNSUPPORTED (unknown backend), OS errors.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_new_backend(
    out: *mut *mut myriad_loop_t,
    name: *const c_char,
    name_len: usize,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        // SAFETY: the caller passes name_len readable bytes (or NULL).
        let Some(name) = (unsafe { crate::c_str(name, name_len) }) else {
            return MYRIAD_EINVAL;
        };
        match Loop::with_backend(name) {
            Ok(lp) => {
                // SAFETY: `out` is writable (checked non-NULL).
                unsafe { *out = Box::into_raw(myriad_loop_t::new(lp)) };
                MYRIAD_OK
            }
            Err(e) => os_err(&e),
        }
    })
}

/// Frees a loop and everything still on it (timers, watchers, connections; their
/// destructors run). NULL is a no-op. Loop thread, not from inside its callbacks.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_free(lp: *mut myriad_loop_t) {
    if lp.is_null() {
        return;
    }
    guard(|| {
        // SAFETY: `lp` came from myriad_loop_new and is not used again.
        drop(unsafe { Box::from_raw(lp) });
        MYRIAD_OK
    });
}

/// Runs the loop until myriad_loop_stop. Loop thread.
/// Errors: MYRIAD_EWRONGTHREAD, OS errors from the backend.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_run(lp: *mut myriad_loop_t) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe { with_loop(lp, |l| l.run().map_or_else(|e| os_err(&e), |_| MYRIAD_OK)) })
}

/// Runs one iteration: waits for events unless `nowait` is non-zero. Returns 1 if a stop
/// was requested, 0 if not, or a negative error. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_run_once(lp: *mut myriad_loop_t, nowait: c_int) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe {
        with_loop(lp, |l| {
            let r = if nowait != 0 {
                l.run_once_nowait()
            } else {
                l.run_once()
            };
            match r {
                Ok(stop) => stop as c_int,
                Err(e) => os_err(&e),
            }
        })
    })
}

/// Makes myriad_loop_run return after the current iteration. Any thread.
/// Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_stop(lp: *const myriad_loop_t) -> c_int {
    guard(|| {
        if lp.is_null() {
            return MYRIAD_EINVAL;
        }
        // SAFETY: a live loop; `handle` is immutable and thread-safe.
        unsafe { &*lp }.handle.stop();
        MYRIAD_OK
    })
}

/// The loop's backend, "epoll", "io_uring" or "kqueue" (static, NUL-terminated); NULL for a NULL loop
/// or a call from another thread. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_backend(lp: *mut myriad_loop_t) -> *const c_char {
    let mut name = "";
    // SAFETY: forwarded.
    let r = guard(|| unsafe {
        with_loop(lp, |l| {
            name = l.backend_name();
            MYRIAD_OK
        })
    });
    let s: &'static str = match (r, name) {
        (MYRIAD_OK, "epoll") => "epoll\0",
        (MYRIAD_OK, "io_uring") => "io_uring\0",
        (MYRIAD_OK, "kqueue") => "kqueue\0",
        _ => return std::ptr::null(),
    };
    s.as_ptr().cast()
}

/// The fd a host loop polls for readability (the epoll, io_uring or kqueue fd), or a negative
/// error. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_backend_fd(lp: *mut myriad_loop_t) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe { with_loop(lp, |l| l.backend_fd()) })
}

/// Milliseconds a host loop may sleep before calling myriad_loop_run_once(lp, 1): 0 when
/// work is pending (including changes made just now), -1 for "until the backend fd is
/// readable", or a negative error below -1. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_next_timeout(lp: *mut myriad_loop_t) -> i64 {
    let mut out: i64 = -1;
    // SAFETY: forwarded.
    let r = guard(|| unsafe {
        with_loop(lp, |l| {
            out = l
                .next_timeout()
                .map_or(-1, |d| d.as_millis().min(i64::MAX as u128) as i64);
            MYRIAD_OK
        })
    });
    if r < 0 {
        return i64::from(r) - 1;
    }
    out
}

/// A callback with only user data (timers, posts, deferred work).
pub type myriad_cb = Option<unsafe extern "C" fn(lp: *mut myriad_loop_t, userdata: *mut c_void)>;

/// Arms a timer: `cb` runs after `after_ms`, then every `repeat_ms` if non-zero, until
/// cancelled. The timer id goes to `*id` (optional). `dtor(userdata)` runs when the timer
/// is cancelled, after a one-shot fired, or with the loop. No syscall. Loop thread.
/// Errors: MYRIAD_EINVAL (cb NULL), MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_timer_start(
    lp: *mut myriad_loop_t,
    after_ms: u64,
    repeat_ms: u64,
    cb: myriad_cb,
    userdata: *mut c_void,
    dtor: crate::myriad_free_fn,
    id: *mut u64,
) -> c_int {
    let Some(cb) = cb else { return MYRIAD_EINVAL };
    let ud = UserData {
        ptr: userdata,
        dtor,
    };
    let lb = lp as *const c_void;
    // SAFETY: forwarded.
    guard(move || unsafe {
        with_loop(lp, move |l| {
            let call = move |l: &mut Loop| enter(lb, l, || cb(lp, ud.get()));
            let t = if repeat_ms == 0 {
                l.timer(Duration::from_millis(after_ms), move |l| call(l))
            } else {
                l.repeat(
                    Duration::from_millis(after_ms),
                    Duration::from_millis(repeat_ms),
                    move |l, _| call(l),
                )
            };
            registered(Ok(t.to_u64()), id)
        })
    })
}

/// Cancels a timer (O(1), no syscall), running its destructor. Safe inside its own
/// callback. Loop thread. Errors: MYRIAD_ENOTFOUND (already fired or cancelled).
#[no_mangle]
pub unsafe extern "C" fn myriad_timer_cancel(lp: *mut myriad_loop_t, id: u64) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe { with_loop(lp, |l| removed(l.cancel_timer(TimerId::from_u64(id)))) })
}

/// Signal callback: the loop, the signal number, user data.
pub type myriad_signal_fn =
    Option<unsafe extern "C" fn(lp: *mut myriad_loop_t, signo: c_int, userdata: *mut c_void)>;

/// Calls `cb` on the loop whenever `signo` is delivered (signalfd). Blocks the signal in the
/// calling thread: watch signals before starting other threads, which inherit the mask.
/// Loop thread. Errors: MYRIAD_EINVAL (cb NULL, SIGKILL, SIGSTOP, bad number).
#[no_mangle]
pub unsafe extern "C" fn myriad_signal_watch(
    lp: *mut myriad_loop_t,
    signo: c_int,
    cb: myriad_signal_fn,
    userdata: *mut c_void,
    dtor: crate::myriad_free_fn,
    id: *mut u64,
) -> c_int {
    let Some(cb) = cb else { return MYRIAD_EINVAL };
    let ud = UserData {
        ptr: userdata,
        dtor,
    };
    let lb = lp as *const c_void;
    // SAFETY: forwarded.
    guard(move || unsafe {
        with_loop(lp, move |l| {
            let r = l.watch_signal(signo, move |l, s| enter(lb, l, || cb(lp, s, ud.get())));
            registered(r.map(|sid| sid.to_u64()), id)
        })
    })
}

/// Stops a signal watch (running its destructor). Loop thread. Errors: MYRIAD_ENOTFOUND.
#[no_mangle]
pub unsafe extern "C" fn myriad_signal_unwatch(lp: *mut myriad_loop_t, id: u64) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe { with_loop(lp, |l| removed(l.unwatch_signal(SignalId::from_u64(id)))) })
}

/// Watch for readability.
pub const MYRIAD_READ: c_int = 1;
/// Watch for writability.
pub const MYRIAD_WRITE: c_int = 2;
/// Edge-triggered: told once per change; read/write until EAGAIN (or a short count).
pub const MYRIAD_EDGE: c_int = 4;
/// Event bit: an error is pending on the fd (or it cannot be watched).
pub const MYRIAD_ERROR: c_int = 16;
/// Event bit: the peer hung up.
pub const MYRIAD_HUP: c_int = 8;

/// Fd watcher callback: the loop, the fd, the events (MYRIAD_READ|WRITE|HUP|ERROR bits).
pub type myriad_fd_fn = Option<
    unsafe extern "C" fn(lp: *mut myriad_loop_t, fd: c_int, events: c_int, userdata: *mut c_void),
>;

/// Watches a user-owned fd (a pipe, a database socket) for `events` (MYRIAD_READ and/or
/// MYRIAD_WRITE, optionally MYRIAD_EDGE). The fd stays yours: close it only after
/// myriad_fd_unwatch. Loop thread. Errors: MYRIAD_EINVAL (bad fd, events or cb).
#[no_mangle]
pub unsafe extern "C" fn myriad_fd_watch(
    lp: *mut myriad_loop_t,
    fd: c_int,
    events: c_int,
    cb: myriad_fd_fn,
    userdata: *mut c_void,
    dtor: crate::myriad_free_fn,
    id: *mut u64,
) -> c_int {
    let Some(cb) = cb else { return MYRIAD_EINVAL };
    let Some(interest) = u8::try_from(events).ok().and_then(Interest::from_bits) else {
        return MYRIAD_EINVAL;
    };
    if fd < 0 {
        return MYRIAD_EINVAL;
    }
    let ud = UserData {
        ptr: userdata,
        dtor,
    };
    let lb = lp as *const c_void;
    // SAFETY: forwarded.
    guard(move || unsafe {
        with_loop(lp, move |l| {
            let r = l.watch(fd, interest, move |l, _, ready| {
                let mut ev = 0;
                if ready.contains(myriad::Ready::READABLE) {
                    ev |= MYRIAD_READ;
                }
                if ready.contains(myriad::Ready::WRITABLE) {
                    ev |= MYRIAD_WRITE;
                }
                if ready.contains(myriad::Ready::HUP) {
                    ev |= MYRIAD_HUP;
                }
                if ready.contains(myriad::Ready::ERROR) {
                    ev |= MYRIAD_ERROR;
                }
                enter(lb, l, || cb(lp, fd, ev, ud.get()));
            });
            registered(r.map(|t| t.to_u64()), id)
        })
    })
}

/// Stops watching an fd (running the destructor). Safe inside its own callback. Loop
/// thread. Errors: MYRIAD_ENOTFOUND.
#[no_mangle]
pub unsafe extern "C" fn myriad_fd_unwatch(lp: *mut myriad_loop_t, id: u64) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe { with_loop(lp, |l| removed(l.unwatch(Token::from_u64(id)))) })
}

/// Runs `cb` on the loop's thread in a later iteration. Any thread; many posts between
/// two iterations cost at most one wakeup. `dtor(userdata)` runs after `cb` (or if the
/// loop is freed first). Errors: MYRIAD_EINVAL, MYRIAD_ESTATE (the loop is gone).
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_post(
    lp: *const myriad_loop_t,
    cb: myriad_cb,
    userdata: *mut c_void,
    dtor: crate::myriad_free_fn,
) -> c_int {
    guard(|| {
        let (Some(cb), false) = (cb, lp.is_null()) else {
            return MYRIAD_EINVAL;
        };
        let ud = UserData {
            ptr: userdata,
            dtor,
        };
        let addr = lp as usize;
        // SAFETY: a live loop; `handle` is thread-safe.
        let h = unsafe { &*lp }.handle.clone();
        match h.post(move |l| {
            let p = addr as *mut myriad_loop_t;
            // SAFETY: the closure runs on the loop's thread while the loop is alive.
            enter(p as *const c_void, l, || unsafe { cb(p, ud.get()) });
        }) {
            Ok(()) => MYRIAD_OK,
            Err(_) => crate::MYRIAD_ESTATE,
        }
    })
}

/// Counters of the loop's own syscalls (see myriad_loop_stats).
#[repr(C)]
#[derive(Default)]
pub struct myriad_stats_t {
    /// Loop iterations.
    pub iterations: u64,
    /// Backend waits (epoll_wait, io_uring_enter, kevent).
    pub wait: u64,
    /// Interest changes made by syscall (epoll_ctl; io_uring's and kqueue's ride in their
    /// waits).
    pub ctl: u64,
    /// Reads.
    pub read: u64,
    /// Writes (on io_uring: sends submitted by the next wait, no syscall of their own).
    pub write: u64,
    /// accept4 calls; on io_uring, which accepts through the ring (Linux 5.19+), none,
    /// and for a TCP listener one getpeername per connection instead.
    pub accept: u64,
    /// Other syscalls (close, shutdown, signalfd...).
    pub other: u64,
    /// Eventfd writes by posts.
    pub wakeups: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connection input received by the backend itself (io_uring receive completions, no
    /// syscall of their own).
    pub received: u64,
}

/// Copies the loop's counters into `*out`. Loop thread. Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_stats(
    lp: *mut myriad_loop_t,
    out: *mut myriad_stats_t,
) -> c_int {
    if out.is_null() {
        return MYRIAD_EINVAL;
    }
    // SAFETY: forwarded; `out` is writable.
    guard(|| unsafe {
        with_loop(lp, |l| {
            let s = l.stats();
            *out = myriad_stats_t {
                iterations: s.iterations,
                wait: s.wait,
                ctl: s.ctl,
                read: s.read,
                write: s.write,
                accept: s.accept,
                other: s.other,
                wakeups: s.wakeups,
                accepted: s.accepted,
                received: s.received,
            };
            MYRIAD_OK
        })
    })
}

#[allow(dead_code)]
fn _assert_send() {
    fn s<T: Send>() {}
    s::<UserData>();
    let _ = guard_or(0, || 0);
}
