//! The supervisor's state machine on its own loop: workers started, ready, retiring and
//! reaped; slots and their crash backoff; recycling, the watchdog, the dynamic pool; the
//! signals (HUP reload, USR2 re-exec, TERM/INT drain, QUIT fast stop, USR1 reopen).

use std::cell::RefCell;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant, SystemTime};

use super::proc::{self, Creds};
use super::shm::Shm;
use super::{reexec, Bound, Supervisor, SupervisorOptions, Worker};
use crate::net::{Addr, Listener};
use crate::reactor::{Loop, Token};

/// How often the supervisor looks at its workers.
const TICK: Duration = Duration::from_millis(100);
/// A crash within this long of a worker's start counts towards the backoff.
const STABLE: Duration = Duration::from_secs(1);
/// The longest wait before restarting a crash-looping slot.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// How workers are made.
pub(crate) enum Mode {
    /// Forked; the closure runs in the child.
    Fork(Box<dyn FnMut(&Worker) -> i32>),
    /// Executed: this command.
    Exec(Vec<OsString>),
}

/// Why a worker is asked to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    Reload,
    MaxRequests,
    Rss,
    Reexec,
    Shrink,
    Stop,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Reload => "reload",
            Why::MaxRequests => "max requests",
            Why::Rss => "memory limit",
            Why::Reexec => "re-exec",
            Why::Shrink => "idle",
            Why::Stop => "stop",
        }
    }
}

/// A worker process.
pub(crate) struct Child {
    pub(crate) pid: libc::pid_t,
    pub(crate) slot: usize,
    pub(crate) extra: bool,
    pub(crate) page: Shm,
    /// The supervisor's end of the worker's socketpair, watched.
    pub(crate) notify: Option<(Token, OwnedFd)>,
    pub(crate) ready: bool,
    /// Asked to go (it goes once a replacement is ready).
    pub(crate) retire: Option<Why>,
    /// SIGTERM sent.
    pub(crate) term_at: Option<Instant>,
    /// SIGKILL sent.
    pub(crate) killed: bool,
    pub(crate) watchdogged: bool,
    pub(crate) started: SystemTime,
    pub(crate) started_at: Instant,
    pub(crate) hb: u64,
    pub(crate) hb_at: Instant,
    pub(crate) pinged_at: Instant,
    pub(crate) req_seq: u32,
    pub(crate) req_at: Instant,
    pub(crate) slow_counted: bool,
    pub(crate) last_requests: u64,
    pub(crate) idle_at: Instant,
    pub(crate) rss: u64,
}

impl Child {
    /// Counts as capacity: not told to stop, not killed.
    fn live(&self) -> bool {
        !self.killed && self.term_at.is_none()
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.page.page().in_flight.load(Relaxed).max(0) as u64
    }

    pub(crate) fn requests(&self) -> u64 {
        self.page.page().requests.load(Relaxed)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Running,
    Draining,
    Fast,
}

pub(crate) struct Slot {
    pub(crate) failures: u32,
    pub(crate) next_spawn: Instant,
    /// Workers started for it.
    pub(crate) started: u64,
}

/// Everything the supervisor's callbacks share.
pub(crate) struct State {
    pub(crate) opts: SupervisorOptions,
    pub(crate) bound: Vec<Bound>,
    pub(crate) status: Vec<(Addr, Listener)>,
    pub(crate) reload: Option<super::Hook>,
    pub(crate) reopen: Option<super::Hook>,
    pub(crate) mode: Mode,
    pub(crate) exe: Option<std::path::PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) creds: Option<Creds>,
    pub(crate) chroot: Option<CString>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) children: Vec<Child>,
    pub(crate) phase: Phase,
    pub(crate) started: SystemTime,
    /// Requests of workers gone (the pool's total counts them too).
    pub(crate) gone_requests: u64,
    pub(crate) max_active: usize,
    pub(crate) slow_requests: u64,
    pub(crate) respawns: u64,
    pub(crate) busy_since: Option<Instant>,
    pub(crate) next_extra: usize,
    pub(crate) loop_fds: Vec<RawFd>,
    /// The application's fds when `run` began (a forked worker keeps them; it closes any
    /// other fd of the supervisor's).
    pub(crate) app_fds: Vec<RawFd>,
    pub(crate) fatal: Option<String>,
    pub(crate) reloading: bool,
    pub(crate) last_rss: Instant,
    /// systemd's notification socket (NOTIFY_SOCKET), when started by a manager.
    pub(crate) notifier: Option<crate::systemd::Notifier>,
    /// READY=1 was sent (the first time every slot served).
    pub(crate) announced: bool,
    pub(crate) last_status: String,
    last_status_at: Instant,
    pub(crate) me: libc::pid_t,
}

pub(crate) type Shared = Rc<RefCell<State>>;

/// Runs the pool until it has stopped.
pub(crate) fn run(mut sup: Supervisor, mode: Mode) -> io::Result<i32> {
    if sup.bound.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "supervisor: no listener",
        ));
    }
    let creds = match &sup.opts.user {
        Some(u) => {
            let c = proc::resolve_user(u, sup.opts.group.as_deref())?;
            proc::can_switch(&c)?;
            Some(c)
        }
        None => None,
    };
    let chroot = match &sup.opts.chroot {
        Some(p) => Some(
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in chroot path"))?,
        ),
        None => None,
    };
    sup.inherited.close_unclaimed();
    let mut lp = Loop::with_backend(if cfg!(target_os = "linux") {
        "epoll"
    } else {
        ""
    })?;
    proc::forward_signals_here()?;
    let mut app_fds = proc::open_fds().unwrap_or_default();
    let mine: Vec<RawFd> = (sup
        .bound
        .iter()
        .flat_map(|b| b.socks.iter().map(|l| l.fd())))
    .chain(sup.status.iter().map(|(_, l)| l.fd()))
    .chain(lp.own_fds())
    .collect();
    app_fds.retain(|fd| !mine.contains(fd));
    let now = Instant::now();
    let base = sup.opts.workers.max(1);
    let mut opts = sup.opts.clone();
    opts.workers = base;
    opts.max_workers = opts.max_workers.max(base);
    let st = Rc::new(RefCell::new(State {
        opts,
        bound: std::mem::take(&mut sup.bound),
        status: std::mem::take(&mut sup.status),
        reload: sup.reload.take(),
        reopen: sup.reopen.take(),
        mode,
        exe: sup.exe.take(),
        args: std::mem::take(&mut sup.args),
        creds,
        chroot,
        slots: (0..base)
            .map(|_| Slot {
                failures: 0,
                next_spawn: now,
                started: 0,
            })
            .collect(),
        children: Vec::new(),
        phase: Phase::Running,
        started: SystemTime::now(),
        gone_requests: 0,
        max_active: 0,
        slow_requests: 0,
        respawns: 0,
        busy_since: None,
        next_extra: 0,
        loop_fds: lp.own_fds(),
        app_fds,
        fatal: None,
        reloading: false,
        last_rss: now,
        notifier: match crate::systemd::Notifier::from_env(false) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("supervisor: NOTIFY_SOCKET: {e}");
                None
            }
        },
        announced: false,
        last_status: String::new(),
        last_status_at: now,
        // SAFETY: getpid cannot fail.
        me: unsafe { libc::getpid() },
    }));
    adopt(&st, &mut sup.inherited);
    for sig in proc::SIGNALS {
        let st = st.clone();
        lp.watch_signal(sig, move |lp, s| on_signal(lp, &st, s))?;
    }
    super::status::serve(&mut lp, &st);
    if let Err(e) = crate::systemd::start_watchdog(&mut lp) {
        log::warn!("supervisor: systemd watchdog: {e}");
    }
    {
        let st = st.clone();
        lp.repeat(TICK, TICK, move |lp, _| tick(lp, &st));
    }
    tick(&mut lp, &st);
    // systemd: WATCHDOG=1 from this loop when WatchdogSec= asks (READY/STATUS: in tick).
    crate::systemd::start_watchdog(&mut lp)?;
    lp.run()?;
    let mut s = st.borrow_mut();
    if let Some(f) = s.fatal.take() {
        return Err(io::Error::other(f));
    }
    log::info!("supervisor: stopped");
    Ok(0)
}

/// Takes over the workers of the image before a re-exec: they serve until replaced.
fn adopt(st: &Shared, inh: &mut reexec::Inherited) {
    let mut s = st.borrow_mut();
    let now = Instant::now();
    for w in inh.workers.drain(..) {
        let page = match Shm::map(w.shm) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("re-exec: worker {}: cannot map its page: {e}", w.pid);
                continue;
            }
        };
        let ready = page.page().ready.load(Acquire) == 1;
        let slot = w.slot.min(s.slots.len() - 1);
        s.slots[slot].started += 1;
        log::info!("re-exec: adopted worker {} (slot {slot})", w.pid);
        s.children.push(Child {
            pid: w.pid,
            slot,
            extra: w.extra,
            page,
            notify: None,
            ready,
            retire: Some(Why::Reexec),
            term_at: None,
            killed: false,
            watchdogged: false,
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(w.started_ms),
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
    }
}

fn on_signal(lp: &mut Loop, st: &Shared, sig: i32) {
    match sig {
        libc::SIGCHLD => {}
        libc::SIGHUP => reload(st),
        libc::SIGUSR2 => reexec_now(st),
        libc::SIGUSR1 => {
            let hook = st.borrow_mut().reopen.take();
            if let Some(mut h) = hook {
                h();
                st.borrow_mut().reopen = Some(h);
            }
        }
        libc::SIGTERM | libc::SIGINT => {
            let phase = st.borrow().phase;
            if phase == Phase::Running {
                stop(st, false);
            } else {
                stop(st, true);
            }
        }
        libc::SIGQUIT => stop(st, true),
        _ => {}
    }
    tick(lp, st);
}

fn reload(st: &Shared) {
    if st.borrow().phase != Phase::Running {
        return;
    }
    log::info!("supervisor: reload (SIGHUP)");
    let _ = crate::systemd::notify_reloading();
    let hook = st.borrow_mut().reload.take();
    if let Some(mut h) = hook {
        h();
        st.borrow_mut().reload = Some(h);
    }
    let mut s = st.borrow_mut();
    s.notify(|n| n.reloading());
    s.reloading = true;
    for c in s.children.iter_mut().filter(|c| c.live()) {
        c.retire.get_or_insert(Why::Reload);
    }
}

fn reexec_now(st: &Shared) {
    let s = st.borrow();
    if s.phase != Phase::Running {
        return;
    }
    let Some(exe) = s.exe.clone() else {
        log::error!("supervisor: re-exec: the program's path is unknown");
        return;
    };
    log::info!("supervisor: re-exec of {} (SIGUSR2)", exe.display());
    let workers: Vec<reexec::Handover> = (s.children.iter())
        .filter(|c| !c.killed)
        .map(|c| reexec::Handover {
            pid: c.pid,
            slot: c.slot,
            extra: c.extra,
            shm: c.page.fd(),
            started_ms: c
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        })
        .collect();
    let e = reexec::exec(&exe, &s.args, &s.bound, &s.status, &workers);
    log::error!("supervisor: re-exec of {} failed: {e}", exe.display());
}

fn stop(st: &Shared, fast: bool) {
    let _ = crate::systemd::notify("STOPPING=1");
    let mut s = st.borrow_mut();
    if fast {
        log::info!("supervisor: fast stop");
        s.phase = Phase::Fast;
        for c in s.children.iter_mut().filter(|c| !c.killed) {
            proc::kill(c.pid, libc::SIGKILL);
            c.killed = true;
        }
    } else {
        log::info!(
            "supervisor: graceful stop: draining {} workers",
            s.children.len()
        );
        s.phase = Phase::Draining;
        s.notify(|n| n.stopping());
        let now = Instant::now();
        for c in s.children.iter_mut().filter(|c| c.live()) {
            c.retire = Some(Why::Stop);
            proc::kill(c.pid, libc::SIGTERM);
            c.term_at = Some(now);
        }
    }
}

/// Everything periodic, and after every event: reap, watch, recycle, reconcile.
fn tick(lp: &mut Loop, st: &Shared) {
    reap(lp, st);
    {
        let mut s = st.borrow_mut();
        let now = Instant::now();
        s.watch(now);
        if s.phase == Phase::Running {
            s.recycle(now);
        }
        s.expire(now);
    }
    reconcile(lp, st);
    st.borrow_mut().report(Instant::now());
    let s = st.borrow();
    // systemd: READY=1 once every slot's worker serves, STATUS= when it changes.
    let ready = (s.children.iter())
        .filter(|c| c.live() && c.ready && c.retire.is_none())
        .count();
    let what = match s.phase {
        Phase::Running if s.reloading => "reloading",
        Phase::Running => "serving",
        _ => "draining",
    };
    crate::systemd::service_state(
        s.phase == Phase::Running && ready >= s.slots.len(),
        &format!("{what}: {ready} of {} workers ready", s.slots.len()),
    );
    if s.fatal.is_some() || (s.phase != Phase::Running && s.children.is_empty()) {
        lp.stop();
    }
}

impl State {
    /// Sends a notification to systemd, if it listens (a failure is logged).
    fn notify(&self, f: impl FnOnce(&crate::systemd::Notifier) -> io::Result<()>) {
        if let Some(n) = &self.notifier {
            if let Err(e) = f(n) {
                log::warn!("supervisor: sd_notify: {e}");
            }
        }
    }

    /// READY=1 once every slot serves (the first time), and STATUS= when it changed (at
    /// most once a second).
    fn report(&mut self, now: Instant) {
        if self.notifier.is_none() || self.phase != Phase::Running {
            return;
        }
        let serving = (self.children.iter())
            .filter(|c| c.live() && c.ready)
            .count();
        let busy = (self.children.iter())
            .filter(|c| c.live() && c.ready && c.in_flight() > 0)
            .count();
        let first = !self.announced && serving >= self.slots.len();
        if first {
            self.announced = true;
            self.notify(|n| n.ready());
        }
        let line = format!(
            "{serving} workers serving ({busy} busy), {} requests",
            self.gone_requests + self.children.iter().map(|c| c.requests()).sum::<u64>()
        );
        if line != self.last_status && (first || now - self.last_status_at >= STABLE) {
            self.notify(|n| n.status(&line));
            self.last_status = line;
            self.last_status_at = now;
        }
    }

    /// The watchdog and slow requests; pings idle workers so that their loops move.
    fn watch(&mut self, now: Instant) {
        let wd = self.opts.watchdog;
        let slow = self.opts.slow_request;
        let mut slow_new = 0;
        for c in self.children.iter_mut().filter(|c| !c.killed && c.ready) {
            let p = c.page.page();
            let hb = p.heartbeat.load(Relaxed);
            if hb != c.hb {
                c.hb = hb;
                c.hb_at = now;
            }
            let (seq, _) = (p.current().0, ());
            if seq != c.req_seq {
                c.req_seq = seq;
                c.req_at = now;
                c.slow_counted = false;
            } else if !c.slow_counted && c.in_flight() > 0 && now - c.req_at >= slow {
                c.slow_counted = true;
                slow_new += 1;
            }
            let Some(wd) = wd else { continue };
            if now - c.hb_at >= wd {
                let (_, req) = p.current();
                let running = if c.in_flight() > 0 {
                    format!("running {req:?}")
                } else {
                    format!("last request {req:?}")
                };
                log::error!(
                    "supervisor: watchdog: worker {} (slot {}) has not moved for {:.1}s, {running}; killing it",
                    c.pid,
                    c.slot,
                    (now - c.hb_at).as_secs_f64()
                );
                eprintln!(
                    "myriad supervisor: watchdog: worker {} stuck for {}s, {running}: killed",
                    c.pid,
                    wd.as_secs()
                );
                proc::kill(c.pid, libc::SIGKILL);
                c.killed = true;
                c.watchdogged = true;
            } else if now - c.hb_at >= wd / 3 && now - c.pinged_at >= wd / 3 {
                c.pinged_at = now;
                if let Some((_, fd)) = &c.notify {
                    // SAFETY: one byte from a static buffer to a socket we own.
                    unsafe {
                        libc::send(
                            fd.as_raw_fd(),
                            b"p".as_ptr().cast(),
                            1,
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                }
            }
        }
        self.slow_requests += slow_new;
    }

    /// max_requests, RSS limit, idle extra workers.
    fn recycle(&mut self, now: Instant) {
        let (maxr, maxrss, idle) = (
            self.opts.max_requests,
            self.opts.max_rss,
            self.opts.idle_timeout,
        );
        let read_rss = now - self.last_rss >= Duration::from_secs(1);
        if read_rss {
            self.last_rss = now;
        }
        for c in self.children.iter_mut().filter(|c| c.live() && c.ready) {
            if read_rss {
                c.rss = proc::rss_bytes(c.pid).unwrap_or(0);
            }
            if c.retire.is_some() {
                continue;
            }
            let reqs = c.requests();
            if maxr > 0 && reqs >= maxr {
                c.retire = Some(Why::MaxRequests);
            } else if maxrss > 0 && c.rss > maxrss {
                log::info!(
                    "supervisor: worker {} uses {} KiB, above the limit",
                    c.pid,
                    c.rss / 1024
                );
                c.retire = Some(Why::Rss);
            } else if c.extra {
                if reqs != c.last_requests || c.in_flight() > 0 {
                    c.last_requests = reqs;
                    c.idle_at = now;
                } else if now - c.idle_at >= idle {
                    c.retire = Some(Why::Shrink);
                }
            }
        }
    }

    /// Retiring workers past the drain timeout are killed.
    fn expire(&mut self, now: Instant) {
        let dt = self.opts.drain_timeout;
        for c in self.children.iter_mut().filter(|c| !c.killed) {
            if let Some(t) = c.term_at {
                if now - t >= dt {
                    log::warn!(
                        "supervisor: worker {} still draining after {:.1}s: killing it",
                        c.pid,
                        dt.as_secs_f64()
                    );
                    proc::kill(c.pid, libc::SIGKILL);
                    c.killed = true;
                }
            }
        }
    }

    fn terminate(&mut self, i: usize, now: Instant) {
        let c = &mut self.children[i];
        log::info!(
            "supervisor: retiring worker {} (slot {}): {}",
            c.pid,
            c.slot,
            c.retire.map_or("stop", Why::as_str)
        );
        proc::kill(c.pid, libc::SIGTERM);
        c.term_at = Some(now);
    }
}

/// Collects ended workers.
fn reap(lp: &mut Loop, st: &Shared) {
    while let Some((pid, status)) = proc::reap() {
        let mut s = st.borrow_mut();
        let Some(i) = s.children.iter().position(|c| c.pid == pid) else {
            continue;
        };
        let c = s.children.remove(i);
        if let Some((t, _)) = &c.notify {
            lp.unwatch(*t);
        }
        s.gone_requests += c.requests();
        let text = proc::exit_text(status);
        let expected = c.term_at.is_some() || (c.killed && !c.watchdogged);
        if expected {
            log::info!("supervisor: worker {pid} (slot {}) {text}", c.slot);
            continue;
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == proc::EXIT_CREDS && !c.ready {
            let msg = format!(
                "supervisor: worker {pid} could not switch to its user; stopping (workers never serve with the supervisor's credentials)"
            );
            log::error!("{msg}");
            s.fatal = Some(msg);
            drop(s);
            stop(st, true);
            continue;
        }
        log::warn!("supervisor: worker {pid} (slot {}) {text}", c.slot);
        eprintln!("myriad supervisor: worker {pid} (slot {}) {text}", c.slot);
        if c.extra || s.phase != Phase::Running {
            continue;
        }
        let now = Instant::now();
        let slot = &mut s.slots[c.slot];
        if c.ready && now - c.started_at >= STABLE {
            slot.failures = 0;
        }
        slot.failures += 1;
        let delay = if slot.failures <= 1 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * (1 << (slot.failures - 2).min(5))).min(MAX_BACKOFF)
        };
        if !delay.is_zero() {
            log::warn!(
                "supervisor: slot {} crashed {} times in a row: next start in {} ms",
                c.slot,
                slot.failures,
                delay.as_millis()
            );
        }
        slot.next_spawn = now + delay;
    }
}

/// Starts what is missing, retires what has been replaced.
pub(crate) fn reconcile(lp: &mut Loop, st: &Shared) {
    let now = Instant::now();
    let mut spawn: Vec<(usize, bool)> = Vec::new();
    {
        let mut s = st.borrow_mut();
        if s.phase != Phase::Running {
            return;
        }
        let base = s.slots.len();
        for slot in 0..base {
            let fresh = |c: &Child| c.slot == slot && !c.extra && c.live() && c.retire.is_none();
            let any_fresh = s.children.iter().any(fresh);
            let fresh_ready = s.children.iter().any(|c| fresh(c) && c.ready);
            if !any_fresh && now >= s.slots[slot].next_spawn {
                spawn.push((slot, false));
            }
            let old: Vec<usize> = (0..s.children.len())
                .filter(|&i| {
                    let c = &s.children[i];
                    c.slot == slot && !c.extra && c.live() && c.retire.is_some()
                })
                .collect();
            for i in old {
                if fresh_ready || !s.children[i].ready {
                    s.terminate(i, now);
                }
            }
        }
        // Extra workers of a dynamic pool go without a replacement.
        for i in 0..s.children.len() {
            let c = &s.children[i];
            if c.extra && c.live() && c.retire.is_some() {
                s.terminate(i, now);
            }
        }
        let serving: Vec<&Child> = (s.children.iter())
            .filter(|c| c.live() && c.ready && c.retire.is_none())
            .collect();
        let active = serving.iter().filter(|c| c.in_flight() > 0).count();
        let all_busy = !serving.is_empty() && active == serving.len();
        s.max_active = s.max_active.max(active);
        let live = s.children.iter().filter(|c| c.live()).count();
        if s.opts.max_workers > base && all_busy && live < s.opts.max_workers {
            let since = *s.busy_since.get_or_insert(now);
            if now - since >= s.opts.grow_after {
                s.busy_since = None;
                let slot = s.next_extra % base;
                s.next_extra += 1;
                spawn.push((slot, true));
            }
        } else {
            s.busy_since = None;
        }
        if s.reloading
            && !s.children.iter().any(|c| c.retire == Some(Why::Reload))
            && s.children.iter().all(|c| c.ready || !c.live())
        {
            s.reloading = false;
            s.notify(|n| n.ready());
            log::info!("supervisor: reload done");
            let _ = crate::systemd::notify("READY=1");
        }
    }
    for (slot, extra) in spawn {
        if let Err(e) = super::spawn::spawn_worker(lp, st, slot, extra) {
            log::error!("supervisor: cannot start a worker for slot {slot}: {e}");
            let mut s = st.borrow_mut();
            s.slots[slot].next_spawn = now + Duration::from_secs(1);
        }
    }
}
