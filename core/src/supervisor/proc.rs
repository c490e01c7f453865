//! Process plumbing of the supervisor: the user to switch to, what a child does between
//! fork and the worker code (or exec), exit statuses in words, a worker's RSS, a TCP
//! listener's accept queue, and the signal forwarding that keeps a multi-threaded host's
//! signals for the supervisor's signalfd.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sys::syscall;

/// The exit status of a worker that could not switch to its user (EX_CONFIG): fatal for the
/// supervisor, which never lets a worker serve as root when a user was asked for.
pub(crate) const EXIT_CREDS: i32 = 78;

/// The signals the supervisor takes.
pub(crate) const SIGNALS: [i32; 7] = [
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGCHLD,
];

/// Who a worker runs as, resolved once in the supervisor (the child only makes syscalls).
#[derive(Clone, Debug)]
pub(crate) struct Creds {
    pub(crate) name: String,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    pub(crate) groups: Vec<libc::gid_t>,
}

/// Looks up `user` (and `group`, else the user's primary group) and the user's groups.
pub(crate) fn resolve_user(user: &str, group: Option<&str>) -> io::Result<Creds> {
    let cuser = CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in user name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: all-zero is a valid passwd to be filled in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is live for the call; buf's length is passed.
    let r = unsafe {
        libc::getpwnam_r(
            cuser.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut res,
        )
    };
    if r != 0 || res.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown user {user:?}"),
        ));
    }
    let (uid, mut gid) = (pw.pw_uid, pw.pw_gid);
    if let Some(g) = group {
        let cg = CString::new(g)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in group name"))?;
        // SAFETY: all-zero is a valid group to be filled in.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut gres: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as for getpwnam_r.
        let r = unsafe {
            libc::getgrnam_r(
                cg.as_ptr(),
                &mut gr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut gres,
            )
        };
        if r != 0 || gres.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("unknown group {g:?}"),
            ));
        }
        gid = gr.gr_gid;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: `groups` has room for `n` entries; getgrouplist writes at most that many.
    #[cfg(not(target_os = "macos"))]
    let r = unsafe { libc::getgrouplist(cuser.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
    // SAFETY: as above (macOS takes c_int group ids).
    #[cfg(target_os = "macos")]
    let r = unsafe {
        libc::getgrouplist(
            cuser.as_ptr(),
            gid as i32,
            groups.as_mut_ptr().cast(),
            &mut n,
        )
    };
    groups.truncate(if r < 0 { 1 } else { n.max(0) as usize });
    if r < 0 {
        groups[0] = gid;
    }
    Ok(Creds {
        name: user.to_string(),
        uid,
        gid,
        groups,
    })
}

/// Whether this process can become `c` (root, or already that user).
pub(crate) fn can_switch(c: &Creds) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 || euid == c.uid {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "cannot run workers as {:?} (uid {}): the supervisor runs as uid {euid}, not root",
            c.name, c.uid
        ),
    ))
}

/// In a child: chroot (optional), then the groups, the group and the user, checked.
/// Only syscalls (safe between fork and exec). Returns what failed.
pub(crate) fn switch_user(c: Option<&Creds>, chroot: Option<&CStr>) -> Result<(), &'static str> {
    if let Some(dir) = chroot {
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::chroot(dir.as_ptr()) } != 0 {
            return Err("chroot");
        }
        // SAFETY: a static NUL-terminated path.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err("chdir /");
        }
    }
    let Some(c) = c else { return Ok(()) };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == c.uid && c.uid != 0 {
        return Ok(());
    }
    // SAFETY: `groups` holds `len` group ids.
    #[cfg(not(target_os = "macos"))]
    let r = unsafe { libc::setgroups(c.groups.len() as _, c.groups.as_ptr()) };
    // SAFETY: as above.
    #[cfg(target_os = "macos")]
    let r = unsafe { libc::setgroups(c.groups.len() as _, c.groups.as_ptr()) };
    if r != 0 {
        return Err("setgroups");
    }
    // SAFETY: plain syscalls on integers.
    unsafe {
        if libc::setgid(c.gid) != 0 {
            return Err("setgid");
        }
        if libc::setuid(c.uid) != 0 {
            return Err("setuid");
        }
        if libc::getuid() != c.uid || libc::geteuid() != c.uid || libc::getegid() != c.gid {
            return Err("credentials check");
        }
        if c.uid != 0 && libc::setuid(0) == 0 {
            return Err("root still reachable");
        }
    }
    Ok(())
}

/// In a child: the signal mask emptied and the supervisor's signals back to their default
/// actions. Only syscalls.
pub(crate) fn reset_signals() {
    // SAFETY: a zeroed sigset is then emptied; the calls only take valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::signal(s, libc::SIG_DFL);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// In a child: asks for SIGTERM when the supervisor dies (Linux), and exits if it already
/// has. Only syscalls.
pub(crate) fn die_with(parent: libc::pid_t) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(1) };
    }
}

/// Writes `msg` to stderr from a child (no allocation, no lock).
pub(crate) fn child_say(msg: &[u8]) {
    // SAFETY: a live buffer of msg.len() bytes.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// `status` from waitpid in words: "exited with status 3", "killed by signal 9 (SIGKILL)".
pub(crate) fn exit_text(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        format!(
            "killed by signal {s} ({}){}",
            signal_name(s),
            if libc::WCOREDUMP(status) {
                ", core dumped"
            } else {
                ""
            }
        )
    } else {
        format!("ended with wait status {status:#x}")
    }
}

/// The usual name of a signal.
pub(crate) fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "?",
    }
}

/// Resident memory of `pid` in bytes (Linux: /proc/PID/statm), if it can be read.
pub(crate) fn rss_bytes(pid: libc::pid_t) -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf with a valid name.
        let psz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        Some(pages * psz)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = pid;
        None
    }
}

/// A TCP listener's accept queue: (connections waiting, backlog), Linux's TCP_INFO.
pub(crate) fn listen_queue(fd: RawFd) -> Option<(u32, u32)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: all-zero is a valid tcp_info to be filled in.
        let mut ti: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        syscall!(getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut ti as *mut libc::tcp_info).cast(),
            &mut len
        ))
        .ok()?;
        // For a listener, unacked is the accept queue and sacked the backlog.
        Some((ti.tcpi_unacked, ti.tcpi_sacked))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = fd;
        None
    }
}

/// The supervisor's thread, to which [`forward`] sends what other threads get.
static TARGET: AtomicUsize = AtomicUsize::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let t = TARGET.load(Ordering::Relaxed);
    // SAFETY: pthread_self and pthread_kill are async-signal-safe; `t` is the supervisor's
    // thread, which blocks `sig` and reads it from its signalfd.
    unsafe {
        if t != 0 && libc::pthread_self() as usize != t {
            libc::pthread_kill(t as libc::pthread_t, sig);
        }
    }
}

/// In a host with other threads (Node), a signal may be delivered to a thread that does
/// not block it: a handler on each supervisor signal re-sends it to this thread, which
/// blocks it and reads it from the loop's signalfd.
pub(crate) fn forward_signals_here() -> io::Result<()> {
    // SAFETY: pthread_self cannot fail.
    TARGET.store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
    for s in SIGNALS {
        // SAFETY: all-zero is a valid sigaction, then filled in with a handler that only
        // makes async-signal-safe calls.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = forward as *const () as usize;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            syscall!(sigaction(s, &act, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// Reaps one ended child: (pid, wait status), or None when none has ended.
pub(crate) fn reap() -> Option<(libc::pid_t, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a live i32.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Sends `sig` to `pid`; false if it is gone.
pub(crate) fn kill(pid: libc::pid_t, sig: i32) -> bool {
    // SAFETY: kill with integers.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// The fds open in this process (Linux: /proc/self/fd), if they can be listed.
pub(crate) fn open_fds() -> Option<Vec<RawFd>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let mut v: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Some(v)
}

/// Sets or clears close-on-exec on `fd`.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFD))?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    syscall!(fcntl(fd, libc::F_SETFD, flags)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_in_words() {
        assert_eq!(exit_text(3 << 8), "exited with status 3");
        assert_eq!(exit_text(9), "killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn unknown_user_is_an_error() {
        let e = resolve_user("no-such-user-myriad", None).unwrap_err();
        assert!(e.to_string().contains("unknown user"), "{e}");
        let root = resolve_user("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
