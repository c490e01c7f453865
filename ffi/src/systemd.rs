//! systemd's protocols for C programs: socket-activated listeners (LISTEN_FDS) and
//! readiness notification (NOTIFY_SOCKET), without libsystemd.

use std::ffi::{c_char, c_int};
use std::os::fd::IntoRawFd;

use myriad::systemd::{self, ActivationError};
use myriad::{Addr, Proto};

use crate::loops::with_loop;
use crate::server::{push_listener, srv_mut};
use crate::{guard, myriad_loop_t, myriad_server_t, os_err, MYRIAD_EINVAL, MYRIAD_ESTATE};

/// Adds the listening sockets the service manager passed by socket activation (systemd's
/// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, as sd_listen_fds(3) reads them) to the
/// server: an fd named "fcgi" serves FastCGI, any other name (or none) HTTP. Their
/// addresses read "fd:3", "fd:4"... (myriad_server_listener_addr). With `unset_env`
/// non-zero the three variables are removed from the environment (call it then before
/// starting threads). Returns the number of listeners added: 0 when the process was not
/// socket-activated (the variables are unset, or LISTEN_PID names another process).
/// Configuration thread, before myriad_server_start.
/// Errors: MYRIAD_EINVAL (NULL server, or malformed variables: a LISTEN_PID or LISTEN_FDS
/// that is not a number, LISTEN_FDNAMES with a different count of names;
/// myriad_last_error_detail says which), MYRIAD_ESTATE (server started, or the fds were
/// taken by an earlier call), OS errors (a passed fd is not open).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_listen_inherited(
    srv: *mut myriad_server_t,
    unset_env: c_int,
) -> c_int {
    crate::clear_detail();
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { srv_mut(srv) }) else {
            return MYRIAD_EINVAL;
        };
        if s.is_started() {
            return MYRIAD_ESTATE;
        }
        let fds = match systemd::listen_fds(unset_env != 0) {
            Ok(fds) => fds,
            Err(e) => {
                let code = match &e {
                    ActivationError::Fd(_, err) => os_err(err),
                    ActivationError::AlreadyTaken => MYRIAD_ESTATE,
                    _ => MYRIAD_EINVAL,
                };
                return crate::fail(code, e.to_string());
            }
        };
        let n = fds.len();
        for f in fds {
            let proto: Proto = f.proto();
            // The server adopts the fd when it starts (as it does any fd:N address).
            push_listener(s, Addr::Fd(f.fd.into_raw_fd()), proto);
        }
        n as c_int
    })
}

/// How many listening sockets socket activation passed to this process (what
/// myriad_server_listen_inherited would add now), without taking them: 0 when the process
/// was not socket-activated or they were taken already. Any thread.
/// Errors: MYRIAD_EINVAL (malformed LISTEN_PID, LISTEN_FDS or LISTEN_FDNAMES;
/// myriad_last_error_detail says which).
#[no_mangle]
pub extern "C" fn myriad_listen_fds() -> c_int {
    crate::clear_detail();
    guard(|| match systemd::listen_fds_count() {
        Ok(n) => n as c_int,
        Err(e) => crate::fail(MYRIAD_EINVAL, e.to_string()),
    })
}

/// Sends `state` (one or more "VAR=value" lines: "READY=1", "STOPPING=1",
/// "RELOADING=1\nMONOTONIC_USEC=...", "WATCHDOG=1", "STATUS=text") to the service manager's
/// NOTIFY_SOCKET in one datagram, as sd_notify(3) does. NOTIFY_SOCKET is read at the first
/// call. Never blocks (a manager whose queue is full gives MYRIAD_EOS_BASE - EAGAIN).
/// Returns 1 when sent, 0 when NOTIFY_SOCKET is unset (not started by a manager that
/// listens: nothing to do) or when called in a process forked after the first call (a
/// worker is not the service's main process: it sends nothing). Any thread.
/// Errors: MYRIAD_EINVAL (`state` NULL with a length, not UTF-8, or NOTIFY_SOCKET neither an
/// absolute path nor an @abstract name), OS errors from sendto.
#[no_mangle]
pub unsafe extern "C" fn myriad_notify(state: *const c_char, len: usize) -> c_int {
    guard(|| {
        // SAFETY: the caller passes `len` readable bytes.
        let Some(st) = (unsafe { crate::c_str(state, len) }) else {
            return MYRIAD_EINVAL;
        };
        match systemd::notify(st) {
            Ok(sent) => c_int::from(sent),
            Err(e) => os_err(&e),
        }
    })
}

/// The watchdog timeout the service manager asks for (WATCHDOG_USEC, unless WATCHDOG_PID
/// names another process), in microseconds, into `*usec` (optional). Returns 1 if a
/// watchdog is asked for, 0 if not. Any thread.
/// Errors: MYRIAD_EINVAL (WATCHDOG_USEC or WATCHDOG_PID not a positive number).
#[no_mangle]
pub unsafe extern "C" fn myriad_watchdog_usec(usec: *mut u64) -> c_int {
    guard(|| match systemd::watchdog_interval(false) {
        Ok(Some(d)) => {
            if !usec.is_null() {
                // SAFETY: the caller passes NULL or a writable u64.
                unsafe { *usec = d.as_micros().min(u128::from(u64::MAX)) as u64 };
            }
            1
        }
        Ok(None) => 0,
        Err(e) => os_err(&e),
    })
}

/// When the service manager asks for a watchdog (WATCHDOG_USEC) and listens
/// (NOTIFY_SOCKET): sends "WATCHDOG=1" now and arms a repeating timer on `lp` that sends it
/// every half timeout, so a loop stuck in a callback stops the pings and the manager
/// restarts the service. Returns 1 (the timer id in `*timer`, optional, for
/// myriad_timer_cancel), or 0 when no watchdog is asked for. Loop thread.
/// Errors: MYRIAD_EINVAL (malformed variables), MYRIAD_EWRONGTHREAD, OS errors from the
/// first ping.
#[no_mangle]
pub unsafe extern "C" fn myriad_watchdog_start(lp: *mut myriad_loop_t, timer: *mut u64) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe {
        with_loop(lp, |l| match systemd::start_watchdog(l) {
            Ok(Some(t)) => {
                if !timer.is_null() {
                    *timer = t.to_u64();
                }
                1
            }
            Ok(None) => 0,
            Err(e) => os_err(&e),
        })
    })
}
