//! Socket activation, the passing side: hand listeners to an exec'd program as systemd
//! does, so that it finds them with sd_listen_fds(3) (the supervisor's exec mode, and its
//! re-exec in place).
//!
//! The protocol wants fds 3, 4, … and `LISTEN_PID` set to the pid of the process that
//! executes the program — known only after `fork`. Between `fork` and `exec` a child of a
//! threaded parent may only make async-signal-safe calls (no allocation, no `setenv`), so
//! everything is prepared before the fork:
//!
//! - [`PassFds::new`] duplicates the listeners to fds above the target range (close-on-exec),
//!   so that installing them never overwrites one that is still to be moved;
//! - [`ChildEnv`] is the child's whole environment as one buffer with `LISTEN_FDS`,
//!   `LISTEN_FDNAMES` and a `LISTEN_PID=` slot of fixed width;
//! - in the child, [`PassFds::install`] `dup2`s each to 3+i (the copies lose close-on-exec,
//!   the originals keep it and vanish at exec) and [`ChildEnv::set_pid`] writes `getpid()`
//!   into the slot with plain stores; then `execve` with [`ChildEnv::envp`].
//!
//! [`spawn`] does all of that (and reports an exec failure through a close-on-exec pipe, as
//! `std::process::Command` does). A re-exec in place needs no fork: the pid is the caller's.

use std::ffi::{c_char, CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::listen::LISTEN_FDS_START;
use crate::sys::syscall;

/// Digits kept for the pid (an i32 has at most 10).
const PID_WIDTH: usize = 10;

/// Listeners prepared for a child (copies of the caller's fds; the caller keeps its own).
#[derive(Debug)]
pub struct PassFds {
    fds: Vec<OwnedFd>,
    names: Vec<String>,
}

/// A name systemd accepts in `LISTEN_FDNAMES` (fdname_is_valid): at most 255 printable ASCII
/// characters other than `:` (the separator); empty is allowed.
fn valid_name(n: &str) -> bool {
    n.len() <= 255 && n.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b':')
}

impl PassFds {
    /// Prepares `fds` (each with its name, e.g. `http`, `fcgi`) to become the child's fds 3,
    /// 4, … in this order. Errors: a name systemd would refuse (more than 255 bytes, a `:`, a
    /// control or non-ASCII character) is `InvalidInput`; `fcntl` failures as they come.
    pub fn new(fds: &[(BorrowedFd<'_>, &str)]) -> io::Result<PassFds> {
        let above = LISTEN_FDS_START + fds.len() as i32;
        let mut out = PassFds {
            fds: Vec::with_capacity(fds.len()),
            names: Vec::with_capacity(fds.len()),
        };
        for (fd, name) in fds {
            if !valid_name(name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fd name {name:?}: at most 255 printable ASCII characters, no ':'"),
                ));
            }
            let dup = syscall!(fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above))?;
            // SAFETY: fcntl returned a fresh fd that nothing else owns.
            out.fds.push(unsafe { OwnedFd::from_raw_fd(dup) });
            out.names.push(name.to_string());
        }
        Ok(out)
    }

    /// How many fds are passed.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether no fd is passed.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The names, in fd order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The variables to set besides `LISTEN_PID`: `LISTEN_FDS` and `LISTEN_FDNAMES` (none
    /// when no fd is passed).
    pub fn vars(&self) -> Vec<(String, String)> {
        if self.fds.is_empty() {
            return Vec::new();
        }
        vec![
            ("LISTEN_FDS".to_string(), self.fds.len().to_string()),
            ("LISTEN_FDNAMES".to_string(), self.names.join(":")),
        ]
    }

    /// Moves the copies to fds 3, 4, … (`dup2`; the new fds are inherited across exec).
    /// Async-signal-safe: meant for a child between `fork` and `exec`, or for a process
    /// about to exec itself. Returns the errno of a failing `dup2`.
    ///
    /// # Safety
    /// Fds 3..3+len are overwritten whoever owns them: call this only where nothing will use
    /// them again (after `fork` in the child, or right before `execve`).
    pub unsafe fn install(&self) -> Result<(), i32> {
        for (i, fd) in self.fds.iter().enumerate() {
            // SAFETY: dup2 on an fd we own; the caller vouches for the target numbers.
            if unsafe { libc::dup2(fd.as_raw_fd(), LISTEN_FDS_START + i as i32) } == -1 {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO));
            }
        }
        Ok(())
    }
}

/// A child's environment, prepared before `fork`: the given variables (minus any
/// `LISTEN_*` ones) plus the socket-activation variables, with a `LISTEN_PID` slot that
/// [`ChildEnv::set_pid`] fills without allocating.
pub struct ChildEnv {
    /// Every `KEY=value\0`, back to back.
    arena: Vec<u8>,
    /// Where each entry starts in `arena`.
    starts: Vec<usize>,
    /// The pointer table `envp` returns (NULL-terminated; refreshed by `envp`).
    ptrs: Vec<*const c_char>,
    /// Where the pid digits go in `arena`.
    pid_at: usize,
}

impl std::fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildEnv")
            .field("vars", &self.starts.len())
            .finish()
    }
}

impl ChildEnv {
    /// The environment `base` (e.g. `std::env::vars_os()`, filtered: a supervisor would
    /// drop `NOTIFY_SOCKET` so that its children do not speak for it) with `pass`'s
    /// variables added and any inherited `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` replaced.
    /// Errors: a key that is empty or holds `=` or NUL, a value holding NUL (`InvalidInput`).
    pub fn new(
        base: impl IntoIterator<Item = (OsString, OsString)>,
        pass: &PassFds,
    ) -> io::Result<ChildEnv> {
        let mut env = ChildEnv {
            arena: Vec::new(),
            starts: Vec::new(),
            ptrs: Vec::new(),
            pid_at: 0,
        };
        for (k, v) in base {
            let (kb, vb) = (k.as_bytes(), v.as_bytes());
            if kb.is_empty() || kb.contains(&b'=') || kb.contains(&0) || vb.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("environment variable {k:?} cannot be passed"),
                ));
            }
            if matches!(kb, b"LISTEN_PID" | b"LISTEN_FDS" | b"LISTEN_FDNAMES") {
                continue;
            }
            env.push(&k, &v);
        }
        for (k, v) in pass.vars() {
            env.push(OsStr::new(&k), OsStr::new(&v));
        }
        if !pass.is_empty() {
            env.push(OsStr::new("LISTEN_PID"), OsStr::new(&"0".repeat(PID_WIDTH)));
            env.pid_at = env.arena.len() - 1 - PID_WIDTH;
        }
        env.ptrs = vec![std::ptr::null(); env.starts.len() + 1];
        Ok(env)
    }

    fn push(&mut self, k: &OsStr, v: &OsStr) {
        self.starts.push(self.arena.len());
        self.arena.extend_from_slice(k.as_bytes());
        self.arena.push(b'=');
        self.arena.extend_from_slice(v.as_bytes());
        self.arena.push(0);
    }

    /// Writes `pid` into `LISTEN_PID` (no allocation: async-signal-safe). A no-op when no
    /// fd is passed (there is no `LISTEN_PID` then).
    pub fn set_pid(&mut self, pid: libc::pid_t) {
        if self.pid_at == 0 {
            return;
        }
        let mut digits = [0u8; PID_WIDTH];
        let mut n = pid.unsigned_abs();
        let mut len = 0;
        loop {
            digits[PID_WIDTH - 1 - len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 || len == PID_WIDTH {
                break;
            }
        }
        let slot = &mut self.arena[self.pid_at..self.pid_at + PID_WIDTH + 1];
        slot[..len].copy_from_slice(&digits[PID_WIDTH - len..]);
        slot[len] = 0; // the entry ends after the digits
    }

    /// The NULL-terminated `envp` for `execve` (valid until `self` is changed or dropped).
    /// No allocation: async-signal-safe.
    pub fn envp(&mut self) -> *const *const c_char {
        let base = self.arena.as_ptr();
        for (p, &s) in self.ptrs.iter_mut().zip(&self.starts) {
            // SAFETY: every start is an offset inside the arena.
            *p = unsafe { base.add(s) }.cast();
        }
        self.ptrs.as_ptr()
    }

    /// The entries as strings (for logs and tests; `LISTEN_PID` as last set).
    pub fn entries(&self) -> Vec<String> {
        (self.starts.iter())
            .map(|&s| {
                let e = CStr::from_bytes_until_nul(&self.arena[s..]).unwrap_or_default();
                e.to_string_lossy().into_owned()
            })
            .collect()
    }
}

/// Starts program `path` (an absolute or relative path: no `PATH` search) with `argv`
/// (`argv[0]` included) and environment `env`, the listeners of `pass` as its fds 3, 4, …
/// and `LISTEN_PID` its own pid. The child gets an empty signal mask and SIGPIPE's default
/// action back (a loop blocks the signals it watches, and Rust ignores SIGPIPE); every
/// other fd of the caller that is close-on-exec (all of myriad's are) stays behind.
/// Returns the child's pid (reap it with `waitpid`). Errors: `fork` failing, or the
/// `execve` failure itself (the child is reaped then).
pub fn spawn(
    path: &CStr,
    argv: &[&CStr],
    env: &mut ChildEnv,
    pass: &PassFds,
) -> io::Result<libc::pid_t> {
    // SAFETY: the hook does nothing.
    unsafe { spawn_with(path, argv, env, pass, || Ok(())) }
}

/// [`spawn`] with `before_exec` run in the child after the fds and the environment are in
/// place, right before `execve` (e.g. `setgid`/`setuid`); an `Err(errno)` from it aborts the
/// exec and is returned as the spawn's error.
///
/// # Safety
/// `before_exec` runs in a forked child of a possibly threaded process: it may only make
/// async-signal-safe calls (no allocation, no locks).
pub unsafe fn spawn_with(
    path: &CStr,
    argv: &[&CStr],
    env: &mut ChildEnv,
    pass: &PassFds,
    mut before_exec: impl FnMut() -> Result<(), i32>,
) -> io::Result<libc::pid_t> {
    let mut args: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let mut p = [0i32; 2];
    // A close-on-exec pipe: EOF at exec, or the errno of what failed before it.
    #[cfg(not(target_os = "macos"))]
    syscall!(pipe2(p.as_mut_ptr(), libc::O_CLOEXEC))?;
    #[cfg(target_os = "macos")]
    {
        syscall!(pipe(p.as_mut_ptr()))?;
        for fd in p {
            syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
        }
    }
    // SAFETY: pipe2 returned two fresh fds that nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: the child only makes async-signal-safe calls (sigprocmask, signal, dup2,
    // getpid, stores into memory prepared before the fork, execve, write, _exit) and the
    // caller's hook, which the caller vouches for.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child, as above.
        let errno = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            match pass.install().and_then(|_| {
                env.set_pid(libc::getpid());
                before_exec()
            }) {
                Err(e) => e,
                Ok(()) => {
                    libc::execve(path.as_ptr(), args.as_ptr(), env.envp());
                    io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO)
                }
            }
        };
        let b = errno.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live local, then ends the child without running
        // the parent's atexit handlers or destructors.
        unsafe {
            libc::write(wr.as_raw_fd(), b.as_ptr().cast(), 4);
            libc::_exit(127);
        }
    }
    drop(wr);
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the live local buffer's remaining bytes.
        let n = unsafe { libc::read(rd.as_raw_fd(), b[got..].as_mut_ptr().cast(), 4 - got) };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    if got < 4 {
        log::debug!("spawned {} as pid {pid}", path.to_string_lossy());
        return Ok(pid);
    }
    let mut status = 0;
    // SAFETY: reaps the child we forked, which exits right after its report.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass0() -> PassFds {
        PassFds::new(&[]).unwrap()
    }

    #[test]
    fn env_replaces_inherited_activation_variables() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: the listener outlives the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(l.as_raw_fd()) };
        let pass = PassFds::new(&[(fd, "http"), (fd, "fcgi")]).unwrap();
        assert_eq!(pass.len(), 2);
        for f in &pass.fds {
            assert!(f.as_raw_fd() >= 5, "copies go above the target range");
        }
        let base = [
            ("A", "1"),
            ("LISTEN_PID", "9"),
            ("LISTEN_FDS", "7"),
            ("B", "x=y"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let mut env = ChildEnv::new(base, &pass).unwrap();
        env.set_pid(4194304);
        assert_eq!(
            env.entries(),
            [
                "A=1",
                "B=x=y",
                "LISTEN_FDS=2",
                "LISTEN_FDNAMES=http:fcgi",
                "LISTEN_PID=4194304"
            ]
        );
        env.set_pid(7);
        assert_eq!(env.entries().last().unwrap(), "LISTEN_PID=7");
        let envp = env.envp();
        // SAFETY: envp is NULL-terminated with as many entries as `entries`.
        let n = (0..)
            .take_while(|&i| !unsafe { *envp.add(i) }.is_null())
            .count();
        assert_eq!(n, 5);
    }

    #[test]
    fn no_fds_no_variables() {
        let base = [(OsString::from("LISTEN_FDS"), OsString::from("3"))];
        let mut env = ChildEnv::new(base, &pass0()).unwrap();
        env.set_pid(5);
        assert!(env.entries().is_empty());
    }

    #[test]
    fn bad_names_and_keys_are_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: the listener outlives the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(l.as_raw_fd()) };
        let long = "a".repeat(256);
        for bad in ["a:b", "tab\t", "é", long.as_str()] {
            let e = PassFds::new(&[(fd, bad)]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(PassFds::new(&[(fd, "")]).is_ok());
        for (k, v) in [("", "1"), ("A=B", "1"), ("A", "x\0y")] {
            let base = [(OsString::from(k), OsString::from(v))];
            assert!(ChildEnv::new(base, &pass0()).is_err(), "{k:?}");
        }
    }

    #[test]
    fn exec_failure_is_reported() {
        let mut env = ChildEnv::new(std::iter::empty(), &pass0()).unwrap();
        let path = c"/nonexistent/program";
        let e = spawn(path, &[path], &mut env, &pass0()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        // SAFETY: the hook only returns.
        let e = unsafe { spawn_with(c"/bin/true", &[c"true"], &mut env, &pass0(), || Err(13)) }
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(13), "{e}");
    }
}
