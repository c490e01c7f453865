//! The access log: one line per finished request, in the combined log format or an nginx
//! `log_format`-like format ([`COMBINED`], variables listed in the README), written to a
//! file, to stderr, or handed to a callback.
//!
//! An [`AccessLog`] is shared by every loop of a server (it is `Send + Sync`); each server
//! on each loop keeps its own buffer of lines, so a request costs no syscall: the buffer is
//! written when it fills, by a one-second loop timer, at the end of a graceful shutdown
//! and when the server is dropped. [`AccessLog::reopen`] (on SIGUSR1, for logrotate)
//! opens the path again. A sink that fails (a full disk, an unwritable file, a stderr pipe
//! nobody reads) is reported once through the `log` crate; its lines are dropped and
//! counted ([`AccessLogStats::dropped`]) until it works again: the loop never blocks on it
//! and no request is affected.

mod format;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub(crate) use format::Entry;
pub use format::COMBINED;
use format::{Clock, Format};

/// Buffered bytes per server and loop: lines are written when less than
/// [`LINE_ROOM`] is left.
const BUF_CAP: usize = 64 * 1024;
/// Room kept for the next line.
const LINE_ROOM: usize = 4 * 1024;

/// Counters of an access log, over every loop that uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessLogStats {
    /// Lines written to the sink (or passed to the callback).
    pub lines: u64,
    /// Write (or send) calls made to the sink.
    pub writes: u64,
    /// Lines dropped because the sink failed or could not keep up.
    pub dropped: u64,
}

/// A line callback: the line without its newline, on the loop thread that served it.
pub type LineFn = Box<dyn Fn(&[u8]) + Send + Sync>;

enum Sink {
    File(PathBuf),
    Stderr,
    Callback(LineFn),
}

/// How bytes go to the fd.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Write,
    /// A socket (journald's stream): `send` with MSG_DONTWAIT, which cannot block.
    Send,
}

struct Inner {
    sink: Sink,
    format: Format,
    fd: Mutex<Option<(OwnedFd, How)>>,
    lines: AtomicU64,
    writes: AtomicU64,
    dropped: AtomicU64,
    /// A failure was reported and the sink has not worked since.
    failing: AtomicBool,
}

/// An access log (see the module docs). Cheap to clone (a reference); any thread.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog(")?;
        match &self.inner.sink {
            Sink::File(p) => write!(f, "{}", p.display())?,
            Sink::Stderr => f.write_str("stderr")?,
            Sink::Callback(_) => f.write_str("callback")?,
        }
        f.write_str(")")
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens `path` for appending (created 0644), close-on-exec.
fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string; the flags and mode are plain ints.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An fd for writing to stderr that never blocks the loop: a socket is used through
/// `send(MSG_DONTWAIT)`; a pipe or terminal is opened again as a description of its own
/// with O_NONBLOCK (the process's fd 2 keeps its flags); a file is duplicated.
fn open_stderr() -> io::Result<(OwnedFd, How)> {
    // SAFETY: `st` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 2 and a valid pointer.
    cvt(unsafe { libc::fstat(2, &mut st) })?;
    let kind = st.st_mode & libc::S_IFMT;
    let dup = || -> io::Result<OwnedFd> {
        // SAFETY: duplicating fd 2; the new fd is ours.
        let fd = cvt(unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) })?;
        // SAFETY: just created.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    if kind == libc::S_IFSOCK {
        return Ok((dup()?, How::Send));
    }
    if kind == libc::S_IFIFO || kind == libc::S_IFCHR {
        for p in [c"/proc/self/fd/2", c"/dev/fd/2"] {
            // SAFETY: a valid path and plain flags.
            let fd = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_APPEND | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: just opened.
                return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, How::Write));
            }
        }
    }
    Ok((dup()?, How::Write))
}

impl AccessLog {
    fn new(sink: Sink, format: Option<&str>, fd: Option<(OwnedFd, How)>) -> io::Result<AccessLog> {
        let format = Format::parse(format.unwrap_or(COMBINED))?;
        Ok(AccessLog {
            inner: Arc::new(Inner {
                sink,
                format,
                fd: Mutex::new(fd),
                lines: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// A log appended to `path` (created with mode 0644 if missing) in `format`
    /// ([`COMBINED`] if None). Errors: the format's (InvalidInput, naming the bad
    /// variable), or the open's (the OS error).
    pub fn file(path: impl AsRef<Path>, format: Option<&str>) -> io::Result<AccessLog> {
        let path = path.as_ref();
        Format::parse(format.unwrap_or(COMBINED))?;
        let fd = open_append(path)?;
        AccessLog::new(Sink::File(path.into()), format, Some((fd, How::Write)))
    }

    /// A log written to the process's stderr, without ever blocking (see the module docs).
    pub fn stderr(format: Option<&str>) -> io::Result<AccessLog> {
        Format::parse(format.unwrap_or(COMBINED))?;
        AccessLog::new(Sink::Stderr, format, Some(open_stderr()?))
    }

    /// A log whose lines (without their newline) go to `f`, called on the loop thread that
    /// served each request as it finishes; `f` must not block nor call into the server.
    pub fn callback(
        format: Option<&str>,
        f: impl Fn(&[u8]) + Send + Sync + 'static,
    ) -> io::Result<AccessLog> {
        AccessLog::new(Sink::Callback(Box::new(f)), format, None)
    }

    /// `-` for stderr, else a file path (the `--access-log PATH` convention).
    pub fn open(path: &str, format: Option<&str>) -> io::Result<AccessLog> {
        if path == "-" {
            AccessLog::stderr(format)
        } else {
            AccessLog::file(path, format)
        }
    }

    /// Opens a file log's path again (after logrotate moved it away); lines buffered
    /// since go to the new file. Stderr and callback logs have nothing to reopen. On an
    /// error the old file is kept. Any thread.
    pub fn reopen(&self) -> io::Result<()> {
        let Sink::File(path) = &self.inner.sink else {
            return Ok(());
        };
        let fd = open_append(path)?;
        let old = self
            .inner
            .fd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((fd, How::Write));
        drop(old);
        Ok(())
    }

    /// The counters, over every loop using this log.
    pub fn stats(&self) -> AccessLogStats {
        let i = &self.inner;
        AccessLogStats {
            lines: i.lines.load(Ordering::Relaxed),
            writes: i.writes.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
        }
    }

    fn name(&self) -> String {
        match &self.inner.sink {
            Sink::File(p) => p.display().to_string(),
            Sink::Stderr => "stderr".into(),
            Sink::Callback(_) => "callback".into(),
        }
    }

    /// Reports the first failure of an episode.
    fn fail(&self, why: &dyn std::fmt::Display) {
        if !self.inner.failing.swap(true, Ordering::Relaxed) {
            log::error!(
                "access log {}: {why}: dropping lines until it can be written again",
                self.name()
            );
        }
    }

    fn recovered(&self) {
        if self.inner.failing.swap(false, Ordering::Relaxed) {
            log::warn!(
                "access log {}: written again ({} lines dropped so far)",
                self.name(),
                self.inner.dropped.load(Ordering::Relaxed)
            );
        }
    }

    /// Writes what it can of `buf` (whose `lines` lines are complete); returns the bytes
    /// taken: all of them unless the sink would block (the rest stays for next time). On
    /// an error the whole buffer is dropped and counted.
    fn write_out(&self, buf: &[u8], lines: u64) -> usize {
        let guard = self.inner.fd.lock().unwrap_or_else(|p| p.into_inner());
        let Some((fd, how)) = guard.as_ref() else {
            return buf.len();
        };
        let (fd, how): (RawFd, How) = (fd.as_raw_fd(), *how);
        let mut off = 0;
        while off < buf.len() {
            let rest = &buf[off..];
            self.inner.writes.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `rest` is a valid readable slice and `fd` is open while `guard` is held.
            let n = unsafe {
                match how {
                    How::Write => libc::write(fd, rest.as_ptr().cast(), rest.len()),
                    How::Send => libc::send(
                        fd,
                        rest.as_ptr().cast(),
                        rest.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    ),
                }
            };
            if n > 0 {
                off += n as usize;
                continue;
            }
            let e = if n == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    // Whole lines taken so far are counted once all of the buffer is.
                    return off;
                }
                _ => {
                    drop(guard);
                    self.fail(&e);
                    self.inner.dropped.fetch_add(lines, Ordering::Relaxed);
                    return buf.len();
                }
            }
        }
        drop(guard);
        self.inner.lines.fetch_add(lines, Ordering::Relaxed);
        self.recovered();
        buf.len()
    }
}

/// The buffer of one server on one loop.
pub(crate) struct LogBuf {
    log: AccessLog,
    buf: Vec<u8>,
    /// Complete lines in `buf`.
    lines: u64,
    clock: Clock,
    pid: u32,
}

impl LogBuf {
    pub(crate) fn new(log: AccessLog) -> LogBuf {
        let buf = if matches!(log.inner.sink, Sink::Callback(_)) {
            Vec::with_capacity(LINE_ROOM)
        } else {
            Vec::with_capacity(BUF_CAP)
        };
        LogBuf {
            log,
            buf,
            lines: 0,
            clock: Clock::new(),
            pid: std::process::id(),
        }
    }

    /// Adds the line of a finished request; writes the buffer first if it is full. A
    /// callback log's line waits for [`LogBuf::deliver`] (the exchange pool is borrowed
    /// here: no user code runs).
    pub(crate) fn record(&mut self, e: &Entry<'_>) {
        if let Sink::Callback(_) = &self.log.inner.sink {
            self.log
                .inner
                .format
                .render(e, &mut self.clock, &mut self.buf);
            self.lines += 1;
            return;
        }
        if self.buf.len() + LINE_ROOM > self.buf.capacity().max(BUF_CAP) {
            self.flush();
            if self.buf.len() + LINE_ROOM > self.buf.capacity().max(BUF_CAP) {
                // The sink cannot keep up (a stderr pipe nobody reads): drop the line.
                self.log.inner.dropped.fetch_add(1, Ordering::Relaxed);
                self.log.fail(&"the sink does not keep up");
                return;
            }
        }
        self.log
            .inner
            .format
            .render(e, &mut self.clock, &mut self.buf);
        self.lines += 1;
    }

    /// Passes a callback log's recorded lines to its callback (without their newline).
    pub(crate) fn deliver(&mut self) {
        let Sink::Callback(f) = &self.log.inner.sink else {
            return;
        };
        for line in self.buf.split(|&c| c == b'\n').take(self.lines as usize) {
            f(line);
        }
        self.log
            .inner
            .lines
            .fetch_add(self.lines, Ordering::Relaxed);
        self.buf.clear();
        self.lines = 0;
    }

    /// Writes what is buffered (the timer, shutdown, a full buffer).
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Sink::Callback(_) = &self.log.inner.sink {
            return self.deliver();
        }
        if self.pid != std::process::id() {
            // A forked child flushing what its parent buffered: the parent writes it.
            self.buf.clear();
            self.lines = 0;
            self.pid = std::process::id();
            self.clock.refresh_pid();
            return;
        }
        let n = self.log.write_out(&self.buf, self.lines);
        if n == self.buf.len() {
            self.buf.clear();
            self.lines = 0;
        } else {
            // Would block: keep the unwritten tail (it starts mid-line; that is fine, the
            // next write continues it).
            self.buf.drain(..n);
        }
    }
}

impl Drop for LogBuf {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Now, for request start times and log lines (a vDSO clock read, not a syscall).
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Request;

    fn entry(req: &Request) -> Entry<'_> {
        let t = now();
        Entry {
            req,
            status: 200,
            body_bytes: 2,
            body_in: 0,
            start: t,
            now: t,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("myriad-alog-{}-{name}", std::process::id()))
    }

    #[test]
    fn many_lines_few_writes() {
        let p = tmp("few");
        let log = AccessLog::file(&p, Some("$status $protocol")).unwrap();
        let req = Request::new();
        let mut b = LogBuf::new(log.clone());
        for _ in 0..10_000 {
            b.record(&entry(&req));
        }
        drop(b);
        let s = log.stats();
        assert_eq!(s.lines, 10_000);
        assert_eq!(s.dropped, 0);
        // 11 bytes a line, 60 KiB a write.
        assert!(s.writes <= 3, "{s:?}");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 10_000);
        assert!(text.lines().all(|l| l == "200 HTTP"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn reopen_follows_a_rename() {
        let (p, old) = (tmp("rot"), tmp("rot.1"));
        let log = AccessLog::file(&p, Some("$status")).unwrap();
        let req = Request::new();
        let mut b = LogBuf::new(log.clone());
        b.record(&entry(&req));
        b.flush();
        std::fs::rename(&p, &old).unwrap();
        b.record(&entry(&req));
        b.flush();
        log.reopen().unwrap();
        b.record(&entry(&req));
        b.flush();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "200\n200\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "200\n");
        for f in [p, old] {
            std::fs::remove_file(f).unwrap();
        }
    }

    #[test]
    fn a_full_disk_drops_and_counts() {
        let log = AccessLog::file("/dev/full", Some("$status")).unwrap();
        let req = Request::new();
        let mut b = LogBuf::new(log.clone());
        for _ in 0..3 {
            for _ in 0..5 {
                b.record(&entry(&req));
            }
            b.flush();
        }
        let s = log.stats();
        assert_eq!((s.lines, s.dropped, s.writes), (0, 15, 3));
        assert!(log.inner.failing.load(Ordering::Relaxed));
    }

    #[test]
    fn bad_paths_and_formats_are_errors() {
        let e = AccessLog::file("/nonexistent-dir/x.log", None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = AccessLog::file(tmp("never"), Some("$bogus")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(!tmp("never").exists());
    }

    #[test]
    fn callbacks_get_lines_without_newline() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let log = AccessLog::callback(Some("$status $request"), move |l| {
            g.lock()
                .unwrap()
                .push(String::from_utf8_lossy(l).into_owned())
        })
        .unwrap();
        let req = Request::new();
        let mut b = LogBuf::new(log.clone());
        b.record(&entry(&req));
        b.record(&entry(&req));
        assert!(got.lock().unwrap().is_empty(), "not during record");
        b.deliver();
        assert_eq!(*got.lock().unwrap(), ["200 -", "200 -"]);
        b.record(&entry(&req));
        b.deliver();
        assert_eq!(got.lock().unwrap().len(), 3);
        assert_eq!(log.stats().lines, 3);
    }
}
