//! The work pool (`uv_queue_work`): a work callback on a pool thread, a done callback on
//! the loop's thread.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use myriad::{Loop, WorkError, WorkId, WorkPool};

use crate::loops::{enter, with_loop};
use crate::{guard, myriad_loop_t, UserData, MYRIAD_EINVAL, MYRIAD_ENOTFOUND, MYRIAD_OK};

/// The work pool's queue is full (see myriad_work_queue).
pub const MYRIAD_EFULL: c_int = -12;
/// The work was cancelled before it started (the status myriad_work_queue's done callback
/// gets after myriad_work_cancel).
pub const MYRIAD_ECANCELED: c_int = -13;

/// Work callback: runs on a pool thread with the job's user data.
pub type myriad_work_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Done callback: runs on the loop's thread once the work callback returned (status
/// MYRIAD_OK) or the job was cancelled before it started (MYRIAD_ECANCELED).
pub type myriad_work_done_fn =
    Option<unsafe extern "C" fn(lp: *mut myriad_loop_t, status: c_int, userdata: *mut c_void)>;

/// A job's user data, shared by its work callback (pool thread) and done callback (loop
/// thread); the destructor runs when both are done with it.
struct JobData(UserData);

// SAFETY: the C caller hands the user data to a pool thread and then to the loop thread,
// never to both at once (the done callback starts after the work callback returned), as
// myriad_work_queue documents; the destructor runs once, after both.
unsafe impl Sync for JobData {}

fn status(r: &Result<(), WorkError>) -> c_int {
    match r {
        Ok(()) => MYRIAD_OK,
        Err(WorkError::Cancelled) => MYRIAD_ECANCELED,
        Err(_) => crate::MYRIAD_EPANIC,
    }
}

/// Queues `work(userdata)` on the loop's work pool (a pool thread runs it), then
/// `done(loop, status, userdata)` on the loop's thread; `dtor(userdata)` (optional) runs
/// once after both. `done` may be NULL. The job's id goes to `*id` (optional), for
/// myriad_work_cancel. Never blocks: a full queue is refused at once.
///
/// Threads: `work` runs on a pool thread and must be thread-safe with respect to what it
/// touches; it must not call loop-thread functions (it may call the "any thread" ones, e.g.
/// myriad_req_send_async). `done` and `dtor` run on the loop's thread — except when the
/// loop is freed while `work` runs: `done` is then never called and `dtor` runs on the pool
/// thread when `work` returns. Freeing the loop drops its jobs not yet started without
/// calling `work` or `done` (their `dtor` runs). Loop thread.
///
/// Errors: MYRIAD_EINVAL (`work` NULL), MYRIAD_EFULL (the pool's queue holds its maximum of
/// waiting jobs: 1024 by default, see myriad_loop_set_work_pool), MYRIAD_ENOMEM (no pool
/// thread could be started), MYRIAD_EWRONGTHREAD. On error nothing is called, `dtor`
/// included.
#[no_mangle]
pub unsafe extern "C" fn myriad_work_queue(
    lp: *mut myriad_loop_t,
    work: myriad_work_fn,
    done: myriad_work_done_fn,
    userdata: *mut c_void,
    dtor: crate::myriad_free_fn,
    id: *mut u64,
) -> c_int {
    let Some(work) = work else {
        return MYRIAD_EINVAL;
    };
    let lb = lp as *const c_void;
    guard(move || {
        let queue = move |l: &mut Loop| {
            let ud = Arc::new(JobData(UserData {
                ptr: userdata,
                dtor,
            }));
            let w = ud.clone();
            let job = move || {
                // SAFETY: the caller's work callback, with the caller's user data.
                unsafe { work(w.0.get()) };
            };
            let d = ud.clone();
            let finish = move |l: &mut Loop, r: Result<(), WorkError>| {
                if let Some(done) = done {
                    let st = status(&r);
                    // SAFETY: the caller's done callback on the loop's thread.
                    enter(lb, l, || unsafe { done(lp, st, d.0.get()) });
                }
                drop(d);
            };
            let r = l.queue_work(job, finish);
            if r.is_err() {
                // Refused: both closures are dropped already; the caller keeps its data, so
                // the destructor must not run.
                match Arc::try_unwrap(ud) {
                    Ok(mut u) => u.0.dtor = None,
                    Err(shared) => std::mem::forget(shared),
                }
            }
            match r {
                Ok(wid) => {
                    if !id.is_null() {
                        // SAFETY: the caller passes NULL or a writable u64.
                        unsafe { *id = wid.to_u64() };
                    }
                    MYRIAD_OK
                }
                Err(WorkError::Full { .. }) => MYRIAD_EFULL,
                Err(_) => crate::MYRIAD_ENOMEM,
            }
        };
        // SAFETY: forwarded.
        unsafe { with_loop(lp, queue) }
    })
}

/// Cancels job `id` if no pool thread has started it: its done callback then runs with
/// MYRIAD_ECANCELED at the end of the current loop iteration (its work callback never), then
/// its destructor. Loop thread.
/// Errors: MYRIAD_ENOTFOUND (started, finished, cancelled already, or unknown),
/// MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_work_cancel(lp: *mut myriad_loop_t, id: u64) -> c_int {
    // SAFETY: forwarded.
    guard(|| unsafe {
        with_loop(lp, |l| {
            if l.cancel_work(WorkId::from_u64(id)) {
                MYRIAD_OK
            } else {
                MYRIAD_ENOTFOUND
            }
        })
    })
}

/// Gives the loop a work pool of its own: at most `threads` pool threads (1..=256, started
/// on demand, retired after a few idle seconds) and `max_queued` jobs waiting for one
/// (1..=1048576; one more gets MYRIAD_EFULL). Without this call a loop uses the process's
/// shared pool: 4 threads (or the environment variable MYRIAD_WORK_THREADS), 1024 waiting
/// jobs. Jobs queued before keep their pool. Loop thread.
/// Errors: MYRIAD_EINVAL (out of range), MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_set_work_pool(
    lp: *mut myriad_loop_t,
    threads: u32,
    max_queued: u32,
) -> c_int {
    if !(1..=256).contains(&threads) || !(1..=1 << 20).contains(&max_queued) {
        return MYRIAD_EINVAL;
    }
    // SAFETY: forwarded.
    guard(|| unsafe {
        with_loop(lp, |l| {
            l.set_work_pool(WorkPool::new(threads as usize, max_queued as usize));
            MYRIAD_OK
        })
    })
}
