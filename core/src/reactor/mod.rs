//! The event loop: one backend wait per iteration, then I/O dispatch, timers, posted
//! messages, and deferred callbacks. Sources (listeners, connections, fd watchers) live in a
//! slab indexed by [`Token`]; each is registered with the backend once, when added.

mod signal;
mod timer;
mod wake;

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use signal::{SignalFn, SignalId};
pub use timer::{TimerFn, TimerId};
pub use wake::{Closed, Handle, Posted};

use crate::net::pool::BufPool;
use crate::sys::{self, close_accepted, Backend, Change, Event, Interest, Op, Ready};

/// Token of the loop's own eventfd.
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;
/// Token of the loop's signalfd.
pub(crate) const SIGNAL_TOKEN: u64 = u64::MAX - 1;

/// Names a source registered on a loop: a slot index and a generation, so that a token of a
/// closed source never reaches the source that reuses its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub(crate) u64);

impl Token {
    fn new(slot: usize, gen: u32) -> Token {
        Token((u64::from(gen) << 32) | slot as u64)
    }
    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The token as an integer (for the C ABI).
    pub fn to_u64(self) -> u64 {
        self.0
    }
    /// Rebuilds a token from [`Token::to_u64`].
    pub fn from_u64(v: u64) -> Token {
        Token(v)
    }
}

/// Counters of the loop's own syscalls and iterations. Tests assert the loop's claims with
/// them; benchmarks print them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Loop iterations (one backend wait each).
    pub iterations: u64,
    /// Backend waits (`epoll_wait`, `io_uring_enter`).
    pub wait: u64,
    /// Interest changes made by syscall (`epoll_ctl`; io_uring's and kqueue's ride in their wait, so a
    /// kqueue counts only immediate removals of fds that stay open).
    pub ctl: u64,
    /// Reads (`read`/`recv`), including signalfd reads.
    pub read: u64,
    /// Connection input the backend received itself (io_uring receive completions, no
    /// syscall of their own), counted like reads.
    pub received: u64,
    /// Writes on connections: `send`/`sendmsg` calls, or on io_uring sends submitted by
    /// the next wait (no syscall of their own).
    pub write: u64,
    /// `accept4` calls, successful or not; for connections accepted through the ring
    /// ([`Loop::backend_accepts`]), the `getpeername` a TCP one needs instead.
    pub accept: u64,
    /// Everything else the loop calls: close, shutdown, socket options, signalfd...
    pub other: u64,
    /// Eventfd writes made by [`Handle::post`] / [`Handle::stop`] from any thread.
    pub wakeups: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// `sendfile` calls made for file responses (see [`crate::Response::write_file`]).
    pub sendfile: u64,
    /// File bytes sent by `sendfile`: from the page cache to the socket, never through
    /// user space.
    pub file_sent: u64,
    /// `pread` calls made for file output that must pass through user space (FastCGI
    /// records, a transport layer such as TLS).
    pub file_reads: u64,
    /// File bytes read into user space for such output (0 on a plain HTTP connection).
    pub file_copied: u64,
    /// Pool buffers held by connections right now (idle connections hold none).
    pub buffers_in_use: u64,
    /// Pool buffers kept for reuse.
    pub buffers_idle: u64,
}

/// What a source wants after handling an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait for the next event.
    Keep,
    /// Call again next iteration even without an event (work left after a bounded burst).
    Again,
    /// Close and remove the source.
    Remove,
    /// Swap the source for what its [`Source::take_over`] returns (a connection handed to
    /// another protocol), then call the new one at the end of the iteration.
    Replace,
}

/// Something registered on the loop.
pub(crate) trait Source: Any {
    /// Handles readiness (or `Ready::TIMER`, or `Ready::EMPTY` for an `Again` call).
    fn ready(&mut self, lp: &mut Loop, token: Token, ready: Ready) -> Next;
    /// A send the source queued with [`Loop::queue_send`] completed: `res` bytes were sent,
    /// or `res` is a negated errno.
    fn sent(&mut self, _lp: &mut Loop, _token: Token, _res: i32) -> Next {
        Next::Keep
    }
    /// The backend received input for the source (registered with `Interest::RECV`):
    /// `data` (`res` bytes), EOF (`res` 0) or a negated errno.
    fn received(&mut self, _lp: &mut Loop, _token: Token, _res: i32, _data: &[u8]) -> Next {
        Next::Keep
    }
    /// The backend accepted a connection for the source (registered with
    /// `Interest::ACCEPT`): `res` is the new fd, which the source now owns, or a negated
    /// errno (the accept then ended: [`Loop::recv_ctl`] starts it again).
    fn accepted(&mut self, _lp: &mut Loop, _token: Token, res: i32) -> Next {
        close_accepted(res);
        Next::Keep
    }
    /// The source is being removed (or the loop dropped): release fds and tell the owner.
    fn close(&mut self, lp: &mut Loop, token: Token);
    /// For downcasting in [`Loop::with_source`].
    fn as_any(&mut self) -> &mut dyn Any;
    /// Whether this source counts as a connection (for [`Loop::connection_count`]).
    fn is_connection(&self) -> bool {
        false
    }
    /// After [`Next::Replace`]: the source that takes this one's place, same token and
    /// registration (only connections return `Replace`; others return themselves).
    fn take_over(self: Box<Self>, lp: &mut Loop, token: Token) -> Box<dyn Source>;
}

struct Slot {
    gen: u32,
    /// Present unless free, or taken out while its callback runs.
    src: Option<Box<dyn Source>>,
    /// In use (possibly taken out).
    used: bool,
    /// Removal was asked for while the source was taken out.
    doomed: bool,
    /// The source is a user fd watcher (its fd is in `Loop::watched`).
    watcher: bool,
}

type Deferred = Box<dyn FnOnce(&mut Loop)>;

/// An event loop. Not `Send`: it runs on the thread that created it; other threads reach it
/// through a [`Handle`].
pub struct Loop {
    backend: Box<dyn Backend>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The fds of user watchers (kept here so interest can change inside their callback).
    watched: Vec<(Token, RawFd)>,
    live: usize,
    conns: usize,
    changes: Vec<Change>,
    failed: Vec<(u64, io::Error)>,
    events: Vec<Event>,
    again: Vec<Token>,
    again_next: Vec<Token>,
    deferred: Vec<Deferred>,
    posted: Vec<Posted>,
    pub(crate) timers: timer::Timers,
    pub(crate) signals: signal::Signals,
    shared: Arc<wake::Shared>,
    pub(crate) stats: Stats,
    /// Host-name resolutions waiting for the resolver thread.
    pub(crate) resolves: crate::net::connect::Resolves,
    pub(crate) pool: BufPool,
    pub(crate) now: Instant,
    /// `now` in nanoseconds since the loop started (the unit of sources' deadlines).
    now_ns: u64,
    /// Inside an iteration's dispatch: `now` is fresh.
    iterating: bool,
    stopped: bool,
    /// Sources to call (with `Ready::EMPTY`) at the end of the iteration: connections whose
    /// responses got output from outside their own callbacks.
    kicks: Rc<RefCell<Vec<Token>>>,
    kicks_spare: Vec<Token>,
    /// The backend takes sends ([`Loop::queue_send`]) into its next wait.
    pub(crate) batch_sends: bool,
    /// The backend receives connections' input itself ([`Loop::recv_ctl`]).
    pub(crate) ring_recv: bool,
    /// What closed sources left with a send in flight, kept until its completion.
    orphans: Vec<(u64, crate::net::conn::Out)>,
    /// Connections being handed to another protocol, with what builds their successor
    /// (see [`crate::Io::hand_off`]; taken by [`Source::take_over`]).
    pub(crate) handoffs: Vec<(Token, Box<dyn Any>)>,
    /// The supervisor's page when this process is a supervised worker: the heartbeat.
    pub(crate) probe: Option<&'static crate::supervisor::shm::Page>,
    /// The work pool this loop queues on and the done functions it holds.
    pub(crate) work: crate::workpool::LoopWork,
}

impl Loop {
    /// Creates a loop on the default backend: `$MYRIAD_BACKEND` if set ("epoll",
    /// "io_uring", "kqueue"), else the platform's (epoll on Linux, kqueue on FreeBSD and
    /// macOS).
    pub fn new() -> io::Result<Loop> {
        Loop::with_backend("")
    }

    /// Creates a loop on the named backend: "epoll" or "io_uring" (Linux), "kqueue" (FreeBSD,
    /// macOS); "" or "default"
    /// picks `$MYRIAD_BACKEND` if set, else the platform's default. Unknown or unavailable
    /// names give `Unsupported`.
    pub fn with_backend(name: &str) -> io::Result<Loop> {
        let backend = sys::new_backend(name)?;
        let batch_sends = backend.batches_sends();
        let ring_recv = backend.receives();
        let shared = Arc::new(wake::Shared::new()?);
        let mut lp = Loop {
            backend,
            slots: Vec::new(),
            free: Vec::new(),
            watched: Vec::new(),
            live: 0,
            conns: 0,
            changes: Vec::new(),
            failed: Vec::new(),
            events: Vec::with_capacity(1024),
            again: Vec::new(),
            again_next: Vec::new(),
            deferred: Vec::new(),
            posted: Vec::new(),
            timers: timer::Timers::new(),
            signals: signal::Signals::new(),
            shared,
            stats: Stats::default(),
            resolves: Default::default(),
            pool: BufPool::new(crate::net::pool::DEFAULT_BUF_SIZE, 64),
            now: Instant::now(),
            now_ns: 1,
            iterating: false,
            stopped: false,
            kicks: Rc::default(),
            kicks_spare: Vec::new(),
            batch_sends,
            ring_recv,
            orphans: Vec::new(),
            handoffs: Vec::new(),
            probe: crate::supervisor::shm::probe(),
            work: crate::workpool::LoopWork::new(),
        };
        let efd = lp.shared.fd();
        lp.register(efd, Token(WAKE_TOKEN), Interest::READ | Interest::EDGE);
        if let Some(fd) = crate::supervisor::shm::claim_ping() {
            // A supervised worker's first loop hears the supervisor's pings (its watchdog
            // wakes an idle loop so that its heartbeat moves).
            lp.watch(fd, Interest::READ | Interest::EDGE, move |lp, t, _| {
                if !crate::supervisor::shm::drain_pings(fd) {
                    lp.unwatch(t);
                }
            })?;
        }
        Ok(lp)
    }

    /// The fds this loop owns (backend, signals, wakeup): a forked child that does not run
    /// the loop closes them.
    pub(crate) fn own_fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.backend.fd(), self.shared.fd()];
        v.extend(self.signals.fd());
        v
    }

    /// The backend's name ("epoll", "io_uring", "kqueue").
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// A thread-safe handle for posting work to this loop and stopping it.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// The current time, without a clock read inside an iteration: the time cached right
    /// after the iteration's wait while callbacks run, the clock itself outside them (so a
    /// deadline set from outside the loop never starts from a stale time).
    pub fn now(&self) -> Instant {
        if self.iterating {
            self.now
        } else {
            Instant::now()
        }
    }

    /// [`Loop::now`] in nanoseconds since the loop started (at least 1).
    pub(crate) fn now_ns(&self) -> u64 {
        if self.iterating {
            self.now_ns
        } else {
            self.timers.ns(Instant::now())
        }
    }

    /// Whether the backend receives connections' input itself (io_uring on Linux 6.12 or
    /// later, unless `MYRIAD_URING_RECV=0`): [`Stats::received`] then counts what
    /// [`Stats::read`] counts otherwise.
    pub fn backend_receives(&self) -> bool {
        self.ring_recv
    }

    /// Whether the backend accepts connections itself (io_uring on Linux 5.19 or later,
    /// unless `MYRIAD_URING_ACCEPT=0`): a listener then makes no `accept4` call, and a TCP
    /// listener one `getpeername` per connection instead (counted in [`Stats::accept`]).
    pub fn backend_accepts(&self) -> bool {
        self.backend.accepts()
    }

    /// A snapshot of the loop's counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.wakeups = self.shared.wakeups.load(Ordering::Relaxed);
        s.buffers_in_use = self.pool.out as u64;
        s.buffers_idle = self.pool.idle() as u64;
        s
    }

    /// Number of sources (listeners, connections, fd watchers) on the loop.
    pub fn source_count(&self) -> usize {
        self.live
    }

    /// Number of open connections on the loop.
    pub fn connection_count(&self) -> usize {
        self.conns
    }

    /// The tokens of the connections open on this loop, except one inside its callback.
    pub(crate) fn conn_tokens(&self) -> Vec<Token> {
        let conn = |s: &Slot| s.src.as_ref().is_some_and(|s| s.is_connection());
        (self.slots.iter().enumerate())
            .filter(|(_, s)| s.used && !s.doomed && conn(s))
            .map(|(i, s)| Token::new(i, s.gen))
            .collect()
    }

    /// Queues a registration, applied by the backend's next wait.
    pub(crate) fn register(&mut self, fd: RawFd, token: Token, interest: Interest) {
        self.changes.push(Change {
            fd,
            token: token.0,
            op: Op::Add(interest),
        });
    }

    /// Adds a source and registers `fd` for it (once). Returns its token.
    pub(crate) fn add_source(
        &mut self,
        fd: Option<(RawFd, Interest)>,
        make: impl FnOnce(Token) -> Box<dyn Source>,
    ) -> Token {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    src: None,
                    used: false,
                    doomed: false,
                    watcher: false,
                });
                self.slots.len() - 1
            }
        };
        let token = Token::new(slot, self.slots[slot].gen);
        let mut src = make(token);
        let is_conn = src.is_connection();
        let watch_fd = src.as_any().downcast_mut::<Watcher>().map(|w| w.fd);
        if let Some(fd) = watch_fd {
            self.watched.push((token, fd));
        }
        let s = &mut self.slots[slot];
        s.src = Some(src);
        s.used = true;
        s.doomed = false;
        s.watcher = watch_fd.is_some();
        self.live += 1;
        if is_conn {
            self.conns += 1;
        }
        if let Some((fd, interest)) = fd {
            self.register(fd, token, interest);
        }
        token
    }

    fn slot_of(&self, token: Token) -> Option<usize> {
        live_slot(&self.slots, token)
    }

    /// Removes a source: it is closed now, or right after its running callback returns.
    /// Returns false for a stale token.
    pub(crate) fn remove_source(&mut self, token: Token) -> bool {
        let Some(i) = self.slot_of(token) else {
            return false;
        };
        match self.slots[i].src.take() {
            Some(src) => self.finish_remove(i, token, src),
            None => self.slots[i].doomed = true,
        }
        true
    }

    /// Whether source `token` is gone, or removed by its own callback, still running.
    pub(crate) fn removing(&self, token: Token) -> bool {
        self.slot_of(token).is_none_or(|i| self.slots[i].doomed)
    }

    fn finish_remove(&mut self, i: usize, token: Token, mut src: Box<dyn Source>) {
        // A registration not yet handed to the backend must not reach a reused fd number.
        self.changes.retain(|c| c.token != token.0);
        let is_conn = src.is_connection();
        if self.slots[i].watcher {
            self.watched.retain(|w| w.0 != token);
        }
        let s = &mut self.slots[i];
        s.used = false;
        s.doomed = false;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(i);
        self.live -= 1;
        if is_conn {
            self.conns -= 1;
        }
        src.close(self, token);
        // After `close`, which may have deregistered the fd itself. A listener must stop
        // accepting now; a connection's close can ride the next wait.
        self.backend.forget(token.0, !is_conn, &mut self.stats);
    }

    /// Calls source `token` with `ready`, taking it out of its slot for the duration.
    pub(crate) fn dispatch(&mut self, token: Token, ready: Ready) {
        let Some(i) = self.slot_of(token) else { return };
        let Some(mut src) = self.slots[i].src.take() else {
            return;
        };
        let next = src.ready(self, token, ready);
        self.settle(i, token, src, next);
    }

    fn settle(&mut self, i: usize, token: Token, src: Box<dyn Source>, next: Next) {
        if self.slots[i].doomed || next == Next::Remove {
            self.finish_remove(i, token, src);
            return;
        }
        let src = if next == Next::Replace {
            self.again_next.push(token);
            src.take_over(self, token)
        } else {
            src
        };
        self.slots[i].src = Some(src);
        if next == Next::Again {
            self.again_next.push(token);
        }
    }

    /// Runs `f` on source `token` if it is a `T` and is not currently running a callback.
    pub(crate) fn with_source<T: 'static, R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut T, &mut Loop, Token) -> (R, Next),
    ) -> Option<R> {
        let i = self.slot_of(token)?;
        let mut src = self.slots[i].src.take()?;
        let Some(t) = src.as_any().downcast_mut::<T>() else {
            self.slots[i].src = Some(src);
            return None;
        };
        let (r, next) = f(t, self, token);
        self.settle(i, token, src, next);
        Some(r)
    }

    /// Takes `fd` (registered as `token`) out of the backend now (for fds that stay open
    /// after their source goes).
    pub(crate) fn deregister_fd(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.backend.deregister(fd, token.0, &mut self.stats)
    }

    /// Queues a send of `iov` for source `token`, submitted by the next wait (see
    /// [`Loop::batch_sends`]); the source hears the result through [`Source::sent`]. The
    /// buffers must stay untouched until then.
    pub(crate) fn queue_send(&mut self, token: Token, fd: RawFd, iov: &[libc::iovec]) {
        self.backend.queue_send(token.0, fd, iov);
    }

    /// A source closes with a send queued or in flight: the send is submitted now, while
    /// its fd is still open (on epoll those bytes would have been written already), and
    /// `bufs`, what it reads from, are kept until its completion arrives.
    pub(crate) fn abandon_send(&mut self, token: Token, bufs: crate::net::conn::Out) {
        if let Err(e) = self.backend.submit_pending(&mut self.stats) {
            log::warn!("submitting before a close: {e}");
        }
        self.orphans.push((token.0, bufs));
    }

    /// Starts (true) or stops (false) the backend's receiving for source `token`, registered
    /// with `Interest::RECV`, or its accepting, for one registered with `Interest::ACCEPT`,
    /// at the next wait (see [`Loop::ring_recv`]).
    pub(crate) fn recv_ctl(&mut self, fd: RawFd, token: Token, on: bool) {
        // Only the last word counts: one still queued is updated in place.
        if let Some(c) =
            (self.changes.iter_mut()).find(|c| c.token == token.0 && matches!(c.op, Op::Recv(_)))
        {
            c.op = Op::Recv(on);
            return;
        }
        self.changes.push(Change {
            fd,
            token: token.0,
            op: Op::Recv(on),
        });
    }

    /// Hands input the backend received to its source, then gives the buffer back (also
    /// when the source is gone).
    fn dispatch_received(&mut self, token: Token, res: i32, buf: u32, off: u32) {
        let data: &[u8] = if res > 0 {
            // SAFETY: the kernel wrote these `res` bytes of buffer `buf` and neither it nor
            // the backend touches them until `recv_done` below; the mapping lives as long
            // as the backend.
            unsafe { std::slice::from_raw_parts(self.backend.recv_buf(buf, off), res as usize) }
        } else {
            &[]
        };
        if let Some(i) = self.slot_of(token) {
            if let Some(mut src) = self.slots[i].src.take() {
                // (Pieces for a connection closed since are dropped, not counted.)
                self.stats.received += 1;
                let next = src.received(self, token, res, data);
                self.settle(i, token, src, next);
            }
        }
        if res > 0 {
            self.backend.recv_done(buf);
        }
    }

    /// Hands a connection the backend accepted to its listener (or closes it if the
    /// listener is gone or busy, which the backend's ordering makes rare).
    fn dispatch_accepted(&mut self, token: Token, res: i32) {
        if let Some(i) = self.slot_of(token) {
            if let Some(mut src) = self.slots[i].src.take() {
                let next = src.accepted(self, token, res);
                self.settle(i, token, src, next);
                return;
            }
        }
        close_accepted(res);
    }

    /// Routes a send completion to its source (or frees what a closed source left).
    fn dispatch_sent(&mut self, token: Token, res: i32) {
        let Some(i) = self.slot_of(token) else {
            if let Some(k) = self.orphans.iter().position(|o| o.0 == token.0) {
                let (_, mut out) = self.orphans.swap_remove(k);
                out.clear(self);
            }
            return;
        };
        let Some(mut src) = self.slots[i].src.take() else {
            return;
        };
        let next = src.sent(self, token, res);
        self.settle(i, token, src, next);
    }

    /// The queue of sources to call at the end of the iteration (shared with response
    /// handles, which cannot borrow the loop).
    pub(crate) fn kicker(&self) -> Rc<RefCell<Vec<Token>>> {
        self.kicks.clone()
    }

    /// Calls every kicked source once (duplicates collapse), a few rounds at most; what is
    /// left keeps the next wait from blocking.
    fn run_kicks(&mut self) {
        for _ in 0..4 {
            if self.kicks.borrow().is_empty() {
                return;
            }
            let mut batch = std::mem::take(&mut self.kicks_spare);
            std::mem::swap(&mut batch, &mut *self.kicks.borrow_mut());
            batch.sort_unstable_by_key(|t| t.0);
            batch.dedup();
            for t in batch.drain(..) {
                self.dispatch(t, Ready::EMPTY);
            }
            self.kicks_spare = batch;
        }
    }

    /// Calls source `token` with `Ready::EMPTY` at the end of this iteration.
    pub(crate) fn kick_soon(&self, token: Token) {
        self.kicks.borrow_mut().push(token);
    }

    /// Calls source `token` again next iteration with `Ready::EMPTY`.
    pub(crate) fn push_again(&mut self, token: Token) {
        self.again_next.push(token);
    }

    /// Runs `f` at the end of the current iteration (or of the next one, if called while
    /// deferred callbacks are running). Pending deferred work makes the next wait not block.
    pub fn defer(&mut self, f: impl FnOnce(&mut Loop) + 'static) {
        self.deferred.push(Box::new(f));
    }

    /// Makes `run()` return after the current iteration.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Work the next iteration must do without waiting for events: deferred callbacks,
    /// sources to call again, kicked connections, posted messages or a stop request.
    fn work_queued(&self) -> bool {
        !self.deferred.is_empty()
            || !self.again_next.is_empty()
            || !self.kicks.borrow().is_empty()
            || self.stop_requested()
            || self.shared.has_posts()
    }

    /// `work_queued`, or registrations not yet handed to the backend (which a host polling
    /// the backend fd would not see; the loop's own wait applies them itself).
    fn has_pending_work(&self) -> bool {
        !self.changes.is_empty() || self.backend.has_queued() || self.work_queued()
    }

    /// How long a host loop may sleep before calling [`Loop::run_once_nowait`]: zero when
    /// work is pending (including registrations and timers made since the last iteration),
    /// the time to the earliest timer (rounded up to the millisecond), or `None` (sleep until
    /// the backend fd is readable).
    pub fn next_timeout(&mut self) -> Option<Duration> {
        if self.has_pending_work() {
            return Some(Duration::ZERO);
        }
        let d = self.timers.next_deadline()?;
        let left = d.saturating_duration_since(Instant::now());
        Some(Duration::from_millis(sys::ceil_millis(left) as u64))
    }

    /// The fd a host loop polls for readability to learn that this loop has I/O to handle
    /// (the epoll fd). Poll it, wait at most [`Loop::next_timeout`], then call
    /// [`Loop::run_once_nowait`].
    pub fn backend_fd(&self) -> RawFd {
        self.backend.fd()
    }

    /// Runs until [`Loop::stop`] or [`Handle::stop`]. The stop request is consumed.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.stop_requested() {
            self.iterate(true)?;
        }
        self.clear_stop();
        self.backend.submit_pending(&mut self.stats)
    }

    /// Runs one iteration, waiting for at least one event or timer if nothing is pending.
    /// Returns whether a stop was requested (the request is consumed).
    pub fn run_once(&mut self) -> io::Result<bool> {
        self.iterate(true)?;
        self.backend.submit_pending(&mut self.stats)?;
        Ok(self.take_stop())
    }

    /// Runs one iteration without blocking. Returns whether a stop was requested (the
    /// request is consumed).
    pub fn run_once_nowait(&mut self) -> io::Result<bool> {
        self.iterate(false)?;
        self.backend.submit_pending(&mut self.stats)?;
        Ok(self.take_stop())
    }

    fn stop_requested(&self) -> bool {
        self.stopped || self.shared.stop.load(Ordering::Acquire)
    }

    fn clear_stop(&mut self) {
        self.stopped = false;
        self.shared.stop.store(false, Ordering::Release);
    }

    fn take_stop(&mut self) -> bool {
        let s = self.stop_requested();
        self.clear_stop();
        s
    }

    fn iterate(&mut self, block: bool) -> io::Result<()> {
        self.stats.iterations += 1;
        if let Some(p) = self.probe {
            p.beat();
        }
        let busy = !block || self.work_queued();
        std::mem::swap(&mut self.again, &mut self.again_next);
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            // The pool's trim counts as a deadline: a loop left idle after a burst gives
            // the blocks back without waiting for an event.
            let pool = self.pool.trim_deadline();
            (self.timers.next_deadline().into_iter())
                .chain(pool)
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()))
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let res = self.backend.wait(
            &self.changes,
            &mut self.failed,
            &mut events,
            timeout,
            &mut self.stats,
        );
        self.changes.clear();
        self.now = Instant::now();
        self.now_ns = self.timers.ns(self.now);
        self.pool.tick(self.now);
        if let Err(e) = res {
            self.events = events;
            return Err(e);
        }
        self.iterating = true;
        self.report_failed_changes();

        let mut woken = false;
        for ev in &events {
            match ev.token {
                WAKE_TOKEN => woken = true,
                SIGNAL_TOKEN => self.dispatch_signals(),
                t if ev.ready == Ready::SENT => self.dispatch_sent(Token(t), ev.res),
                t if ev.ready == Ready::RECEIVED => {
                    self.dispatch_received(Token(t), ev.res, ev.buf, ev.off)
                }
                t if ev.ready == Ready::ACCEPTED => self.dispatch_accepted(Token(t), ev.res),
                t => self.dispatch(Token(t), ev.ready),
            }
        }
        self.events = events;

        let mut again = std::mem::take(&mut self.again);
        for t in again.drain(..) {
            self.dispatch(t, Ready::EMPTY);
        }
        self.again = again;

        self.run_timers();

        if woken || self.shared.has_posts() {
            self.run_posted();
        }
        self.run_kicks();
        self.run_deferred();
        self.run_kicks();
        self.iterating = false;
        Ok(())
    }

    /// Sources whose registration failed are told with `Ready::ERROR` (their next I/O call
    /// reports the cause) — a user fd that epoll refuses (a regular file) fails here.
    fn report_failed_changes(&mut self) {
        if self.failed.is_empty() {
            return;
        }
        let failed = std::mem::take(&mut self.failed);
        for (token, e) in failed {
            log::warn!("registration of token {token:#x} failed: {e}");
            self.dispatch(Token(token), Ready::ERROR | Ready::HUP);
        }
    }

    fn run_posted(&mut self) {
        let mut posted = std::mem::take(&mut self.posted);
        self.shared.drain(&mut posted);
        for f in posted.drain(..) {
            f(self);
        }
        self.posted = posted;
    }

    fn run_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.deferred);
        for f in batch {
            f(self);
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Refuse new posts; drop queued ones outside the queue's lock.
        drop(self.shared.close());
        self.drop_signals();
        for i in 0..self.slots.len() {
            if let Some(src) = self.slots[i].src.take() {
                let token = Token::new(i, self.slots[i].gen);
                self.finish_remove(i, token, src);
            }
        }
        self.deferred.clear();
        // Queued work leaves the pool unrun; done functions are dropped uncalled.
        self.work.close();
    }
}

/// The slot of `token` if it still names a live source (slot in use, same generation).
fn live_slot(slots: &[Slot], token: Token) -> Option<usize> {
    let i = token.slot();
    let s = slots.get(i)?;
    (s.used && s.gen == token.gen()).then_some(i)
}

/// An fd watcher callback: gets the loop, the watcher's token and what is ready.
pub type WatchFn = Box<dyn FnMut(&mut Loop, Token, Ready)>;

/// A user fd watched by the loop.
struct Watcher {
    fd: RawFd,
    registered: bool,
    cb: Option<WatchFn>,
}

impl Source for Watcher {
    fn ready(&mut self, lp: &mut Loop, token: Token, ready: Ready) -> Next {
        if let Some(cb) = self.cb.as_mut() {
            cb(lp, token, ready);
        }
        Next::Keep
    }

    fn close(&mut self, lp: &mut Loop, token: Token) {
        // The fd is the user's and stays open: take it out of the backend now, before the
        // user closes it and its number is reused. (A registration still queued was dropped
        // instead, and then this fails harmlessly with ENOENT.)
        if self.registered {
            let _ = lp.backend.deregister(self.fd, token.0, &mut lp.stats);
        }
        self.cb = None;
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn take_over(self: Box<Self>, _: &mut Loop, _: Token) -> Box<dyn Source> {
        self
    }
}

impl Loop {
    /// Watches a user-owned fd (a pipe, a database socket). With [`Interest::EDGE`] the
    /// callback is told once per change and must read/write until a short count or
    /// `EAGAIN`; without it, the callback is called every iteration while the fd is ready.
    /// The fd stays the caller's: close it only after [`Loop::unwatch`]. Errors surface as a
    /// callback with `Ready::ERROR` (e.g. epoll refuses regular files with `EPERM`).
    pub fn watch(
        &mut self,
        fd: RawFd,
        interest: Interest,
        cb: impl FnMut(&mut Loop, Token, Ready) + 'static,
    ) -> io::Result<Token> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let w = Watcher {
            fd,
            registered: true,
            cb: Some(Box::new(cb)),
        };
        Ok(self.add_source(Some((fd, interest)), |_| Box::new(w)))
    }

    /// Changes what a watched fd is watched for (one `epoll_ctl`, at the next wait).
    /// Returns false for a token that is not a live watcher.
    pub fn rewatch(&mut self, token: Token, interest: Interest) -> bool {
        let Some(i) = self.slot_of(token) else {
            return false;
        };
        if !self.slots[i].watcher {
            return false;
        }
        let Some(&(_, fd)) = self.watched.iter().find(|w| w.0 == token) else {
            return false;
        };
        self.reregister(fd, token, interest);
        true
    }

    /// Changes what a registered fd is watched for (one `epoll_ctl` at the next wait).
    pub(crate) fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) {
        // A change still queued is updated in place (an add stays an add).
        if let Some(c) =
            (self.changes.iter_mut()).find(|c| c.token == token.0 && !matches!(c.op, Op::Recv(_)))
        {
            c.op = match c.op {
                Op::Add(_) => Op::Add(interest),
                _ => Op::Modify(interest),
            };
            return;
        }
        self.changes.push(Change {
            fd,
            token: token.0,
            op: Op::Modify(interest),
        });
    }

    /// Stops watching a user fd (which stays open). Safe from inside its own callback.
    /// Returns false for a stale token.
    pub fn unwatch(&mut self, token: Token) -> bool {
        let Some(i) = self.slot_of(token) else {
            return false;
        };
        // Only watchers may be removed this way.
        if !self.slots[i].watcher {
            return false;
        }
        if self.changes.iter().any(|c| c.token == token.0) {
            // Never handed to the backend: there is nothing to deregister.
            if let Some(w) = self.slots[i]
                .src
                .as_mut()
                .and_then(|s| s.as_any().downcast_mut::<Watcher>())
            {
                w.registered = false;
            }
        }
        self.remove_source(token)
    }
}
