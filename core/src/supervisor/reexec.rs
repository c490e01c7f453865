//! Re-exec in place (SIGUSR2): the supervisor executes its program file as it is on disk
//! now, with the same pid and arguments; its listening sockets and its workers' pages cross
//! the exec as fds named in the environment, and the new image takes them over: the
//! listeners when the program asks for the same addresses again, the workers as adopted
//! ones that drain once their replacements are ready.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::{bind_slots, Bound};
use crate::net::{Addr, ListenOptions, Listener};
use crate::server::Proto;

/// Listeners: records of `KIND US SPEC US ADDR US FD,FD...` separated by RS.
const ENV_LISTENERS: &str = "MYRIAD_SUPERVISOR_LISTENERS";
/// Workers: records of `PID,SLOT,EXTRA,SHMFD,STARTED_UNIX_MS` separated by `;`.
const ENV_WORKERS: &str = "MYRIAD_SUPERVISOR_WORKERS";
const US: char = '\u{1f}';
const RS: char = '\u{1e}';

/// A listener of the former image.
struct InhListener {
    /// None: a status listener.
    proto: Option<Proto>,
    spec: String,
    fds: Vec<RawFd>,
}

/// A worker of the former image.
pub(crate) struct InhWorker {
    pub(crate) pid: libc::pid_t,
    pub(crate) slot: usize,
    pub(crate) extra: bool,
    pub(crate) shm: OwnedFd,
    pub(crate) started_ms: u64,
}

/// What the former image left (nothing unless this process was re-executed).
#[derive(Default)]
pub(crate) struct Inherited {
    listeners: Vec<Option<InhListener>>,
    pub(crate) workers: Vec<InhWorker>,
}

fn kind(p: Option<Proto>) -> &'static str {
    match p {
        Some(Proto::Http) => "http",
        Some(Proto::Fcgi) => "fcgi",
        None => "status",
    }
}

impl Inherited {
    /// Reads (and removes) the variables a re-exec left.
    pub(crate) fn from_env() -> Inherited {
        let mut inh = Inherited::default();
        if let Some(v) = std::env::var_os(ENV_LISTENERS) {
            std::env::remove_var(ENV_LISTENERS);
            for rec in v.to_string_lossy().split(RS).filter(|r| !r.is_empty()) {
                let f: Vec<&str> = rec.split(US).collect();
                if f.len() != 3 {
                    log::warn!("{ENV_LISTENERS}: bad record {rec:?}");
                    continue;
                }
                let proto = match f[0] {
                    "http" => Some(Proto::Http),
                    "fcgi" => Some(Proto::Fcgi),
                    _ => None,
                };
                let fds = f[2].split(',').filter_map(|n| n.parse().ok()).collect();
                inh.listeners.push(Some(InhListener {
                    proto,
                    spec: f[1].to_string(),
                    fds,
                }));
            }
        }
        if let Some(v) = std::env::var_os(ENV_WORKERS) {
            std::env::remove_var(ENV_WORKERS);
            for rec in v.to_string_lossy().split(';').filter(|r| !r.is_empty()) {
                let f: Vec<u64> = rec.split(',').filter_map(|n| n.parse().ok()).collect();
                if f.len() != 5 {
                    log::warn!("{ENV_WORKERS}: bad record {rec:?}");
                    continue;
                }
                let fd = f[3] as RawFd;
                let _ = super::proc::set_cloexec(fd, true);
                inh.workers.push(InhWorker {
                    pid: f[0] as libc::pid_t,
                    slot: f[1] as usize,
                    extra: f[2] != 0,
                    // SAFETY: the former image passed this fd to us and nothing else owns it.
                    shm: unsafe { OwnedFd::from_raw_fd(fd) },
                    started_ms: f[4],
                });
            }
        }
        inh
    }

    /// The former image's sockets for `spec` (first unclaimed match), as a [`Bound`].
    pub(crate) fn take_listener(&mut self, spec: &Addr, proto: Option<Proto>) -> Option<Bound> {
        let want = spec.to_string();
        let slot = self.listeners.iter_mut().find(|l| {
            l.as_ref()
                .is_some_and(|l| l.spec == want && kind(l.proto) == kind(proto))
        })?;
        let l = slot.take()?;
        let mut socks = Vec::new();
        for fd in l.fds {
            let _ = super::proc::set_cloexec(fd, true);
            match Listener::bind(&Addr::Fd(fd), &ListenOptions::default()) {
                Ok(s) => socks.push(s),
                Err(e) => log::warn!("re-exec: inherited fd {fd} for {want}: {e}"),
            }
        }
        let first = socks.first()?;
        Some(Bound {
            spec: spec.clone(),
            addr: super::bound_addr(first),
            proto: proto.unwrap_or(Proto::Http),
            tls: false,
            socks,
        })
    }

    /// Closes inherited listeners nobody asked for.
    pub(crate) fn close_unclaimed(&mut self) {
        for l in self.listeners.drain(..).flatten() {
            log::info!("re-exec: {} is no longer configured; closing it", l.spec);
            for fd in l.fds {
                // SAFETY: an fd the former image passed to us, owned by nothing here.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
}

/// Makes an inherited TCP listener have `n` slot sockets (binding more siblings on its
/// port, or closing the surplus).
pub(crate) fn grow(mut b: Bound, n: usize, backlog: i32) -> io::Result<Bound> {
    if !matches!(b.spec, Addr::Tcp(_)) {
        b.socks.truncate(1);
        return Ok(b);
    }
    b.socks.truncate(n);
    while b.socks.len() < n {
        let more = bind_slots(&b.addr, b.proto, 1, backlog)?;
        b.socks.extend(more.socks);
    }
    Ok(b)
}

/// A worker to hand over: pid, slot, extra, page fd, start time (Unix ms).
pub(crate) struct Handover {
    pub(crate) pid: libc::pid_t,
    pub(crate) slot: usize,
    pub(crate) extra: bool,
    pub(crate) shm: RawFd,
    pub(crate) started_ms: u64,
}

/// Executes `exe` with `args` in place, passing `bound`, `status` and `workers`. Returns
/// only on failure (every fd is close-on-exec again then).
pub(crate) fn exec(
    exe: &Path,
    args: &[OsString],
    bound: &[Bound],
    status: &[(Addr, Listener)],
    workers: &[Handover],
) -> io::Error {
    let mut fds = Vec::new();
    let mut lst = String::new();
    let mut rec = |proto: Option<Proto>, spec: &Addr, socks: &mut dyn Iterator<Item = RawFd>| {
        let list: Vec<String> = socks
            .map(|fd| {
                fds.push(fd);
                fd.to_string()
            })
            .collect();
        lst.push_str(&format!(
            "{}{US}{spec}{US}{}{RS}",
            kind(proto),
            list.join(",")
        ));
    };
    for b in bound {
        rec(Some(b.proto), &b.spec, &mut b.socks.iter().map(|s| s.fd()));
    }
    for (spec, l) in status {
        rec(None, spec, &mut std::iter::once(l.fd()));
    }
    let mut wk = String::new();
    for w in workers {
        fds.push(w.shm);
        wk.push_str(&format!(
            "{},{},{},{},{};",
            w.pid, w.slot, w.extra as u8, w.shm, w.started_ms
        ));
    }
    for &fd in &fds {
        if let Err(e) = super::proc::set_cloexec(fd, false) {
            log::warn!("re-exec: fd {fd}: {e}");
        }
    }
    super::spawn::flush_stdio();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args.iter().skip(1))
        .env(ENV_LISTENERS, lst)
        .env(ENV_WORKERS, wk);
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    let e = cmd.exec();
    for &fd in &fds {
        let _ = super::proc::set_cloexec(fd, true);
    }
    e
}
