//! The Linux backend: one epoll instance; changes are applied with `epoll_ctl` right before
//! the `epoll_wait` that follows them, so a backend with a real changelist (kqueue) and this
//! one have the same shape.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{ceil_millis, syscall, Backend, Change, Event, Interest, Op, Ready};
use crate::reactor::Stats;

/// Maximum events taken from the kernel per wait.
const MAX_EVENTS: usize = 1024;

/// An epoll instance and its event buffer.
pub(crate) struct Epoll {
    fd: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

impl Epoll {
    /// Creates a close-on-exec epoll instance.
    pub(crate) fn new() -> io::Result<Epoll> {
        let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        log::trace!("epoll_create1() = {raw}");
        Ok(Epoll {
            fd,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
        })
    }

    fn ctl(&self, change: &Change) -> io::Result<()> {
        let (op, interest) = match change.op {
            Op::Add(i) => (libc::EPOLL_CTL_ADD, Some(i)),
            Op::Modify(i) => (libc::EPOLL_CTL_MOD, Some(i)),
            Op::Delete => (libc::EPOLL_CTL_DEL, None),
            // Never queued: epoll does not receive (`Backend::receives`).
            Op::Recv(_) => return Ok(()),
        };
        let mut ev = libc::epoll_event {
            events: interest.map_or(0, epoll_bits),
            u64: change.token,
        };
        log::trace!(
            "epoll_ctl({}, {op}, fd {}, token {:#x})",
            self.fd.as_raw_fd(),
            change.fd,
            change.token
        );
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, change.fd, &mut ev)).map(drop)
    }
}

/// The epoll event bits for `i` (io_uring polls use the same bits).
pub(super) fn epoll_bits(i: Interest) -> u32 {
    let mut bits = 0u32;
    if i.contains(Interest::READ) {
        bits |= libc::EPOLLIN as u32;
        // EPOLLEXCLUSIVE accepts only IN, OUT, WAKEUP and ET (EINVAL otherwise); a
        // listener has no use for RDHUP anyway.
        if !i.contains(Interest::EXCLUSIVE) {
            bits |= libc::EPOLLRDHUP as u32;
        }
    }
    if i.contains(Interest::WRITE) {
        bits |= libc::EPOLLOUT as u32;
    }
    if i.contains(Interest::EDGE) {
        bits |= libc::EPOLLET as u32;
    }
    if i.contains(Interest::EXCLUSIVE) {
        bits |= libc::EPOLLEXCLUSIVE as u32;
    }
    bits
}

/// What poll bits `bits` mean as readiness.
pub(super) fn ready_of(bits: u32) -> Ready {
    let mut r = Ready::EMPTY;
    if bits & (libc::EPOLLIN | libc::EPOLLPRI) as u32 != 0 {
        r |= Ready::READABLE;
    }
    if bits & libc::EPOLLOUT as u32 != 0 {
        r |= Ready::WRITABLE;
    }
    if bits & libc::EPOLLRDHUP as u32 != 0 {
        r |= Ready::READ_CLOSED;
    }
    if bits & libc::EPOLLHUP as u32 != 0 {
        r |= Ready::HUP | Ready::READ_CLOSED;
    }
    if bits & libc::EPOLLERR as u32 != 0 {
        r |= Ready::ERROR;
    }
    r
}

impl Backend for Epoll {
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
        let failed_before = failed.len();
        for change in changes {
            stats.ctl += 1;
            if let Err(e) = self.ctl(change) {
                failed.push((change.token, e));
            }
        }
        // A failed change is news for its owner: do not block before reporting it.
        let ms = if failed.len() > failed_before {
            0
        } else {
            timeout.map_or(-1, ceil_millis)
        };
        stats.wait += 1;
        // SAFETY: `buf` is a live, writable array of `buf.len()` epoll_event structs.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr(),
                self.buf.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        log::trace!("epoll_wait({}, {ms}) = {n}", self.fd.as_raw_fd());
        for ev in &self.buf[..n as usize] {
            events.push(Event {
                token: ev.u64,
                ready: ready_of(ev.events),
                res: 0,
                buf: 0,
                off: 0,
            });
        }
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd, _token: u64, stats: &mut Stats) -> io::Result<()> {
        stats.ctl += 1;
        self.ctl(&Change {
            fd,
            token: 0,
            op: Op::Delete,
        })
    }

    fn name(&self) -> &'static str {
        "epoll"
    }
}
