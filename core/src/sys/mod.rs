//! OS backends behind one trait: a backend takes a batch of interest changes into the same
//! call that waits, as `kevent()` and `io_uring_enter()` do; epoll applies them with
//! `epoll_ctl` just before `epoll_wait`. epoll and io_uring on Linux, kqueue on FreeBSD and
//! macOS.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::reactor::Stats;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod epoll;
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
pub(crate) mod kqueue;
// Pure logic of the kqueue backend, built everywhere so that its tests run on Linux too.
#[cfg_attr(not(any(target_os = "freebsd", target_os = "macos")), allow(dead_code))]
pub(crate) mod kqueue_plan;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

/// The platform's default backend.
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
pub(crate) const DEFAULT_BACKEND: &str = "kqueue";
/// The platform's default backend.
#[cfg(not(any(target_os = "freebsd", target_os = "macos")))]
pub(crate) const DEFAULT_BACKEND: &str = "epoll";

/// Turns a libc call's `-1` into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of the macro guarantees the arguments are valid for this call;
        // each use site documents why.
        #[allow(unused_unsafe, clippy::undocumented_unsafe_blocks)]
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Closes the fd of an accept nobody takes (`res`: an fd, or a negated errno).
pub(crate) fn close_accepted(res: i32) {
    if res >= 0 {
        // SAFETY: the accept installed this fd for us and handed it over with its result;
        // nothing else has it.
        drop(unsafe { OwnedFd::from_raw_fd(res) });
    }
}

/// A close-on-exec pipe with both ends non-blocking: (read end, write end). For what has
/// no eventfd (the wakeup) or no `pipe2` (macOS).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn nonblocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    syscall!(pipe(fds.as_mut_ptr()))?;
    // SAFETY: pipe returned two fresh fds that nothing else owns.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in fds {
        set_nonblock_cloexec(fd)?;
    }
    Ok(ends)
}

/// Sets `O_NONBLOCK` and `FD_CLOEXEC` on `fd`, for systems whose calls cannot create fds
/// with them (macOS has no `SOCK_NONBLOCK`, `accept4` or `pipe2`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn set_nonblock_cloexec(fd: RawFd) -> io::Result<()> {
    let fl = syscall!(fcntl(fd, libc::F_GETFL))?;
    syscall!(fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
    syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
    Ok(())
}

/// Readiness reported for a source (a bit set).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready(u32);

impl Ready {
    /// Nothing is ready (used for "call me again" dispatches).
    pub const EMPTY: Ready = Ready(0);
    /// Data (or a connection, or EOF) can be read.
    pub const READABLE: Ready = Ready(1);
    /// Data can be written.
    pub const WRITABLE: Ready = Ready(2);
    /// The peer shut down its writing side (EPOLLRDHUP / EV_EOF on read).
    pub const READ_CLOSED: Ready = Ready(4);
    /// Both directions are closed (EPOLLHUP).
    pub const HUP: Ready = Ready(8);
    /// An error is pending on the fd (EPOLLERR).
    pub const ERROR: Ready = Ready(16);
    /// A timer owned by the source fired.
    pub const TIMER: Ready = Ready(32);
    /// A send queued with [`Backend::queue_send`] completed (`Event::res` has its result).
    pub(crate) const SENT: Ready = Ready(64);
    /// The backend received input for a connection registered with [`Interest::RECV`]
    /// (`Event::res` has the byte count, 0 at EOF, or a negated errno; `Event::buf` the
    /// buffer holding the bytes).
    pub(crate) const RECEIVED: Ready = Ready(128);
    /// The backend accepted a connection on a listener registered with
    /// [`Interest::ACCEPT`] (`Event::res` has the new fd, or a negated errno).
    pub(crate) const ACCEPTED: Ready = Ready(256);

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
    /// Whether any bit of `other` is set in `self`.
    pub fn intersects(self, other: Ready) -> bool {
        self.0 & other.0 != 0
    }
    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The raw bits (stable values, used by the C ABI).
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl std::ops::BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Ready {
    fn bitor_assign(&mut self, rhs: Ready) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Ready::READABLE, "READABLE"),
            (Ready::WRITABLE, "WRITABLE"),
            (Ready::READ_CLOSED, "READ_CLOSED"),
            (Ready::HUP, "HUP"),
            (Ready::ERROR, "ERROR"),
            (Ready::TIMER, "TIMER"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("EMPTY")?;
        }
        Ok(())
    }
}

/// What a registration asks to be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest(u8);

impl Interest {
    /// Readability (and read-side hangup).
    pub const READ: Interest = Interest(1);
    /// Writability.
    pub const WRITE: Interest = Interest(2);
    /// Edge-triggered: reported once per change; the owner must drain the fd.
    pub const EDGE: Interest = Interest(4);
    /// Only one of several loops watching the same fd is woken (shared listeners).
    pub const EXCLUSIVE: Interest = Interest(8);
    /// A socket that waits for writability: read + write + edge.
    pub const SOCKET: Interest = Interest(1 | 2 | 4);
    /// What connections are registered with at creation: read + edge. Write interest is
    /// added ([`Interest::SOCKET`]) only once a write comes up short.
    pub const SOCKET_READ: Interest = Interest(1 | 4);
    /// The backend receives the socket's input itself and hands it over as
    /// [`Ready::RECEIVED`] events ([`Backend::receives`]); readability is not reported.
    /// Internal: [`Interest::from_bits`] rejects it.
    pub(crate) const RECV: Interest = Interest(16);
    /// The backend accepts connections on the listening socket itself and hands each one
    /// over as a [`Ready::ACCEPTED`] event ([`Backend::accepts`]); readability is not
    /// reported. Internal, like [`Interest::RECV`].
    pub(crate) const ACCEPT: Interest = Interest(32);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` without the bits of `other`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn without(self, other: Interest) -> Interest {
        Interest(self.0 & !other.0)
    }
    /// The raw bits (stable values, used by the C ABI).
    pub fn bits(self) -> u8 {
        self.0
    }
    /// Builds an interest from raw bits, rejecting unknown ones.
    pub fn from_bits(bits: u8) -> Option<Interest> {
        if bits & !0xf != 0 || bits & 3 == 0 {
            None
        } else {
            Some(Interest(bits))
        }
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

/// One interest change, queued on the loop and handed to the backend's next wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change {
    pub fd: RawFd,
    pub token: u64,
    pub op: Op,
}

/// The kind of a [`Change`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Add(Interest),
    Modify(Interest),
    /// Stop watching (built by epoll's immediate removal; the loop itself closes fds).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Delete,
    /// Start (true) or stop (false) receiving for a registration with [`Interest::RECV`],
    /// or accepting for one with [`Interest::ACCEPT`].
    Recv(bool),
}

/// One event out of a backend: which registration, and what is ready.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub token: u64,
    pub ready: Ready,
    /// For [`Ready::SENT`]: bytes sent, or a negated errno. For [`Ready::RECEIVED`]: bytes
    /// received, 0 at EOF, or a negated errno. For [`Ready::ACCEPTED`]: the accepted fd
    /// (which the event hands over), or a negated errno.
    pub res: i32,
    /// For [`Ready::RECEIVED`] with `res > 0`: the backend buffer holding the bytes, and
    /// where in it they start (see [`Backend::recv_buf`]); handed to
    /// [`Backend::recv_done`] once copied.
    pub buf: u32,
    pub off: u32,
}

/// An OS readiness backend. Implementations count their own syscalls in `stats`.
pub(crate) trait Backend {
    /// The fd a host loop can poll to learn that this backend has events.
    fn fd(&self) -> RawFd;
    /// Applies `changes` and waits up to `timeout` (None = forever) for events, appending
    /// them to `events`. Failed changes are reported through `failed`, not as an error.
    fn wait(
        &mut self,
        changes: &[Change],
        failed: &mut Vec<(u64, io::Error)>,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
        stats: &mut Stats,
    ) -> io::Result<()>;
    /// Removes `fd` (registered as `token`) now, not at the next wait: the caller may close
    /// it and the number may be reused before the next wait. Only needed for fds that stay
    /// open (user watchers, shared listeners).
    fn deregister(&mut self, fd: RawFd, token: u64, stats: &mut Stats) -> io::Result<()>;
    /// The source `token` is gone and its fd closed (which is enough for epoll and kqueue;
    /// an io_uring poll holds the file open until it is removed). `now`: tell the kernel
    /// now rather than with the next wait.
    fn forget(&mut self, _token: u64, _now: bool, _stats: &mut Stats) {}
    /// Submits queued work (sends, removals) without waiting: before the loop returns to
    /// its caller, who may not wait on it again soon.
    fn submit_pending(&mut self, _stats: &mut Stats) -> io::Result<()> {
        Ok(())
    }
    /// Whether the backend takes sends into its wait ([`Backend::queue_send`]).
    fn batches_sends(&self) -> bool {
        false
    }
    /// Queues a send of `iov` on `fd` for `token`, submitted by the next wait, whose events
    /// then include a [`Ready::SENT`] for it. The buffers must stay untouched until then.
    /// Only called when [`Backend::batches_sends`] says so.
    fn queue_send(&mut self, _token: u64, _fd: RawFd, _iov: &[libc::iovec]) {
        unreachable!("queue_send on a backend that does not batch sends")
    }
    /// Whether the backend can receive connections' input itself ([`Interest::RECV`]).
    fn receives(&self) -> bool {
        false
    }
    /// Where the bytes of a [`Ready::RECEIVED`] event are (its `buf` and `off`). They stay
    /// valid, and untouched by the kernel, until [`Backend::recv_done`].
    fn recv_buf(&self, _buf: u32, _off: u32) -> *const u8 {
        unreachable!("recv_buf on a backend that does not receive")
    }
    /// The bytes of a [`Ready::RECEIVED`] event with buffer `buf` were copied (or are not
    /// wanted): events are handed over in order, and the buffer goes back to the kernel
    /// with its last piece.
    fn recv_done(&mut self, _buf: u32) {}
    /// Whether the backend can accept connections itself ([`Interest::ACCEPT`]).
    fn accepts(&self) -> bool {
        false
    }
    /// Whether work is queued that only the next wait submits (a host loop polling the
    /// backend fd must not sleep on it).
    fn has_queued(&self) -> bool {
        false
    }
    /// The backend's name ("epoll", ...).
    fn name(&self) -> &'static str;
}

/// The environment variable that picks the default backend ("epoll", "io_uring", "kqueue").
pub const BACKEND_ENV: &str = "MYRIAD_BACKEND";

/// Creates the backend named `name`: "epoll" or "io_uring" ("uring") on Linux, "kqueue" on
/// FreeBSD and macOS; "" or "default" means `$MYRIAD_BACKEND` if set, else the platform
/// default ([`DEFAULT_BACKEND`]).
pub(crate) fn new_backend(name: &str) -> io::Result<Box<dyn Backend>> {
    if name.is_empty() || name == "default" {
        return match std::env::var(BACKEND_ENV) {
            Ok(v) if !v.is_empty() && v != "default" => new_backend(&v),
            _ => new_backend(DEFAULT_BACKEND),
        };
    }
    match name {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        "epoll" => Ok(Box::new(epoll::Epoll::new()?)),
        #[cfg(target_os = "linux")]
        "io_uring" | "uring" => Ok(Box::new(uring::Uring::new()?)),
        #[cfg(any(target_os = "freebsd", target_os = "macos"))]
        "kqueue" => Ok(Box::new(kqueue::Kqueue::new()?)),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("backend {name:?} is not available on this platform"),
        )),
    }
}

/// Rounds a duration up to whole milliseconds for wait calls that take milliseconds, so a
/// timer is never woken early; saturates at `i32::MAX`.
pub(crate) fn ceil_millis(d: Duration) -> i32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_millis_rounds_up() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1000)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1001)), 2);
        assert_eq!(ceil_millis(Duration::from_secs(1 << 40)), i32::MAX);
    }

    #[test]
    fn interest_bits_validated() {
        assert!(Interest::from_bits(0).is_none());
        assert!(Interest::from_bits(4).is_none());
        assert!(Interest::from_bits(0x10 | 1).is_none());
        assert_eq!(Interest::from_bits(7), Some(Interest::SOCKET));
    }
}
