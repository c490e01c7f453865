//! Signals as loop callbacks, through one signalfd per loop. Watching a signal blocks it in
//! the calling thread; block it in every thread of the process (or watch it before starting
//! other threads, which inherit the mask) so that the kernel queues it for the signalfd
//! instead of running the default action on another thread.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Loop, Token, SIGNAL_TOKEN};
use crate::sys::{syscall, Interest};

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
    /// Signals this loop blocked (and so unblocks when no longer watched).
    blocked_by_us: Vec<i32>,
}

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
            blocked_by_us: Vec::new(),
        }
    }

    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    fn watched(&self) -> impl Iterator<Item = i32> + '_ {
        self.handlers.iter().map(|h| h.1)
    }

    /// Points the signalfd at the current set; returns whether it was newly created.
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
}

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
        if !sig.watched().any(|s| s == signo) && !is_blocked(signo)? {
            set_blocked(signo, true)?;
            sig.blocked_by_us.push(signo);
        }
        let id = SignalId(sig.next_id);
        sig.next_id += 1;
        sig.handlers.push((id, signo, Some(Box::new(f))));
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
            if let Some(p) = sig.blocked_by_us.iter().position(|&s| s == signo) {
                sig.blocked_by_us.remove(p);
                let _ = set_blocked(signo, false);
            }
        }
        drop(f);
        true
    }

    /// Reads every queued signal and runs the callbacks watching it.
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
