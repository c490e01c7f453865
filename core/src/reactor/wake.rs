//! Cross-thread messages: a mutex-protected queue of closures plus one eventfd. The first
//! post after the loop drained the queue writes the eventfd; later posts only push, so many
//! posts between two iterations cost at most one eventfd write. The eventfd is registered
//! edge-triggered and never read: every write is a new edge, and the counter cannot overflow
//! in practice (2^64 - 2 writes).
//!
//! Where there is no eventfd (macOS, and the BSDs generally) a non-blocking pipe stands in:
//! its write end is written as the eventfd would be, and the loop empties its read end when
//! it drains the queue, so a full pipe never swallows a wakeup.

use std::io;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Loop;
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::sys::syscall;

/// A closure run on the loop's thread.
pub type Posted = Box<dyn FnOnce(&mut Loop) + Send>;

struct Queue {
    items: Vec<Posted>,
    /// The eventfd has been written since the loop last drained the queue.
    notified: bool,
    /// The loop is gone: posts are refused.
    closed: bool,
}

/// State shared between a loop and its [`Handle`]s.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// What the loop watches: the eventfd, or the pipe's read end.
    efd: OwnedFd,
    /// The pipe's write end, where there is no eventfd.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    wfd: OwnedFd,
    /// Cheap check for the loop: has anything been posted since it last looked?
    pending: AtomicBool,
    pub(crate) stop: AtomicBool,
    pub(crate) wakeups: AtomicU64,
    pub(crate) posted: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> io::Result<Shared> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let efd = {
            let raw = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
            // SAFETY: eventfd returned a fresh fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(raw) }
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let (efd, wfd) = crate::sys::nonblocking_pipe()?;
        Ok(Shared {
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            wfd,
            queue: Mutex::new(Queue {
                items: Vec::new(),
                notified: false,
                closed: false,
            }),
            efd,
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
            posted: AtomicU64::new(0),
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    fn wake(&self) {
        let one: u64 = 1;
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let fd = self.efd.as_raw_fd();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let fd = self.wfd.as_raw_fd();
        // SAFETY: writes 8 bytes from a live u64 to an eventfd (or pipe) we own.
        let r = unsafe { libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>()) };
        if r < 0 {
            // EAGAIN means the counter is saturated, so the loop is woken anyway.
            log::trace!("eventfd write: {}", io::Error::last_os_error());
        }
    }

    /// Queues `f`; writes the eventfd only if nobody has since the loop last drained.
    fn post(&self, f: Posted) -> Result<(), Posted> {
        let need_wake = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.closed {
                return Err(f);
            }
            q.items.push(f);
            self.posted.fetch_add(1, Ordering::Relaxed);
            self.pending.store(true, Ordering::Release);
            !std::mem::replace(&mut q.notified, true)
        };
        if need_wake {
            self.wake();
        }
        Ok(())
    }

    /// Whether closures are queued (checked without the lock).
    pub(crate) fn has_posts(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes every queued closure into `into` (whose capacity is reused) and re-arms the
    /// wakeup: the next post writes the eventfd again.
    pub(crate) fn drain(&self, into: &mut Vec<Posted>) {
        self.pending.store(false, Ordering::Release);
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut q.items, into);
        let _was = std::mem::replace(&mut q.notified, false);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        if _was {
            drop(q);
            // Empty the pipe, leftovers of raced writes included (at most a few bytes).
            let mut junk = [0u8; 256];
            // SAFETY: reads into a live local buffer of the given size.
            while unsafe { libc::read(self.efd.as_raw_fd(), junk.as_mut_ptr().cast(), 256) } == 256
            {
            }
        }
    }

    /// Refuses further posts and returns what was queued (dropped by the caller, outside
    /// the lock: a dropped closure may post again).
    pub(crate) fn close(&self) -> Vec<Posted> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.closed = true;
        std::mem::take(&mut q.items)
    }
}

/// A thread-safe handle to a loop: post closures to it, wake it, stop it. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

/// Returned by [`Handle::post`] when the loop no longer exists; gives the closure back.
pub struct Closed(pub Posted);

impl std::fmt::Debug for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the loop has been dropped")
    }
}

impl std::error::Error for Closed {}

impl Handle {
    /// Runs `f` on the loop's thread, in a later iteration, in posting order. Costs at most
    /// one eventfd write per loop iteration however many threads post.
    pub fn post(&self, f: impl FnOnce(&mut Loop) + Send + 'static) -> Result<(), Closed> {
        self.shared.post(Box::new(f)).map_err(Closed)
    }

    /// Like [`Handle::post`] with an already boxed closure.
    pub fn post_boxed(&self, f: Posted) -> Result<(), Closed> {
        self.shared.post(f).map_err(Closed)
    }

    /// Asks the loop to return from `run()` after its current iteration.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let need_wake = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            !std::mem::replace(&mut q.notified, true)
        };
        if need_wake {
            self.shared.wake();
        }
    }

    /// Number of eventfd writes made so far by all posters.
    pub fn wakeups(&self) -> u64 {
        self.shared.wakeups.load(Ordering::Relaxed)
    }
}
