//! The page a worker shares with its supervisor: a heartbeat its loop bumps once per
//! iteration, requests begun, requests in flight, and the request running now, all written
//! with plain atomic stores (no syscall). A forked worker inherits the mapping; an executed
//! one (exec mode) gets the page's memfd and maps it when its first loop is created.
//!
//! Worker side: [`probe`] is the page of this process, if it is supervised, read by every
//! [`crate::Loop`] when it is created and by every server created on such a loop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64};

use crate::sys::syscall;

/// Size of a mapped page (the record is smaller).
const PAGE: usize = 4096;
/// `Page::magic` of a page this library laid out (version 1).
const MAGIC: u64 = 0x6d79_7269_6164_0001;
/// Words of the current-request text ("METHOD TARGET", cut at 256 bytes).
const TEXT_WORDS: usize = 32;
/// The environment variable that gives an executed worker its page and notify pipe:
/// `SHMFD,NOTIFYFD`.
pub(crate) const ENV: &str = "MYRIAD_SUPERVISOR";

/// The shared record. Every field is an atomic: two processes read and write it.
#[repr(C)]
pub(crate) struct Page {
    magic: AtomicU64,
    /// Loop iterations (any loop of the worker).
    pub(crate) heartbeat: AtomicU64,
    /// Requests handed to a handler.
    pub(crate) requests: AtomicU64,
    /// Requests handed to a handler whose exchange has not ended.
    pub(crate) in_flight: AtomicI64,
    /// 1 once a server of the worker listens.
    pub(crate) ready: AtomicU32,
    /// Seqlock of the current-request text: odd while it is written; bumped per request.
    seq: AtomicU32,
    text_len: AtomicU32,
    text: [AtomicU64; TEXT_WORDS],
}

impl Page {
    /// One loop iteration: a load and a store, no lock prefix (a lost bump between two
    /// threads of one worker does not matter: the counter still moves).
    #[inline]
    pub(crate) fn beat(&self) {
        self.heartbeat
            .store(self.heartbeat.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// A request reaches its handler: counted, in flight, and its method and target kept.
    pub(crate) fn begin(&self, method: &str, target: &str) {
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        let s = self.seq.load(Relaxed);
        self.seq.store(s | 1, Relaxed);
        std::sync::atomic::fence(Release);
        let mut n = 0;
        let mut word = [0u8; 8];
        let mut w = 0;
        let bytes = method
            .bytes()
            .chain(std::iter::once(b' '))
            .chain(target.bytes());
        for b in bytes.take(TEXT_WORDS * 8) {
            word[n % 8] = b;
            n += 1;
            if n % 8 == 0 {
                self.text[w].store(u64::from_ne_bytes(word), Relaxed);
                w += 1;
                word = [0; 8];
            }
        }
        if n % 8 != 0 {
            self.text[w].store(u64::from_ne_bytes(word), Relaxed);
        }
        self.text_len.store(n as u32, Relaxed);
        self.seq.store((s | 1).wrapping_add(1), Release);
    }

    /// A request begun by [`Page::begin`] ended.
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// The last request begun ("GET /x") and its sequence number (changes per request).
    pub(crate) fn current(&self) -> (u32, String) {
        for _ in 0..4 {
            let s1 = self.seq.load(Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = (self.text_len.load(Relaxed) as usize).min(TEXT_WORDS * 8);
            let mut out = Vec::with_capacity(len);
            for w in &self.text[..len.div_ceil(8)] {
                out.extend_from_slice(&w.load(Relaxed).to_ne_bytes());
            }
            out.truncate(len);
            std::sync::atomic::fence(Acquire);
            if self.seq.load(Relaxed) == s1 {
                return (s1, String::from_utf8_lossy(&out).into_owned());
            }
        }
        (u32::MAX, String::new())
    }
}

/// A page owned by the supervisor: its memfd (passed to executed workers and across a
/// re-exec) and its mapping.
pub(crate) struct Shm {
    fd: OwnedFd,
    ptr: NonNull<Page>,
}

impl Shm {
    /// A fresh zeroed page.
    pub(crate) fn new() -> io::Result<Shm> {
        let fd = new_fd()?;
        syscall!(ftruncate(fd.as_raw_fd(), PAGE as libc::off_t))?;
        let shm = Shm::map(fd)?;
        shm.page().magic.store(MAGIC, Release);
        Ok(shm)
    }

    /// Maps an existing page (a worker adopted across a re-exec).
    pub(crate) fn map(fd: OwnedFd) -> io::Result<Shm> {
        let ptr = map_fd(fd.as_raw_fd())?;
        Ok(Shm { fd, ptr })
    }

    /// The shared record.
    pub(crate) fn page(&self) -> &Page {
        // SAFETY: `ptr` is a live shared mapping of PAGE bytes (unmapped only on drop), every
        // field is an atomic, and all-zero is a valid Page.
        unsafe { self.ptr.as_ref() }
    }

    /// The page's fd (a memfd where there is one).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The mapping, for the worker side of a forked child.
    pub(crate) fn ptr(&self) -> *mut Page {
        self.ptr.as_ptr()
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by map_fd with this length and is not used again.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE) };
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn new_fd() -> io::Result<OwnedFd> {
    let fd = syscall!(memfd_create(c"myriad-worker".as_ptr(), libc::MFD_CLOEXEC))?;
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(target_os = "freebsd")]
fn new_fd() -> io::Result<OwnedFd> {
    let fd = syscall!(shm_open(
        libc::SHM_ANON,
        libc::O_RDWR | libc::O_CLOEXEC,
        0o600
    ))?;
    // SAFETY: shm_open returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn new_fd() -> io::Result<OwnedFd> {
    // A named POSIX shm object, unlinked at once: only the fd keeps it.
    let name = format!("/myriad-{}-{}\0", std::process::id(), next_name());
    let fd = syscall!(shm_open(
        name.as_ptr().cast(),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600
    ))?;
    // SAFETY: as above, a NUL-terminated name.
    unsafe { libc::shm_unlink(name.as_ptr().cast()) };
    // SAFETY: shm_open returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::sys::set_nonblock_cloexec(fd.as_raw_fd())?;
    Ok(fd)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn next_name() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Relaxed)
}

fn map_fd(fd: RawFd) -> io::Result<NonNull<Page>> {
    // SAFETY: a fresh shared mapping of a page of `fd`; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// This process's page, if a supervisor runs it (set in a forked child, or read from
/// [`ENV`] once).
static PROBE: AtomicPtr<Page> = AtomicPtr::new(std::ptr::null_mut());
/// [`ENV`] was looked at.
static ENV_READ: AtomicBool = AtomicBool::new(false);
/// The worker's end of its socketpair with the supervisor (ready byte out, pings in); -1:
/// none.
static NOTIFY: AtomicI32 = AtomicI32::new(-1);

/// Makes `page` this process's page (a forked child, before the worker code runs).
pub(crate) fn set_probe(page: *mut Page, notify: RawFd) {
    PROBE.store(page, Release);
    NOTIFY.store(notify, Release);
    ENV_READ.store(true, Release);
}

/// This process's page if a supervisor runs it: the forked child's, or for an executed
/// worker the one named by `MYRIAD_SUPERVISOR` (mapped on the first call).
pub(crate) fn probe() -> Option<&'static Page> {
    if !ENV_READ.swap(true, Relaxed) {
        if let Some((page, notify)) = from_env() {
            set_probe(page, notify);
        }
    }
    let p = PROBE.load(Acquire);
    // SAFETY: a non-null PROBE is a mapping that stays for the life of the process (the
    // forked child never unmaps its inherited page; an env one is never unmapped).
    unsafe { p.as_ref() }
}

fn from_env() -> Option<(*mut Page, RawFd)> {
    let v = std::env::var(ENV).ok()?;
    let (shm, notify) = v.split_once(',')?;
    let (shm, notify): (RawFd, RawFd) = (shm.parse().ok()?, notify.parse().ok()?);
    let page = match map_fd(shm) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{ENV}={v}: cannot map the supervisor's page: {e}");
            return None;
        }
    };
    // SAFETY: just mapped, a page of PAGE bytes; all-zero or a laid-out Page is valid.
    if unsafe { page.as_ref() }.magic.load(Acquire) != MAGIC {
        log::warn!("{ENV}={v}: fd {shm} is not a supervisor page");
        return None;
    }
    // Neither fd goes to the worker's own children.
    for fd in [shm, notify] {
        // SAFETY: fcntl on an fd number; a bad one fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Some((page.as_ptr(), notify))
}

/// Tells the supervisor this worker serves (once: the first server that listens).
pub(crate) fn ready() {
    let Some(p) = probe() else { return };
    if p.ready.swap(1, Release) == 1 {
        return;
    }
    let fd = NOTIFY.load(Acquire);
    if fd >= 0 {
        // SAFETY: one byte from a live buffer to our end of the socketpair.
        unsafe { libc::send(fd, b"R".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    }
}

/// The supervisor's socket for the first loop of a supervised worker to watch: the
/// supervisor writes a byte to an idle worker so that its loop iterates (and its heartbeat
/// moves) at least that often. None for later loops and unsupervised processes.
pub(crate) fn claim_ping() -> Option<RawFd> {
    probe()?;
    if PING_CLAIMED.swap(true, AcqRel) {
        return None;
    }
    let fd = NOTIFY.load(Acquire);
    (fd >= 0).then_some(fd)
}

/// A loop watches the ping socket.
static PING_CLAIMED: AtomicBool = AtomicBool::new(false);

/// Reads the supervisor's pings (a worker loop's watcher of [`claim_ping`]'s fd).
pub(crate) fn drain_pings(fd: RawFd) -> bool {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads into a live buffer of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            continue;
        }
        // 0: the supervisor is gone; -1: nothing more (or an error: stop watching).
        return n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
    }
}

use std::sync::atomic::Ordering::AcqRel;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_request_round_trips() {
        let shm = Shm::new().unwrap();
        let p = shm.page();
        assert_eq!(p.current().1, "");
        p.begin("GET", "/a/b?c=d");
        let (s1, t) = p.current();
        assert_eq!(t, "GET /a/b?c=d");
        let long = "x".repeat(400);
        p.begin("POST", &long);
        let (s2, t) = p.current();
        assert_ne!(s1, s2);
        assert_eq!(t.len(), 256);
        assert!(t.starts_with("POST xxx"));
        assert_eq!(p.requests.load(Relaxed), 2);
        assert_eq!(p.in_flight.load(Relaxed), 2);
        p.end();
        assert_eq!(p.in_flight.load(Relaxed), 1);
        p.beat();
        p.beat();
        assert_eq!(p.heartbeat.load(Relaxed), 2);
    }

    #[test]
    fn an_inherited_fd_maps_the_same_page() {
        let shm = Shm::new().unwrap();
        let fd = syscall!(dup(shm.fd())).unwrap();
        // SAFETY: dup returned a fresh fd.
        let other = Shm::map(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap();
        shm.page().begin("GET", "/");
        assert_eq!(other.page().requests.load(Relaxed), 1);
        assert_eq!(other.page().magic.load(Relaxed), MAGIC);
    }
}
