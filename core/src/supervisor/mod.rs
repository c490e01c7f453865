//! The supervisor of worker processes (nginx's master, PHP-FPM's pool manager): binds every
//! listener once, runs N worker processes that serve them (forked, or executed commands
//! handed the listeners the systemd way), replaces the dead, recycles after a request count
//! or above an RSS limit, grows and shrinks a dynamic pool, kills workers whose loop stopped
//! moving (watchdog), reloads (SIGHUP) and re-executes itself (SIGUSR2) without failing a
//! request, drops privileges, and serves its status from its own loop.
//!
//! Listeners: each TCP address gets one SO_REUSEPORT socket per base slot, which the
//! supervisor keeps open and hands to each worker of that slot in turn: the kernel spreads
//! connections over the slots even at light load, and a worker that retires or dies leaves
//! its slot's accept queue to the next one (the supervisor's fd keeps the socket, and its
//! queue, alive). Unix sockets and inherited fds are one socket shared by every worker.
//! See ARCHITECTURE.md.
//!
//! Workers and supervisor share a page ([`shm`]): the worker's loop bumps a heartbeat per
//! iteration and its servers count requests there, with no syscall; a pipe tells the
//! supervisor when the worker serves. Retiring is SIGTERM (the worker's graceful shutdown),
//! then SIGKILL after the drain timeout.

mod pool;
mod proc;
mod reexec;
pub(crate) mod shm;
mod spawn;
mod status;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::{Addr, ListenOptions, Listener};
use crate::reactor::Loop;
use crate::server::{Proto, Server, ServerOptions};
use crate::Request;
use crate::Response;

pub use status::{PoolStatus, WorkerState, WorkerStatus};

/// How the supervisor runs its pool.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// Workers always running (static pool size, or a dynamic pool's minimum); at least 1.
    /// Each is a slot with its own SO_REUSEPORT socket per TCP listener.
    pub workers: usize,
    /// A dynamic pool's maximum: more than `workers` makes the pool grow when every worker
    /// has had a request in flight for `grow_after`, and shrink workers above `workers`
    /// idle for `idle_timeout`. Extra workers accept from the base slots' sockets.
    pub max_workers: usize,
    /// A worker retires after this many requests (0: never).
    pub max_requests: u64,
    /// A worker retires above this resident size in bytes (0: never; Linux).
    pub max_rss: u64,
    /// A worker whose loop has not moved for this long is killed and replaced.
    pub watchdog: Option<Duration>,
    /// A retiring worker is SIGKILLed after this long.
    pub drain_timeout: Duration,
    /// Dynamic pool: how long every worker must be busy before one more starts.
    pub grow_after: Duration,
    /// Dynamic pool: an extra worker idle this long retires.
    pub idle_timeout: Duration,
    /// A request running longer than this counts as slow in the status (PHP-FPM's
    /// `request_slowlog_timeout`).
    pub slow_request: Duration,
    /// Run workers as this user (setgid, setgroups, setuid after the listeners are bound).
    pub user: Option<String>,
    /// ... and this group (default: the user's).
    pub group: Option<String>,
    /// chroot workers into this directory before switching user.
    pub chroot: Option<PathBuf>,
    /// The pool's name in the status.
    pub pool_name: String,
    /// listen(2) backlog of the sockets the supervisor binds.
    pub backlog: i32,
}

impl Default for SupervisorOptions {
    fn default() -> SupervisorOptions {
        SupervisorOptions {
            workers: 1,
            max_workers: 0,
            max_requests: 0,
            max_rss: 0,
            watchdog: None,
            drain_timeout: Duration::from_secs(10),
            grow_after: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(10),
            slow_request: Duration::from_secs(5),
            user: None,
            group: None,
            chroot: None,
            pool_name: "www".into(),
            backlog: 4096,
        }
    }
}

/// A listener as the supervisor bound it.
pub(crate) struct Bound {
    /// The address asked for (matched against inherited listeners after a re-exec).
    pub(crate) spec: Addr,
    /// The address it got.
    pub(crate) addr: Addr,
    pub(crate) proto: Proto,
    /// HTTPS: bound plain here, wrapped in TLS by each worker ([`Supervisor::listen_tls`]).
    pub(crate) tls: bool,
    /// One socket per base slot (TCP), or one shared by all.
    pub(crate) socks: Vec<Listener>,
}

/// What a worker gets: the listeners of its slot, as inherited fds (`Addr::Fd`).
pub struct Worker {
    listeners: Vec<(Addr, Proto)>,
    https: Vec<bool>,
    slot: usize,
}

impl Worker {
    /// The listeners to serve: `fd:N` addresses to bind as they are
    /// ([`Listener::bind`], `myriad_server_listen`).
    pub fn listeners(&self) -> &[(Addr, Proto)] {
        &self.listeners
    }

    /// Whether listener `i` of [`Worker::listeners`] was bound with
    /// [`Supervisor::listen_tls`]: serve it with `Server::listen_tls` and the worker's own
    /// certificates.
    pub fn is_https(&self, i: usize) -> bool {
        self.https.get(i).copied().unwrap_or(false)
    }

    /// The worker's slot (0..workers; extra workers of a dynamic pool count on).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Serves `handler` on a new loop over this worker's listeners until SIGTERM or SIGINT
    /// (graceful shutdown: in-flight requests finish, idle keep-alive connections close,
    /// the last responses say `Connection: close`). Returns the exit code (0).
    pub fn serve(
        &self,
        opts: ServerOptions,
        handler: impl Fn(&mut Loop, &mut Request, Response) + 'static,
    ) -> io::Result<i32> {
        let mut lp = Loop::new()?;
        let srv = lp.server(opts, handler);
        self.serve_on(&mut lp, &srv)?;
        lp.run()?;
        Ok(0)
    }

    /// Adds this worker's listeners to `srv` and makes SIGTERM/SIGINT shut it down
    /// gracefully and stop `lp`. Run the loop afterwards.
    /// Errors: `InvalidInput` if a listener is HTTPS (it needs the worker's certificates:
    /// add it with `Server::listen_tls`, see [`Worker::is_https`]).
    pub fn serve_on(&self, lp: &mut Loop, srv: &Server) -> io::Result<()> {
        if self.https.iter().any(|t| *t) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an HTTPS listener needs the worker's TLS acceptor (Server::listen_tls)",
            ));
        }
        for (a, p) in &self.listeners {
            let l = Listener::bind(a, &ListenOptions::default())?;
            srv.listen(lp, l, *p);
        }
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let srv = srv.clone();
            lp.watch_signal(sig, move |lp, _| srv.shutdown(lp, |lp| lp.stop()))?;
        }
        Ok(())
    }
}

type Hook = Box<dyn FnMut()>;

/// The supervisor: configure, bind listeners, then [`Supervisor::run`].
pub struct Supervisor {
    opts: SupervisorOptions,
    bound: Vec<Bound>,
    status: Vec<(Addr, Listener)>,
    reload: Option<Hook>,
    reopen: Option<Hook>,
    inherited: reexec::Inherited,
    exe: Option<PathBuf>,
    args: Vec<OsString>,
}

impl Supervisor {
    /// A supervisor with these options. After a SIGUSR2 re-exec, it finds the listeners
    /// and workers of the image before it in the environment.
    pub fn new(opts: SupervisorOptions) -> Supervisor {
        Supervisor {
            opts,
            bound: Vec::new(),
            status: Vec::new(),
            reload: None,
            reopen: None,
            inherited: reexec::Inherited::from_env(),
            exe: std::env::current_exe().ok(),
            args: std::env::args_os().collect(),
        }
    }

    /// Checks what can be checked before binding: the user (and group) exist and this
    /// process can become them. Errors: NotFound (unknown user or group), PermissionDenied.
    pub fn validate(&self) -> io::Result<()> {
        if let Some(u) = &self.opts.user {
            proc::can_switch(&proc::resolve_user(u, self.opts.group.as_deref())?)?;
        }
        Ok(())
    }

    /// Binds `addr` for `proto` now (privileged ports and socket paths are created once,
    /// before any privilege drop): TCP gets one SO_REUSEPORT socket per slot. Returns the
    /// bound address (the real port for port 0). After a re-exec, the socket the former
    /// image bound for the same address is taken over instead.
    pub fn listen(&mut self, addr: &Addr, proto: Proto) -> io::Result<Addr> {
        let n = self.opts.workers.max(1);
        let b = match self.inherited.take_listener(addr, Some(proto)) {
            Some(b) => reexec::grow(b, n, self.opts.backlog)?,
            None => bind_slots(addr, proto, n, self.opts.backlog)?,
        };
        let a = b.addr.clone();
        self.bound.push(b);
        Ok(a)
    }

    /// Binds an HTTPS listener: plain sockets here (one per slot, as [`Supervisor::listen`]),
    /// wrapped in TLS by each worker with certificates it loads itself — so a SIGHUP
    /// reload, which replaces every worker, reads them again. A worker sees it as
    /// [`Worker::is_https`]; an executed worker gets it named `https` in LISTEN_FDNAMES.
    pub fn listen_tls(&mut self, addr: &Addr) -> io::Result<Addr> {
        let a = self.listen(addr, Proto::Http)?;
        if let Some(b) = self.bound.last_mut() {
            b.tls = true;
        }
        Ok(a)
    }

    /// Binds a status listener, served by the supervisor's own loop (reachable when every
    /// worker is busy): `GET` any path answers JSON, a path ending in `/metrics` or a query
    /// with `openmetrics` answers OpenMetrics text. Returns the bound address.
    pub fn status_listen(&mut self, addr: &Addr) -> io::Result<Addr> {
        let l = match self.inherited.take_listener(addr, None) {
            Some(b) => b.socks.into_iter().next().expect("one socket"),
            None => Listener::bind(
                addr,
                &ListenOptions {
                    backlog: self.opts.backlog,
                    ..Default::default()
                },
            )?,
        };
        let a = bound_addr(&l);
        self.status.push((addr.clone(), l));
        Ok(a)
    }

    /// Runs `f` in the supervisor on SIGHUP, before the workers are replaced (re-read the
    /// configuration: forked workers inherit what it set).
    pub fn on_reload(&mut self, f: impl FnMut() + 'static) {
        self.reload = Some(Box::new(f));
    }

    /// Runs `f` in the supervisor on SIGUSR1 (reopen log files); workers get SIGUSR1 too.
    pub fn on_reopen(&mut self, f: impl FnMut() + 'static) {
        self.reopen = Some(Box::new(f));
    }

    /// Runs the pool with forked workers, each calling `worker` (in the child; its return
    /// value is the child's exit code) until SIGTERM/SIGINT has drained them all. Returns
    /// the supervisor's exit code (0 after a graceful stop). Errors: no listener, an unknown
    /// user, a user this process cannot become, or a worker that could not switch to it.
    pub fn run(self, worker: impl FnMut(&Worker) -> i32 + 'static) -> io::Result<i32> {
        pool::run(self, pool::Mode::Fork(Box::new(worker)))
    }

    /// Runs the pool with workers that execute `argv` (exec mode, for hosts that cannot
    /// fork safely): each gets the listeners as fds 3.. with LISTEN_FDS, LISTEN_PID and
    /// LISTEN_FDNAMES (`http` / `fcgi`), and its supervisor page in `MYRIAD_SUPERVISOR`
    /// (a myriad loop in that process finds it by itself).
    pub fn run_exec(self, argv: Vec<OsString>) -> io::Result<i32> {
        if argv.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        }
        pool::run(self, pool::Mode::Exec(argv))
    }
}

/// Checks that `user` (and `group`, else the user's) exists and that this process can
/// become it (it is root, or already that user). Errors: NotFound (unknown user or group),
/// PermissionDenied.
pub fn check_user(user: &str, group: Option<&str>) -> io::Result<()> {
    proc::can_switch(&proc::resolve_user(user, group)?)
}

/// The real address of a listener (an inherited fd's from getsockname).
pub(crate) fn bound_addr(l: &Listener) -> Addr {
    match l.addr() {
        Addr::Fd(fd) => match crate::net::local_addr(*fd) {
            Ok(crate::net::PeerAddr::Inet(a)) => Addr::Tcp(a),
            _ => l.addr().clone(),
        },
        a => a.clone(),
    }
}

/// Binds `addr` once per slot (TCP, SO_REUSEPORT) or once for all.
fn bind_slots(addr: &Addr, proto: Proto, n: usize, backlog: i32) -> io::Result<Bound> {
    let opts = ListenOptions {
        backlog,
        reuseport: matches!(addr, Addr::Tcp(_)),
        ..Default::default()
    };
    let first = Listener::bind(addr, &opts)?;
    let got = bound_addr(&first);
    let mut socks = vec![first];
    if let Addr::Tcp(_) = addr {
        for _ in 1..n {
            socks.push(Listener::bind(&got, &opts)?);
        }
    }
    Ok(Bound {
        spec: addr.clone(),
        addr: got,
        proto,
        tls: false,
        socks,
    })
}
