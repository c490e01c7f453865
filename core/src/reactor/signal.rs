//! Signals as loop callbacks, through one signalfd per loop. Watching a signal blocks it in
//! the calling thread; block it in every thread of the process (or watch it before starting
//! other threads, which inherit the mask) so that the kernel queues it for the signalfd
//! instead of running the default action on another thread.
//!
//! On FreeBSD and macOS a kqueue of `EVFILT_SIGNAL` filters plays the signalfd's part (the
//! loop watches that kqueue's fd like any other). kqueue records a signal even when it is
//! ignored, so a watched signal is set to be ignored, process-wide, for as long as some loop
//! watches it (SIGCHLD keeps its default action, which ignores it without reaping children),
//! and gets its former action back after (a child started meanwhile inherits the ignoring,
//! as with libevent's kqueue backend); no thread needs to block it. Every loop watching a
//! signal hears of it, where on Linux one signalfd takes each delivery.

use std::io;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Loop, Token, SIGNAL_TOKEN};
use crate::sys::{syscall, Interest};

#[cfg(any(target_os = "freebsd", target_os = "macos"))]
use std::sync::Mutex;

/// A signal callback: gets the loop and the signal number.
pub type SignalFn = Box<dyn FnMut(&mut Loop, i32)>;

/// Identifies a signal watch, for [`Loop::unwatch_signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalId(u64);

impl SignalId {
    /// The id as an integer (for the C ABI).
    pub fn to_u64(self) -> u64 {
        self.0
    }
    /// Rebuilds an id from [`SignalId::to_u64`].
    pub fn from_u64(v: u64) -> SignalId {
        SignalId(v)
    }
}

pub(crate) struct Signals {
    fd: Option<OwnedFd>,
    handlers: Vec<(SignalId, i32, Option<SignalFn>)>,
    next_id: u64,
    /// Signals this loop took over ([`claim`]), and gives back when no longer watched.
    claimed: Vec<i32>,
    /// The signals the kqueue has filters for.
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    in_kq: Vec<i32>,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn sigset_of(signals: impl Iterator<Item = i32>) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut set = unsafe { set.assume_init() };
    for s in signals {
        // SAFETY: `set` is a valid sigset; invalid numbers are rejected by sigaddset.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            fd: None,
            handlers: Vec::new(),
            next_id: 1,
            claimed: Vec::new(),
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            in_kq: Vec::new(),
        }
    }

    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    fn watched(&self) -> impl Iterator<Item = i32> + '_ {
        self.handlers.iter().map(|h| h.1)
    }

    /// Points the signalfd at the current set; returns whether it was newly created.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn update_fd(&mut self, stats: &mut super::Stats) -> io::Result<bool> {
        let set = sigset_of(self.watched());
        let cur = self.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        stats.other += 1;
        let fd = syscall!(signalfd(cur, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        if cur == -1 {
            // SAFETY: signalfd(-1, ...) returned a fresh fd that nothing else owns.
            self.fd = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            return Ok(true);
        }
        Ok(false)
    }

    /// Gives the kqueue a filter for each watched signal and none for others; returns
    /// whether the kqueue was newly created.
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    fn update_fd(&mut self, stats: &mut super::Stats) -> io::Result<bool> {
        let created = self.fd.is_none();
        if created {
            stats.other += 1;
            let raw = syscall!(kqueue())?;
            // SAFETY: kqueue returned a fresh fd that nothing else owns.
            self.fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
            crate::sys::set_nonblock_cloexec(raw)?;
        }
        let mut want: Vec<i32> = self.watched().collect();
        want.sort_unstable();
        want.dedup();
        use crate::sys::kqueue::{apply, kev};
        let mut changes: Vec<libc::kevent> = want
            .iter()
            .filter(|s| !self.in_kq.contains(s))
            .map(|&s| kev(s, libc::EVFILT_SIGNAL, libc::EV_ADD, 0))
            .collect();
        changes.extend(
            self.in_kq
                .iter()
                .filter(|s| !want.contains(s))
                .map(|&s| kev(s, libc::EVFILT_SIGNAL, libc::EV_DELETE, 0)),
        );
        if !changes.is_empty() {
            stats.other += 1;
            apply(self.fd().expect("created above"), &changes)?;
        }
        self.in_kq = want;
        Ok(created)
    }
}

/// Takes `signo` over for the loops: blocks it in this thread unless it is blocked already;
/// true if it was (so [`release`] unblocks it).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn claim(signo: i32) -> io::Result<bool> {
    if is_blocked(signo)? {
        return Ok(false);
    }
    set_blocked(signo, true)?;
    Ok(true)
}

/// Gives back what [`claim`] took.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn release(signo: i32) {
    let _ = set_blocked(signo, false);
}

/// Each signal ignored for the loops' kqueues: how many watch it, and its former action.
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
static IGNORED: Mutex<Vec<(i32, usize, libc::sigaction)>> = Mutex::new(Vec::new());

/// Takes `signo` over for the loops: ignored (SIGCHLD: default action) while watched, the
/// former action kept for [`release`]. Always true.
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
fn claim(signo: i32) -> io::Result<bool> {
    let mut ign = IGNORED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = ign.iter_mut().find(|e| e.0 == signo) {
        e.1 += 1;
        return Ok(true);
    }
    // SAFETY: all-zero is a valid sigaction (default handler, empty mask, no flags).
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = if signo == libc::SIGCHLD {
        libc::SIG_DFL
    } else {
        libc::SIG_IGN
    };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    syscall!(sigaction(signo, &act, &mut old))?;
    ign.push((signo, 1, old));
    Ok(true)
}

/// Gives back what [`claim`] took: the former action once no loop watches the signal.
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
fn release(signo: i32) {
    let mut ign = IGNORED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pos) = ign.iter().position(|e| e.0 == signo) else {
        return;
    };
    ign[pos].1 -= 1;
    if ign[pos].1 == 0 {
        let (_, _, old) = ign.remove(pos);
        // SAFETY: restores an action sigaction itself returned.
        unsafe { libc::sigaction(signo, &old, std::ptr::null_mut()) };
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_blocked(signo: i32) -> io::Result<bool> {
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: a null new set only reads the mask into `old`.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), old.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: pthread_sigmask filled `old`.
    let old = unsafe { old.assume_init() };
    // SAFETY: `old` is a valid sigset.
    Ok(unsafe { libc::sigismember(&old, signo) } == 1)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_blocked(signo: i32, block: bool) -> io::Result<()> {
    let set = sigset_of(std::iter::once(signo));
    let how = if block {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: `set` is a valid sigset; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

impl Loop {
    /// Calls `f` on this loop whenever signal `signo` is delivered. Blocks the signal in the
    /// calling thread (threads started afterwards inherit that). Several callbacks may watch
    /// the same signal; all are called. Errors: `InvalidInput` for SIGKILL, SIGSTOP or a
    /// number out of range.
    pub fn watch_signal(
        &mut self,
        signo: i32,
        f: impl FnMut(&mut Loop, i32) + 'static,
    ) -> io::Result<SignalId> {
        if signo <= 0 || signo >= 65 || signo == libc::SIGKILL || signo == libc::SIGSTOP {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot watch signal {signo}"),
            ));
        }
        let sig = &mut self.signals;
        let first = !sig.watched().any(|s| s == signo);
        let id = SignalId(sig.next_id);
        sig.next_id += 1;
        sig.handlers.push((id, signo, Some(Box::new(f))));
        // The signal gets its place in the signalfd (its kqueue filter) before it is taken
        // over (ignored, with kqueue), so that none is lost in between.
        match sig.update_fd(&mut self.stats) {
            Ok(true) => {
                let fd = sig.fd().expect("just created");
                self.register(fd, Token(SIGNAL_TOKEN), Interest::READ | Interest::EDGE);
            }
            Ok(false) => {}
            Err(e) => {
                sig.handlers.pop();
                return Err(e);
            }
        }
        let sig = &mut self.signals;
        if first {
            match claim(signo) {
                Ok(true) => sig.claimed.push(signo),
                Ok(false) => {}
                Err(e) => {
                    sig.handlers.pop();
                    let _ = sig.update_fd(&mut self.stats);
                    return Err(e);
                }
            }
        }
        Ok(id)
    }

    /// Stops a signal watch. When no callback watches the signal any more it is removed from
    /// the signalfd, and unblocked if this loop was the one that blocked it. Returns false for
    /// an unknown id.
    pub fn unwatch_signal(&mut self, id: SignalId) -> bool {
        let sig = &mut self.signals;
        let Some(pos) = sig.handlers.iter().position(|h| h.0 == id) else {
            return false;
        };
        let (_, signo, f) = sig.handlers.remove(pos);
        if !sig.watched().any(|s| s == signo) {
            if sig.update_fd(&mut self.stats).is_err() {
                log::warn!("signalfd update failed removing signal {signo}");
            }
            if let Some(p) = sig.claimed.iter().position(|&s| s == signo) {
                sig.claimed.remove(p);
                release(signo);
            }
        }
        drop(f);
        true
    }

    /// Reads every queued signal and runs the callbacks watching it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn dispatch_signals(&mut self) {
        let Some(fd) = self.signals.fd() else { return };
        const N: usize = 16;
        let mut buf = [MaybeUninit::<libc::signalfd_siginfo>::uninit(); N];
        loop {
            let want = std::mem::size_of_val(&buf);
            self.stats.read += 1;
            // SAFETY: reads at most `want` bytes into the live buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) };
            if n <= 0 {
                break;
            }
            let count = n as usize / std::mem::size_of::<libc::signalfd_siginfo>();
            for info in &buf[..count] {
                // SAFETY: the kernel wrote `count` whole siginfo structs.
                let signo = unsafe { info.assume_init_ref() }.ssi_signo as i32;
                log::debug!("signal {signo} received");
                self.call_signal_handlers(signo);
            }
            if (n as usize) < want {
                break;
            }
        }
    }

    /// Takes every signal the kqueue recorded and runs the callbacks watching it (once per
    /// signal, however many times it came, as a signalfd coalesces a standard signal).
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    pub(crate) fn dispatch_signals(&mut self) {
        let Some(fd) = self.signals.fd() else { return };
        const N: usize = 16;
        // SAFETY: kevent is a plain C struct for which all-zero is valid.
        let mut buf: [libc::kevent; N] = unsafe { std::mem::zeroed() };
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            self.stats.read += 1;
            // SAFETY: no change list; the event list has room for N entries.
            let n =
                unsafe { libc::kevent(fd, std::ptr::null(), 0, buf.as_mut_ptr(), N as _, &zero) };
            if n <= 0 {
                break;
            }
            for k in &buf[..n as usize] {
                let signo = k.ident as i32;
                log::debug!("signal {signo} received");
                self.call_signal_handlers(signo);
            }
            if (n as usize) < N {
                break;
            }
        }
    }

    fn call_signal_handlers(&mut self, signo: i32) {
        let ids: Vec<SignalId> = self
            .signals
            .handlers
            .iter()
            .filter(|h| h.1 == signo)
            .map(|h| h.0)
            .collect();
        for id in ids {
            let Some(pos) = self.signals.handlers.iter().position(|h| h.0 == id) else {
                continue;
            };
            let Some(mut f) = self.signals.handlers[pos].2.take() else {
                continue;
            };
            f(self, signo);
            if let Some(pos) = self.signals.handlers.iter().position(|h| h.0 == id) {
                self.signals.handlers[pos].2 = Some(f);
            }
        }
    }

    pub(crate) fn drop_signals(&mut self) {
        let ids: Vec<SignalId> = self.signals.handlers.iter().map(|h| h.0).collect();
        for id in ids {
            self.unwatch_signal(id);
        }
    }
}
