//! Readiness notification, sd_notify(3): newline-separated `VAR=value` lines in one
//! datagram to the Unix socket `NOTIFY_SOCKET` names (a path, or `@name` in the abstract
//! namespace). Sends never block: the socket is non-blocking and a full receiver gives
//! `WouldBlock`, so a stuck service manager cannot stall the loop.
//!
//! The messages a server sends: `READY=1` once it serves, `RELOADING=1` with
//! `MONOTONIC_USEC=` when a reload starts (then `READY=1` when it is done), `STOPPING=1` when
//! it drains, `STATUS=` a one-line summary, `WATCHDOG=1` at least every `WATCHDOG_USEC`
//! ([`start_watchdog`] pings from a loop timer, so a stuck loop stops the pings and the
//! manager restarts the service).

use std::ffi::OsStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::reactor::{Loop, TimerId};
use crate::sys::syscall;

/// A datagram socket aimed at a service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
    name: String,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, or `None` when it is unset or empty. With
    /// `unset_env` the variable is removed (children then do not notify on our behalf);
    /// changing the environment is only sound while no other thread reads it.
    pub fn from_env(unset_env: bool) -> io::Result<Option<Notifier>> {
        let v = std::env::var_os("NOTIFY_SOCKET");
        if unset_env {
            std::env::remove_var("NOTIFY_SOCKET");
        }
        match v {
            Some(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for socket `addr`: an absolute path, or `@name` for Linux's abstract
    /// namespace. Anything else (a relative path, systemd's `vsock:`) is `InvalidInput`.
    pub fn new(addr: &OsStr) -> io::Result<Notifier> {
        let bytes = addr.as_bytes();
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={:?}: {why}", addr.to_string_lossy()),
            )
        };
        // SAFETY: all-zero is a valid sockaddr_un.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let (path, abstract_ns) = match bytes.first() {
            Some(b'/') => (bytes, false),
            Some(b'@') if cfg!(any(target_os = "linux", target_os = "android")) => {
                (&bytes[1..], true)
            }
            Some(b'@') => return Err(bad("abstract sockets exist only on Linux")),
            _ => return Err(bad("not an absolute path or an @abstract name")),
        };
        // A path needs its NUL terminator; an abstract name starts with a NUL byte.
        if path.len() >= sun.sun_path.len() || (!abstract_ns && path.contains(&0)) {
            return Err(bad("too long for a Unix socket address"));
        }
        let start = usize::from(abstract_ns);
        for (d, s) in sun.sun_path[start..].iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        // Header, then the path and its NUL, or the NUL and the name (no terminator).
        let len = size_of::<libc::sa_family_t>() + path.len() + 1;
        #[cfg(any(target_os = "freebsd", target_os = "macos"))]
        {
            sun.sun_len = len as u8;
        }
        #[cfg(not(target_os = "macos"))]
        let fd = syscall!(socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0
        ))?;
        #[cfg(target_os = "macos")]
        let fd = syscall!(socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0))?;
        // SAFETY: socket returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        #[cfg(target_os = "macos")]
        crate::sys::set_nonblock_cloexec(fd.as_raw_fd())?;
        Ok(Notifier {
            fd,
            addr: sun,
            len: len as libc::socklen_t,
            name: addr.to_string_lossy().into_owned(),
        })
    }

    /// The socket address, as `NOTIFY_SOCKET` gave it.
    pub fn addr(&self) -> &str {
        &self.name
    }

    /// Sends `state` (one or more `VAR=value` lines) in one datagram. Never blocks: a
    /// receiver whose queue is full gives `WouldBlock`; no receiver gives `ECONNREFUSED` or
    /// `ENOENT`. Safe from any thread.
    pub fn send(&self, state: &str) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        let flags = libc::MSG_DONTWAIT;
        let n = syscall!(sendto(
            self.fd.as_raw_fd(),
            state.as_ptr().cast(),
            state.len(),
            flags,
            (&self.addr as *const libc::sockaddr_un).cast(),
            self.len
        ))?;
        log::trace!("sd_notify to {}: {state:?} ({n} bytes)", self.name);
        Ok(())
    }

    /// `READY=1`: startup (or a reload) is complete and the service serves.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` now: a reload starts (send `READY=1` after it).
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `WATCHDOG=1`: the keep-alive ping.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// `STATUS=` the text, made one line (line breaks become spaces).
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.send(&status_line(text))
    }
}

/// `STATUS=text` with line breaks replaced by spaces.
pub(crate) fn status_line(text: &str) -> String {
    let one: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={one}")
}

/// The process's notifier from `NOTIFY_SOCKET`, made at the first use (the error as text,
/// when the variable is malformed), with the pid of the process that made it.
fn global() -> &'static (u32, Result<Option<Notifier>, String>) {
    static N: OnceLock<(u32, Result<Option<Notifier>, String>)> = OnceLock::new();
    N.get_or_init(|| {
        let n = Notifier::from_env(false).map_err(|e| e.to_string());
        (std::process::id(), n)
    })
}

/// sd_notify(3) for the whole process: sends `state` to `NOTIFY_SOCKET` (read once, at the
/// first call). `Ok(false)` when the variable is unset (not started by a manager that
/// listens), `Ok(true)` once sent. A process forked after that first call (a supervisor's
/// worker) is not the service's main process: its calls are `Ok(false)` and send nothing,
/// so a forked loop's watchdog timer cannot speak for its parent. Errors: a malformed
/// `NOTIFY_SOCKET`, and send failures as [`Notifier::send`] gives them. Any thread.
pub fn notify(state: &str) -> io::Result<bool> {
    let (pid, n) = global();
    match n {
        _ if *pid != std::process::id() => Ok(false),
        Ok(Some(n)) => n.send(state).map(|_| true),
        Ok(None) => Ok(false),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e.clone())),
    }
}

/// [`notify`] `RELOADING=1` with `MONOTONIC_USEC=` now: a reload starts (send `READY=1`
/// when it is done).
pub fn notify_reloading() -> io::Result<bool> {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
}

/// For a service whose readiness builds up over time (a supervisor waiting for its
/// workers), called as often as convenient: sends `READY=1` the first time `ready` is true
/// (with the status), and `STATUS=` the one-line `status` whenever it changed since the
/// last call. Failures are logged, not returned (a manager that went away must not stop a
/// server). Process-wide.
pub fn service_state(ready: bool, status: &str) {
    static STATE: Mutex<(bool, String)> = Mutex::new((false, String::new()));
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let first = ready && !st.0;
    if !first && st.1 == status {
        return;
    }
    st.0 |= ready;
    st.1.clear();
    st.1.push_str(status);
    let line = status_line(status);
    let msg = if first {
        format!("READY=1\n{line}")
    } else {
        line
    };
    if let Err(e) = notify(&msg) {
        log::warn!("sd_notify: {e}");
    }
}

/// The watchdog timeout the manager asks for (sd_watchdog_enabled(3)): `WATCHDOG_USEC`,
/// unless `WATCHDOG_PID` names another process; `None` when unset. Ping at least every half
/// of it. With `unset_env`, both variables are removed (see [`Notifier::from_env`]).
/// Errors: a value that is not a positive decimal number.
pub fn watchdog_interval(unset_env: bool) -> io::Result<Option<Duration>> {
    let usec = std::env::var_os("WATCHDOG_USEC");
    let pid = std::env::var_os("WATCHDOG_PID");
    if unset_env {
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
    }
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

pub(crate) fn parse_watchdog(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    my_pid: u32,
) -> io::Result<Option<Duration>> {
    let num = |v: &OsStr| {
        let s = v
            .to_str()
            .filter(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))?;
        s.parse::<u64>().ok().filter(|&n| n > 0)
    };
    let bad = |var: &str, v: &OsStr| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{var}={:?} is not a positive number", v.to_string_lossy()),
        )
    };
    let Some(usec) = usec else { return Ok(None) };
    let n = num(usec).ok_or_else(|| bad("WATCHDOG_USEC", usec))?;
    if let Some(pid) = pid {
        let p = num(pid).ok_or_else(|| bad("WATCHDOG_PID", pid))?;
        if p != u64::from(my_pid) {
            return Ok(None);
        }
    }
    Ok(Some(Duration::from_micros(n)))
}

/// `CLOCK_MONOTONIC` in microseconds (what `MONOTONIC_USEC=` carries).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// When the manager asked for a watchdog (`WATCHDOG_USEC` for this process) and listens
/// (`NOTIFY_SOCKET`): arms a repeating timer on `lp` that sends `WATCHDOG=1` every half
/// timeout, and returns it (cancel it with [`Loop::cancel_timer`]). `Ok(None)` when no
/// watchdog is asked for. The pings come from the loop, so a loop stuck in a handler stops
/// them and the manager acts (restarts the service, per `WatchdogSec=`). A ping that cannot
/// be sent is logged, never fatal.
pub fn start_watchdog(lp: &mut Loop) -> io::Result<Option<TimerId>> {
    let Some(timeout) = watchdog_interval(false)? else {
        return Ok(None);
    };
    if !notify("WATCHDOG=1")? {
        return Ok(None);
    }
    let every = timeout / 2;
    Ok(Some(lp.repeat(every, every, |_, _| {
        if let Err(e) = notify("WATCHDOG=1") {
            log::warn!("sd_notify WATCHDOG=1: {e}");
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_each_message_to_a_path_socket() {
        // The pid and the time: another pid namespace sharing /tmp may run this test too.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("myriad-notify-{}-{nanos}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        assert_eq!(n.addr(), path.to_str().unwrap());
        n.ready().unwrap();
        assert_eq!(recv(&rx), "READY=1");
        n.stopping().unwrap();
        assert_eq!(recv(&rx), "STOPPING=1");
        n.watchdog().unwrap();
        assert_eq!(recv(&rx), "WATCHDOG=1");
        n.status("2 workers\nidle").unwrap();
        assert_eq!(recv(&rx), "STATUS=2 workers idle");
        let before = monotonic_usec();
        n.reloading().unwrap();
        let m = recv(&rx);
        let (head, usec) = m.split_once("\nMONOTONIC_USEC=").unwrap();
        assert_eq!(head, "RELOADING=1");
        let usec: u64 = usec.parse().unwrap();
        assert!(usec >= before && usec <= monotonic_usec(), "{usec}");
        drop(rx);
        // Nobody listens any more: an error, not a hang.
        let e = n.ready().unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)),
            "{e}"
        );
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_and_a_full_queue_never_block() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("myriad-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&rx), "READY=1");
        // Nobody reads: the receiver's queue fills (net.unix.max_dgram_qlen, 10 by
        // default) and the send says WouldBlock instead of waiting.
        let mut sent = 0;
        let err = loop {
            match n.watchdog() {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "the queue never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(sent >= 1);
        assert_eq!(recv(&rx), "WATCHDOG=1");
    }

    #[test]
    fn bad_addresses_are_named() {
        for bad in ["relative/path", "vsock:2:1234", "x"] {
            let e = Notifier::new(OsStr::new(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("NOTIFY_SOCKET"), "{e}");
        }
        let long = format!("/{}", "a".repeat(200));
        assert!(Notifier::new(OsStr::new(&long)).is_err());
    }

    #[test]
    fn watchdog_variables() {
        let o = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(parse_watchdog(None, None, 7).unwrap(), None);
        assert_eq!(
            parse_watchdog(o("3000000"), None, 7).unwrap(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_watchdog(o("500"), o("7"), 7).unwrap(),
            Some(Duration::from_micros(500))
        );
        assert_eq!(parse_watchdog(o("500"), o("8"), 7).unwrap(), None);
        for bad in ["", "0", "-5", "1s", " 5"] {
            let e = parse_watchdog(o(bad), None, 7).unwrap_err();
            assert!(e.to_string().contains("WATCHDOG_USEC"), "{e}");
        }
        let e = parse_watchdog(o("5"), o("x"), 7).unwrap_err();
        assert!(e.to_string().contains("WATCHDOG_PID"), "{e}");
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("a\r\nb"), "STATUS=a  b");
        assert_eq!(status_line(""), "STATUS=");
    }
}
