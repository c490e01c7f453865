//! Starting a worker: its page and socketpair, what the forked child closes, switches
//! and runs, and for exec mode everything the child needs prepared before the fork (the
//! child of a multi-threaded host may only make syscalls until it executes).

use std::cell::RefCell;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Instant, SystemTime};

use super::pool::{reconcile, Child, Mode, Shared, State};
use super::proc::{self, Creds};
use super::shm::{self, Shm};
use super::Worker;
use crate::net::Addr;
use crate::reactor::{Loop, Token};
use crate::server::Proto;
use crate::sys::Interest;
use crate::systemd::{ChildEnv, PassFds};

/// What a child of slot `slot` serves: (fd, proto, HTTPS) per listener.
fn slot_fds(s: &State, slot: usize) -> Vec<(RawFd, Proto, bool)> {
    s.bound
        .iter()
        .map(|b| (b.socks[slot % b.socks.len()].fd(), b.proto, b.tls))
        .collect()
}

/// Writes Rust's and C's buffered output out, so that no child writes it a second time.
pub(crate) fn flush_stdio() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: fflush(NULL) flushes every C stream.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

pub(crate) fn spawn_worker(lp: &mut Loop, st: &Shared, slot: usize, extra: bool) -> io::Result<()> {
    let page = Shm::new()?;
    let (mine, theirs) = socketpair()?;
    let mut s = st.borrow_mut();
    let fds = slot_fds(&s, slot);
    // What the child must not keep (forked mode): the supervisor's loop, other slots'
    // sockets, the status listeners, other workers' sockets and pages.
    let mut close: Vec<RawFd> = s.loop_fds.clone();
    close.push(mine.as_raw_fd());
    for b in &s.bound {
        close.extend(
            b.socks
                .iter()
                .map(|l| l.fd())
                .filter(|fd| !fds.iter().any(|f| f.0 == *fd)),
        );
    }
    close.extend(s.status.iter().map(|(_, l)| l.fd()));
    for c in &s.children {
        close.push(c.page.fd());
        if let Some((_, fd)) = &c.notify {
            close.push(fd.as_raw_fd());
        }
    }
    // And any other fd the supervisor opened since it started (a status connection open
    // right now): everything above 2 that the application did not have before `run`.
    if let Some(open) = proc::open_fds() {
        close.extend(open.into_iter().filter(|fd| {
            *fd > 2
                && !s.app_fds.contains(fd)
                && !fds.iter().any(|f| f.0 == *fd)
                && *fd != theirs.as_raw_fd()
                && *fd != page.fd()
        }));
        close.sort_unstable();
        close.dedup();
    }
    let exec = match &s.mode {
        Mode::Exec(argv) => Some(ExecPrep::new(argv, &fds, page.fd(), theirs.as_raw_fd())?),
        Mode::Fork(_) => None,
    };
    flush_stdio();
    let me = s.me;
    // SAFETY: fork has no preconditions; the child below only makes syscalls before it runs
    // the worker code (forked mode: as any forking server does) or executes (exec mode).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        proc::reset_signals();
        proc::die_with(me);
        if let Some(x) = &exec {
            x.run(s.creds.as_ref(), s.chroot.as_deref());
        }
        for fd in close {
            // SAFETY: closing fds of the supervisor this child does not use.
            unsafe { libc::close(fd) };
        }
        if let Err(what) = proc::switch_user(s.creds.as_ref(), s.chroot.as_deref()) {
            proc::child_say(b"myriad worker: cannot switch user: ");
            proc::child_say(what.as_bytes());
            proc::child_say(b"\n");
            // SAFETY: ends the child without running the supervisor's destructors.
            unsafe { libc::_exit(proc::EXIT_CREDS) };
        }
        shm::set_probe(page.ptr(), theirs.as_raw_fd());
        // The supervisor speaks to systemd, not its workers.
        std::env::remove_var("NOTIFY_SOCKET");
        std::env::remove_var("WATCHDOG_USEC");
        let w = Worker {
            listeners: fds.iter().map(|&(fd, p, _)| (Addr::Fd(fd), p)).collect(),
            https: fds.iter().map(|f| f.2).collect(),
            slot,
        };
        let code = match &mut s.mode {
            Mode::Fork(f) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&w))).unwrap_or(70)
            }
            Mode::Exec(_) => 127,
        };
        flush_stdio();
        // SAFETY: ends the child without running the supervisor's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    let now = Instant::now();
    let st2 = st.clone();
    let fd = mine.as_raw_fd();
    let token = lp.watch(fd, Interest::READ | Interest::EDGE, move |lp, t, _| {
        on_notify(lp, &st2, pid, fd, t)
    })?;
    if !extra {
        if s.slots[slot].started > 0 {
            s.respawns += 1;
        }
        s.slots[slot].started += 1;
    }
    log::info!(
        "supervisor: started worker {pid} (slot {slot}{})",
        if extra { ", extra" } else { "" }
    );
    s.children.push(Child {
        pid,
        slot,
        extra,
        page,
        notify: Some((token, mine)),
        ready: false,
        retire: None,
        term_at: None,
        killed: false,
        watchdogged: false,
        started: SystemTime::now(),
        started_at: now,
        hb: 0,
        hb_at: now,
        pinged_at: now,
        req_seq: 0,
        req_at: now,
        slow_counted: false,
        last_requests: 0,
        idle_at: now,
        rss: 0,
    });
    Ok(())
}

/// The worker's socket: 'R' when it serves; EOF when it is gone.
fn on_notify(lp: &mut Loop, st: &Shared, pid: libc::pid_t, fd: RawFd, t: Token) {
    let mut buf = [0u8; 16];
    let mut ready = false;
    let gone;
    loop {
        // SAFETY: reads into a live buffer of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            ready |= buf[..n as usize].contains(&b'R');
            continue;
        }
        gone = n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock;
        break;
    }
    {
        let mut s = st.borrow_mut();
        if let Some(c) = s.children.iter_mut().find(|c| c.pid == pid) {
            if ready && !c.ready {
                c.ready = true;
                c.hb_at = Instant::now();
                log::info!("supervisor: worker {pid} (slot {}) ready", c.slot);
            }
            if gone {
                if let Some((tok, _)) = c.notify.take() {
                    lp.unwatch(tok);
                }
            }
        } else if gone {
            lp.unwatch(t);
        }
    }
    if ready {
        reconcile(lp, st);
    }
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    crate::sys::syscall!(socketpair(
        libc::AF_UNIX,
        libc::SOCK_STREAM,
        0,
        fds.as_mut_ptr()
    ))?;
    // SAFETY: socketpair returned two fresh fds that nothing else owns.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in fds {
        proc::set_cloexec(fd, true)?;
        let fl = crate::sys::syscall!(fcntl(fd, libc::F_GETFL))?;
        crate::sys::syscall!(fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
    }
    Ok(ends)
}

/// Everything an exec-mode child needs, prepared before the fork (the child of a
/// multi-threaded host may only make syscalls): the listeners as systemd passes them
/// (`systemd::PassFds`, `systemd::ChildEnv`: fds 3.., LISTEN_FDS, LISTEN_FDNAMES, a
/// LISTEN_PID slot), and after them the worker's page and socket (`MYRIAD_SUPERVISOR`).
struct ExecPrep {
    path: CString,
    argv: Vec<CString>,
    pass: PassFds,
    env: RefCell<ChildEnv>,
    /// Copies of the page and the socket above every fd the child sets, and where they go.
    extra: [(OwnedFd, RawFd); 2],
}

impl ExecPrep {
    fn new(
        argv: &[OsString],
        fds: &[(RawFd, Proto, bool)],
        page: RawFd,
        sock: RawFd,
    ) -> io::Result<ExecPrep> {
        let cs = |s: &[u8]| {
            CString::new(s)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in command"))
        };
        let argv: Vec<CString> = (argv.iter())
            .map(|a| cs(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let path = find_program(&argv[0])?;
        let n = fds.len() as RawFd;
        let borrowed: Vec<(BorrowedFd<'_>, &str)> = (fds.iter())
            .map(|&(fd, p, tls)| {
                // SAFETY: the supervisor's listener fds stay open while the child is made.
                let b = unsafe { BorrowedFd::borrow_raw(fd) };
                let name = match (p, tls) {
                    (Proto::Fcgi, _) => "fcgi",
                    (_, true) => "https",
                    _ => "http",
                };
                (b, name)
            })
            .collect();
        let pass = PassFds::new(&borrowed)?;
        let base = std::env::vars_os().filter(|(k, _)| {
            let k = k.as_bytes();
            !k.starts_with(b"MYRIAD_SUPERVISOR")
                && !matches!(k, b"NOTIFY_SOCKET" | b"WATCHDOG_USEC" | b"WATCHDOG_PID")
        });
        let target = 3 + n;
        let mine = std::iter::once((
            OsString::from(shm::ENV),
            OsString::from(format!("{},{}", target, target + 1)),
        ));
        let env = ChildEnv::new(base.chain(mine), &pass)?;
        let above = |fd: RawFd| -> io::Result<OwnedFd> {
            let d = crate::sys::syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, target + 2))?;
            // SAFETY: fcntl returned a fresh fd that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(d) })
        };
        Ok(ExecPrep {
            path,
            argv,
            pass,
            env: RefCell::new(env),
            extra: [(above(page)?, target), (above(sock)?, target + 1)],
        })
    }

    /// In the child: places the fds, switches user, executes. Never returns.
    fn run(&self, creds: Option<&Creds>, chroot: Option<&std::ffi::CStr>) -> ! {
        let fail = |what: &[u8]| -> ! {
            proc::child_say(b"myriad worker: ");
            proc::child_say(what);
            proc::child_say(b"\n");
            // SAFETY: ends the child.
            unsafe { libc::_exit(127) }
        };
        // SAFETY: this is the child between fork and exec: fds 3.. are its to set.
        if unsafe { self.pass.install() }.is_err() {
            fail(b"cannot place the listeners");
        }
        for (copy, dst) in &self.extra {
            // SAFETY: dup2 between fds we own; the copies sit above every target.
            if unsafe { libc::dup2(copy.as_raw_fd(), *dst) } < 0 {
                fail(b"cannot place the supervisor's page");
            }
        }
        if let Err(what) = proc::switch_user(creds, chroot) {
            proc::child_say(b"myriad worker: cannot switch user: ");
            proc::child_say(what.as_bytes());
            proc::child_say(b"\n");
            // SAFETY: ends the child.
            unsafe { libc::_exit(proc::EXIT_CREDS) };
        }
        let mut env = self.env.borrow_mut();
        // SAFETY: getpid cannot fail.
        env.set_pid(unsafe { libc::getpid() });
        let mut argvp: [*const libc::c_char; 256] = [std::ptr::null(); 256];
        for (i, a) in self.argv.iter().take(argvp.len() - 1).enumerate() {
            argvp[i] = a.as_ptr();
        }
        // SAFETY: NUL-terminated strings in NULL-terminated arrays, all live.
        unsafe { libc::execve(self.path.as_ptr(), argvp.as_ptr(), env.envp()) };
        fail(b"cannot execute the worker command")
    }
}

/// `prog` as given when it has a slash, else the first executable of that name on PATH.
fn find_program(prog: &CString) -> io::Result<CString> {
    let b = prog.as_bytes();
    if b.contains(&b'/') {
        return Ok(prog.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(std::ffi::OsStr::from_bytes(b));
        if let Ok(md) = std::fs::metadata(&cand) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return CString::new(cand.as_os_str().as_bytes())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("worker command {:?} not found on PATH", prog),
    ))
}
