//! Socket activation, the receiving side: sd_listen_fds(3) and sd_listen_fds_with_names(3).
//!
//! A service manager passes `n` listening sockets as fds 3, 4, … 3+n-1, with
//! `LISTEN_FDS=n`, `LISTEN_PID=<the pid they are for>` and optionally
//! `LISTEN_FDNAMES=name1:name2:…` (systemd's `FileDescriptorName=`,
//! `systemd-socket-activate --fdname=`). The pid check keeps a child that inherited the
//! environment (but not the fds) from taking fds it does not have.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::net::Listener;
use crate::server::Proto;

/// The first passed fd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// At most this many fds are taken (systemd itself caps a unit's sockets far lower); a
/// larger `LISTEN_FDS` is an error rather than a loop over a billion fd numbers.
const MAX_FDS: usize = 4096;

/// Set once the fds have been taken (each may have only one owner).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Why the socket-activation environment could not be used.
#[derive(Debug)]
pub enum ActivationError {
    /// `LISTEN_PID` is not a positive decimal pid.
    BadPid(String),
    /// `LISTEN_FDS` is not a decimal count (or more than 4096).
    BadCount(String),
    /// `LISTEN_FDNAMES` names a different number of fds than `LISTEN_FDS` counts.
    NameCount {
        /// `LISTEN_FDS`.
        fds: usize,
        /// The names in `LISTEN_FDNAMES`.
        names: usize,
    },
    /// A passed fd is not open (or fcntl failed on it).
    Fd(RawFd, io::Error),
    /// The fds were taken already by an earlier call in this process.
    AlreadyTaken,
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::BadPid(v) => {
                write!(f, "socket activation: LISTEN_PID={v:?} is not a pid")
            }
            ActivationError::BadCount(v) => write!(
                f,
                "socket activation: LISTEN_FDS={v:?} is not a count of fds (0..{MAX_FDS})"
            ),
            ActivationError::NameCount { fds, names } => write!(
                f,
                "socket activation: LISTEN_FDNAMES has {names} names for LISTEN_FDS={fds} fds"
            ),
            ActivationError::Fd(fd, e) => {
                write!(f, "socket activation: passed fd {fd} is unusable: {e}")
            }
            ActivationError::AlreadyTaken => {
                f.write_str("socket activation: the passed fds were taken already")
            }
        }
    }
}

impl std::error::Error for ActivationError {}

impl From<ActivationError> for io::Error {
    fn from(e: ActivationError) -> io::Error {
        let kind = match &e {
            ActivationError::Fd(_, err) => err.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// A listening fd passed by the service manager, and its name (`unknown` when the manager
/// gave none).
#[derive(Debug)]
pub struct ListenFd {
    /// The fd (close-on-exec now, as sd_listen_fds leaves it).
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`.
    pub name: String,
}

impl ListenFd {
    /// The protocol this fd serves by the naming convention ([`proto_for_name`]).
    pub fn proto(&self) -> Proto {
        proto_for_name(&self.name)
    }

    /// A listener on this fd (checked to be a listening socket, made non-blocking; its
    /// address is `fd:N`).
    pub fn into_listener(self) -> io::Result<Listener> {
        Listener::from_fd(self.fd)
    }
}

/// The protocol an fd of this name serves: `fcgi` is FastCGI, every other name HTTP.
pub fn proto_for_name(name: &str) -> Proto {
    if name == "fcgi" {
        Proto::Fcgi
    } else {
        Proto::Http
    }
}

/// What the environment says: `None` when it is not for this process.
pub(crate) fn parse(
    pid: Option<&OsStr>,
    fds: Option<&OsStr>,
    names: Option<&OsStr>,
    my_pid: u32,
) -> Result<Option<Vec<String>>, ActivationError> {
    let text = |v: &OsStr| v.to_string_lossy().into_owned();
    let Some(pid) = pid else { return Ok(None) };
    let p = decimal(pid)
        .filter(|&p| p > 0 && p <= i32::MAX as u64)
        .ok_or_else(|| ActivationError::BadPid(text(pid)))?;
    if p != u64::from(my_pid) {
        return Ok(None);
    }
    let Some(fds) = fds else { return Ok(None) };
    let n = decimal(fds)
        .filter(|&n| n <= MAX_FDS as u64)
        .ok_or_else(|| ActivationError::BadCount(text(fds)))? as usize;
    let names: Vec<String> = match names {
        // sd_listen_fds_with_names: no names at all means "unknown" for each.
        None => vec!["unknown".to_string(); n],
        Some(v) if v.is_empty() && n == 0 => Vec::new(),
        Some(v) => text(v).split(':').map(str::to_string).collect(),
    };
    if names.len() != n {
        return Err(ActivationError::NameCount {
            fds: n,
            names: names.len(),
        });
    }
    Ok(Some(names))
}

/// A plain decimal number (no sign, no spaces), as systemd's parsers accept it.
fn decimal(v: &OsStr) -> Option<u64> {
    let s = v.to_str()?;
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Takes the listening fds passed to this process by socket activation (sd_listen_fds(3)
/// with names): an empty list when `LISTEN_PID` is unset or names another process (the
/// environment was inherited, the fds were not) or `LISTEN_FDS` is unset or 0. Each fd is
/// made close-on-exec, so a child this process starts does not inherit it by accident.
///
/// With `unset_env`, `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the
/// environment whatever the outcome (so children do not see them). Changing the
/// environment is only sound while no other thread reads it: call this early in `main`.
///
/// Errors: a malformed variable, a count of names that does not match, a passed fd that is
/// not open, or a second call after the fds were taken.
pub fn listen_fds(unset_env: bool) -> Result<Vec<ListenFd>, ActivationError> {
    let vars = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"].map(std::env::var_os);
    if unset_env {
        for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(k);
        }
    }
    let [pid, fds, names] = &vars;
    let names = match parse(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )? {
        Some(names) if !names.is_empty() => names,
        _ => return Ok(Vec::new()),
    };
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(ActivationError::AlreadyTaken);
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let fd = LISTEN_FDS_START + i as RawFd;
        if let Err(e) = set_cloexec(fd) {
            // The fds taken so far are closed with `out`; the rest were never ours.
            return Err(ActivationError::Fd(fd, e));
        }
        // SAFETY: the service manager passed fds 3..3+n to this process (LISTEN_PID is our
        // pid), fd is open (fcntl succeeded), and TAKEN makes this the only place that
        // claims it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        out.push(ListenFd { fd, name });
    }
    log::debug!(
        "socket activation: {} fds ({})",
        out.len(),
        out.iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// How many fds [`listen_fds`] would take now, without taking them or changing the
/// environment: 0 when the process was not socket-activated (or the fds were taken).
/// Errors: as [`listen_fds`] for malformed variables.
pub fn listen_fds_count() -> Result<usize, ActivationError> {
    if TAKEN.load(Ordering::Acquire) {
        return Ok(0);
    }
    let vars = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"].map(std::env::var_os);
    let [pid, fds, names] = &vars;
    let names = parse(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    Ok(names.map_or(0, |n| n.len()))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    let flags = crate::sys::syscall!(fcntl(fd, libc::F_GETFD))?;
    if flags & libc::FD_CLOEXEC == 0 {
        crate::sys::syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
    ) -> Result<Option<Vec<String>>, ActivationError> {
        parse(
            pid.map(OsStr::new),
            fds.map(OsStr::new),
            names.map(OsStr::new),
            42,
        )
    }

    #[test]
    fn not_for_us() {
        assert!(p(None, Some("2"), None).unwrap().is_none());
        assert!(p(Some("41"), Some("2"), None).unwrap().is_none());
        assert!(p(Some("42"), None, None).unwrap().is_none());
    }

    #[test]
    fn names_default_to_unknown() {
        assert_eq!(
            p(Some("42"), Some("2"), None).unwrap().unwrap(),
            ["unknown", "unknown"]
        );
        assert_eq!(
            p(Some("42"), Some("2"), Some("http:fcgi"))
                .unwrap()
                .unwrap(),
            ["http", "fcgi"]
        );
        assert!(p(Some("42"), Some("0"), Some(""))
            .unwrap()
            .unwrap()
            .is_empty());
        // An empty name among others is a name (systemd allows it to be empty).
        assert_eq!(
            p(Some("42"), Some("2"), Some(":fcgi")).unwrap().unwrap(),
            ["", "fcgi"]
        );
    }

    #[test]
    fn malformed_is_an_error_naming_the_variable() {
        for bad in [
            "",
            "x",
            "-1",
            "0",
            " 42",
            "42 ",
            "+42",
            "99999999999999999999",
        ] {
            let e = p(Some(bad), Some("1"), None).unwrap_err();
            assert!(matches!(e, ActivationError::BadPid(_)), "{bad:?}");
            assert!(e.to_string().contains("LISTEN_PID"), "{e}");
        }
        for bad in ["", "x", "-1", "4097", "1 "] {
            let e = p(Some("42"), Some(bad), None).unwrap_err();
            assert!(matches!(e, ActivationError::BadCount(_)), "{bad:?}");
            assert!(e.to_string().contains("LISTEN_FDS"), "{e}");
        }
        let e = p(Some("42"), Some("2"), Some("http")).unwrap_err();
        assert!(matches!(e, ActivationError::NameCount { fds: 2, names: 1 }));
        assert!(e.to_string().contains("LISTEN_FDNAMES"), "{e}");
        let e = p(Some("42"), Some("1"), Some("a:b")).unwrap_err();
        assert!(matches!(e, ActivationError::NameCount { fds: 1, names: 2 }));
    }

    #[test]
    fn names_map_to_protocols() {
        assert_eq!(proto_for_name("fcgi"), Proto::Fcgi);
        for n in ["http", "unknown", "", "FCGI", "web"] {
            assert_eq!(proto_for_name(n), Proto::Http, "{n:?}");
        }
    }
}
