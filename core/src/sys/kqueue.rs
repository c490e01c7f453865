//! The BSD and macOS backend: one kqueue. The changes queued since the last wait go in the
//! changelist of the `kevent()` call that waits, so an interest change costs no syscall of
//! its own. A registration is one or two filters on its fd (`EVFILT_READ`, `EVFILT_WRITE`),
//! `EV_CLEAR` when edge-triggered; the filters each fd has are remembered so that a change
//! adds and deletes exactly the filters that differ. A change the kernel refuses comes back
//! in the event list (`EV_ERROR`) and is reported to its owner like a failed `epoll_ctl`.
//!
//! kqueue has no `EPOLLEXCLUSIVE`: a listener shared by several loops wakes all of them, and
//! those that find no connection get `EAGAIN`.
//!
//! Built and type-checked for FreeBSD and macOS (`cargo check --target
//! x86_64-unknown-freebsd` / `x86_64-apple-darwin`); not run by the test suite, which runs
//! on Linux, except for its pure part (`kqueue_plan`: which filters a change adds and
//! deletes), which is tested everywhere.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::kqueue_plan::{steps, wanted, Step};
use super::{syscall, Backend, Change, Event, Op, Ready};
use crate::reactor::Stats;

// A token travels in `udata`, a pointer: it must hold 64 bits.
const _: () = assert!(
    std::mem::size_of::<*mut libc::c_void>() == 8,
    "the kqueue backend needs 64-bit pointers"
);

/// Maximum events taken from the kernel per wait.
const MAX_EVENTS: usize = 1024;
/// Most changes handed to one `kevent()`: half the event list, so that every change the
/// kernel refuses finds room there (a refusal without room fails the whole call).
const MAX_CHANGES: usize = MAX_EVENTS / 2;

/// A kqueue and its buffers.
pub(crate) struct Kqueue {
    fd: OwnedFd,
    changes: Vec<libc::kevent>,
    buf: Vec<libc::kevent>,
    /// The filters registered on each fd (indexed by fd; `kqueue_plan::F_*` bits).
    filters: Vec<u8>,
}

/// A change for the kevent of `ident` (an fd, or a signal number) in `filter`.
pub(crate) fn kev(ident: RawFd, filter: i16, flags: u16, token: u64) -> libc::kevent {
    // SAFETY: kevent is a plain C struct for which all-zero is valid (no filter data).
    let mut k: libc::kevent = unsafe { std::mem::zeroed() };
    k.ident = ident as libc::uintptr_t;
    k.filter = filter;
    k.flags = flags;
    k.udata = token as usize as *mut libc::c_void;
    k
}

/// Applies `changes` to kqueue `kq` now, taking no events (so none is lost to a call that
/// does not deliver them).
pub(crate) fn apply(kq: RawFd, changes: &[libc::kevent]) -> io::Result<()> {
    // SAFETY: `changes` holds initialised kevents; no event list, so nothing is written.
    let r = unsafe {
        libc::kevent(
            kq,
            changes.as_ptr(),
            changes.len() as _,
            std::ptr::null_mut(),
            0,
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Appends the kevents that take `fd`'s filters from `have` to `want`.
fn push_steps(out: &mut Vec<libc::kevent>, fd: RawFd, token: u64, have: u8, want: u8) {
    let filters = [libc::EVFILT_READ, libc::EVFILT_WRITE];
    for (filter, step) in filters.into_iter().zip(steps(have, want)) {
        let flags = match step {
            None => continue,
            Some(Step::Add { edge: true }) => libc::EV_ADD | libc::EV_CLEAR,
            Some(Step::Add { edge: false }) => libc::EV_ADD,
            Some(Step::Delete) => libc::EV_DELETE,
        };
        out.push(kev(fd, filter, flags, token));
    }
}

impl Kqueue {
    /// Creates a close-on-exec kqueue.
    pub(crate) fn new() -> io::Result<Kqueue> {
        let raw = syscall!(kqueue())?;
        // SAFETY: kqueue returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        super::set_nonblock_cloexec(raw)?; // (kevent ignores O_NONBLOCK)
        log::trace!("kqueue() = {raw}");
        Ok(Kqueue {
            fd,
            changes: Vec::new(),
            // SAFETY: as in `kev`: all-zero is a valid kevent.
            buf: vec![unsafe { std::mem::zeroed() }; MAX_EVENTS],
            filters: Vec::new(),
        })
    }

    fn slot(&mut self, fd: RawFd) -> &mut u8 {
        let i = fd as usize;
        if i >= self.filters.len() {
            self.filters.resize(i + 1, 0);
        }
        &mut self.filters[i]
    }

    /// Queues the kevents that turn `fd`'s filters into what `op` asks for.
    fn queue(&mut self, fd: RawFd, token: u64, op: Op) {
        if fd < 0 {
            return;
        }
        // Op::Recv is never queued: kqueue does not receive (`Backend::receives`).
        let Some(want) = wanted(op) else { return };
        // A new registration's fd number may be a closed one's, whose filters went with it.
        let have = if matches!(op, Op::Add(_)) {
            0
        } else {
            *self.slot(fd)
        };
        *self.slot(fd) = want;
        push_steps(&mut self.changes, fd, token, have, want);
    }

    /// One `kevent()`: applies `self.changes[..n]`, collects up to the buffer's worth of
    /// events into `events` and refusals into `failed`.
    fn kevent(
        &mut self,
        n: usize,
        failed: &mut Vec<(u64, io::Error)>,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        stats.wait += 1;
        // SAFETY: the change list holds `n` initialised kevents, the event buffer has room
        // for `buf.len()`, and `ts` (when given) lives until the call returns.
        let r = unsafe {
            libc::kevent(
                self.fd.as_raw_fd(),
                self.changes.as_ptr(),
                n as _,
                self.buf.as_mut_ptr(),
                self.buf.len() as _,
                ts.as_ref()
                    .map_or(std::ptr::null(), |t| t as *const libc::timespec),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        log::trace!("kevent({}, {n} changes) = {r}", self.fd.as_raw_fd());
        for k in &self.buf[..r as usize] {
            let token = k.udata as usize as u64;
            if k.flags & libc::EV_ERROR != 0 {
                // A refused change. ENOENT: the filter is gone already (its fd was closed),
                // which is what a deletion wanted.
                let errno = k.data as i32;
                if errno != 0 && errno != libc::ENOENT {
                    failed.push((token, io::Error::from_raw_os_error(errno)));
                }
                continue;
            }
            let ready = ready_of(k);
            // Both filters of one fd often fire together: one event, as epoll gives.
            match events.last_mut() {
                Some(last) if last.token == token && last.res == 0 => last.ready |= ready,
                _ => events.push(Event {
                    token,
                    ready,
                    res: 0,
                    buf: 0,
                    off: 0,
                }),
            }
        }
        Ok(())
    }
}

/// What a returned kevent means as readiness.
fn ready_of(k: &libc::kevent) -> Ready {
    let eof = k.flags & libc::EV_EOF != 0;
    // With EV_EOF, `fflags` holds a pending socket error, if any.
    let error = if eof && k.fflags != 0 {
        Ready::ERROR
    } else {
        Ready::EMPTY
    };
    if k.filter == libc::EVFILT_WRITE {
        // The peer stopped reading (or reset): the next write says how, as EPOLLOUT with
        // EPOLLERR would. Unread input is still there to read.
        return Ready::WRITABLE | error;
    }
    let mut r = Ready::READABLE | error;
    if eof {
        r |= Ready::READ_CLOSED;
    }
    r
}

impl Backend for Kqueue {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn wait(
        &mut self,
        changes: &[Change],
        failed: &mut Vec<(u64, io::Error)>,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let (events_before, failed_before) = (events.len(), failed.len());
        self.changes.clear();
        // No `ctl` counted: the changes ride in the wait's own call, as on io_uring.
        for c in changes {
            self.queue(c.fd, c.token, c.op);
        }
        // Usually one call; a changelist too long for the event list's room for refusals
        // goes in slices, all but the last without waiting.
        while self.changes.len() > MAX_CHANGES {
            self.kevent(MAX_CHANGES, failed, events, Some(Duration::ZERO), stats)?;
            self.changes.drain(..MAX_CHANGES);
        }
        // News already in hand (events, refusals) must not wait behind a blocking call.
        let timeout = if events.len() == events_before && failed.len() == failed_before {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let n = self.changes.len();
        self.kevent(n, failed, events, timeout, stats)
    }

    fn deregister(&mut self, fd: RawFd, token: u64, stats: &mut Stats) -> io::Result<()> {
        let have = *self.slot(fd);
        *self.slot(fd) = 0;
        let mut dels = Vec::with_capacity(2);
        push_steps(&mut dels, fd, token, have, 0);
        if dels.is_empty() {
            return Ok(());
        }
        stats.ctl += 1;
        match apply(self.fd.as_raw_fd(), &dels) {
            // The filters went with a close already.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    fn name(&self) -> &'static str {
        "kqueue"
    }
}
