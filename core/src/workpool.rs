//! A thread pool for CPU-bound work queued from a loop, like libuv's `uv_queue_work`: the
//! work function runs on a pool thread, its done function on the loop's thread (through
//! the loop's cross-thread post: one eventfd write per batch of completions).
//!
//! - Bounded: at most `max_queued` jobs wait for a thread (running ones not counted); one
//!   more is refused with [`WorkError::Full`] at once, never blocked on.
//! - Threads start on demand, up to `threads`, and retire after a few idle seconds.
//! - A job not started yet can be cancelled ([`Loop::cancel_work`]): its done function
//!   then runs with [`WorkError::Cancelled`]. A work function that panics gives
//!   [`WorkError::Panicked`] and the thread goes on.
//! - A loop that is dropped takes its jobs with it: those still queued are removed from the
//!   pool and dropped unrun, the done functions of every job are dropped uncalled (their
//!   captures are released), and the result of a job running at that moment is dropped on
//!   its thread when it ends. Nothing waits, nothing leaks.
//!
//! A forked child starts with no pool thread and an empty queue (the first job it queues
//! starts its own threads); the parent's jobs stay the parent's.
//!
//! Every loop uses the process's default pool ([`WorkPool::default_pool`]: 4 threads, or
//! `MYRIAD_WORK_THREADS`; 1024 queued jobs) unless given its own ([`Loop::set_work_pool`]).

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::reactor::{Handle, Loop};

/// How long an idle pool thread waits for a job before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// Names a queued job (for [`Loop::cancel_work`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkId(u64);

impl WorkId {
    /// The id as an integer (for the C ABI).
    pub fn to_u64(self) -> u64 {
        self.0
    }
    /// Rebuilds an id from [`WorkId::to_u64`].
    pub fn from_u64(v: u64) -> WorkId {
        WorkId(v)
    }
}

/// Why a job was refused, or ended without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkError {
    /// [`Loop::queue_work`]: the pool's queue holds `max_queued` jobs already.
    Full {
        /// The pool's limit.
        max_queued: usize,
    },
    /// [`Loop::queue_work`]: the pool has no thread and could not start one.
    NoThread(String),
    /// The done function's status: the job was cancelled before it started.
    Cancelled,
    /// The done function's status: the work function panicked.
    Panicked,
}

impl fmt::Display for WorkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkError::Full { max_queued } => {
                write!(f, "work pool queue is full ({max_queued} jobs waiting)")
            }
            WorkError::NoThread(e) => write!(f, "work pool cannot start a thread: {e}"),
            WorkError::Cancelled => f.write_str("work cancelled before it started"),
            WorkError::Panicked => f.write_str("work function panicked"),
        }
    }
}

impl std::error::Error for WorkError {}

struct Job {
    id: u64,
    /// The loop that queued it (the loop's [`LoopWork::owner`]).
    owner: u64,
    run: Box<dyn FnOnce() + Send>,
}

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// Every handle to the pool is gone: threads exit once the queue is empty.
    closed: bool,
    /// The process the threads belong to: a forked child has none of them.
    pid: u32,
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    max_threads: usize,
    max_queued: usize,
}

/// Closes the pool when the last [`WorkPool`] handle goes (threads hold `Shared` only).
struct Life(Arc<Shared>);

impl Drop for Life {
    fn drop(&mut self) {
        let mut st = self.0.st.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        drop(st);
        self.0.cv.notify_all();
    }
}

/// A pool of threads for work queued from loops. Cheap to clone (a reference); several
/// loops may share one.
#[derive(Clone)]
pub struct WorkPool(Arc<Life>);

impl fmt::Debug for WorkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkPool")
            .field("threads", &self.0 .0.max_threads)
            .field("max_queued", &self.0 .0.max_queued)
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl WorkPool {
    /// A pool of at most `threads` threads (at least 1) and `max_queued` waiting jobs (at
    /// least 1). Threads start when work arrives.
    pub fn new(threads: usize, max_queued: usize) -> WorkPool {
        WorkPool(Arc::new(Life(Arc::new(Shared {
            st: Mutex::new(State {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                closed: false,
                pid: std::process::id(),
            }),
            cv: Condvar::new(),
            max_threads: threads.max(1),
            max_queued: max_queued.max(1),
        }))))
    }

    /// The process's default pool: `MYRIAD_WORK_THREADS` threads (default 4, at most 256),
    /// 1024 waiting jobs.
    pub fn default_pool() -> WorkPool {
        static POOL: OnceLock<WorkPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let n = std::env::var("MYRIAD_WORK_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| (1..=256).contains(n))
                .unwrap_or(4);
            WorkPool::new(n, 1024)
        })
        .clone()
    }

    /// The most threads the pool runs.
    pub fn max_threads(&self) -> usize {
        self.sh().max_threads
    }

    /// The most jobs that may wait for a thread.
    pub fn max_queued(&self) -> usize {
        self.sh().max_queued
    }

    /// Jobs waiting for a thread right now.
    pub fn queued(&self) -> usize {
        self.sh().lock().queue.len()
    }

    /// Pool threads alive right now (busy or idle).
    pub fn threads(&self) -> usize {
        self.sh().lock().threads
    }

    fn sh(&self) -> &Arc<Shared> {
        &self.0 .0
    }

    /// Queues `job`, starting a thread if none is idle and the pool may grow.
    fn push(&self, job: Job) -> Result<(), (Job, WorkError)> {
        let sh = self.sh();
        let mut st = sh.lock();
        if st.pid != std::process::id() {
            // A forked child (a supervisor's worker): the threads stayed in the parent, and
            // the queued jobs are the parent's (its loops' copies, which the child never
            // runs nor finishes: forgotten, as fork leaves them).
            std::mem::forget(std::mem::take(&mut st.queue));
            st.threads = 0;
            st.idle = 0;
            st.pid = std::process::id();
        }
        if st.queue.len() >= sh.max_queued {
            let e = WorkError::Full {
                max_queued: sh.max_queued,
            };
            return Err((job, e));
        }
        let grow = st.idle <= st.queue.len() && st.threads < sh.max_threads;
        if grow {
            let sh2 = sh.clone();
            let spawned = std::thread::Builder::new()
                .name("myriad-work".into())
                .spawn(move || worker(sh2));
            match spawned {
                Ok(_) => st.threads += 1,
                Err(e) if st.threads == 0 => return Err((job, WorkError::NoThread(e.to_string()))),
                Err(e) => log::warn!("work pool: cannot start another thread: {e}"),
            }
        }
        st.queue.push_back(job);
        drop(st);
        sh.cv.notify_one();
        Ok(())
    }

    /// Takes job `id` out of the queue if no thread has started it.
    fn cancel(&self, id: u64) -> Option<Job> {
        let mut st = self.sh().lock();
        let i = st.queue.iter().position(|j| j.id == id)?;
        st.queue.remove(i)
    }

    /// Takes every queued job of loop `owner` out of the queue.
    fn cancel_owner(&self, owner: u64) -> Vec<Job> {
        let mut st = self.sh().lock();
        let mut mine = Vec::new();
        let mut rest = VecDeque::with_capacity(st.queue.len());
        for j in st.queue.drain(..) {
            if j.owner == owner {
                mine.push(j);
            } else {
                rest.push_back(j);
            }
        }
        st.queue = rest;
        mine
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn worker(sh: Arc<Shared>) {
    let mut st = sh.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            (job.run)(); // catches the work function's panic itself
            st = sh.lock();
            continue;
        }
        if st.closed {
            break;
        }
        st.idle += 1;
        let (guard, timeout) = sh
            .cv
            .wait_timeout(st, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() {
            break;
        }
    }
    st.threads -= 1;
}

/// A done function waiting on its loop, type-erased: `done` is a boxed
/// `FnOnce(&mut Loop, Result<T, WorkError>)` and `fail` calls it with an error.
struct Pending {
    done: Box<dyn Any>,
    fail: fn(Box<dyn Any>, &mut Loop, WorkError),
    /// The pool the job was queued on (the loop's pool may change since).
    pool: WorkPool,
}

type DoneFn<T> = Box<dyn FnOnce(&mut Loop, Result<T, WorkError>)>;

fn fail_typed<T: 'static>(done: Box<dyn Any>, lp: &mut Loop, e: WorkError) {
    if let Ok(done) = done.downcast::<DoneFn<T>>() {
        done(lp, Err(e));
    }
}

/// A loop's side of the pool: which pool it uses and the done functions it holds.
pub(crate) struct LoopWork {
    pool: Option<WorkPool>,
    pending: HashMap<u64, Pending>,
    /// Tells this loop's jobs from other loops' in a shared pool.
    owner: u64,
}

impl LoopWork {
    pub(crate) fn new() -> LoopWork {
        LoopWork {
            pool: None,
            pending: HashMap::new(),
            owner: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn pool(&mut self) -> &WorkPool {
        self.pool.get_or_insert_with(WorkPool::default_pool)
    }

    /// The loop goes: its queued jobs leave the pool unrun and are dropped (outside the
    /// pool's lock), its done functions are dropped uncalled.
    pub(crate) fn close(&mut self) {
        let mut pools: Vec<&WorkPool> = Vec::new();
        for p in self.pending.values() {
            if !pools.iter().any(|q| Arc::ptr_eq(&q.0, &p.pool.0)) {
                pools.push(&p.pool);
            }
        }
        let jobs: Vec<Job> = pools
            .into_iter()
            .flat_map(|p| p.cancel_owner(self.owner))
            .collect();
        drop(jobs);
        self.pending.clear();
    }
}

impl Loop {
    /// Runs `work` on a pool thread, then `done` on this loop's thread with its result
    /// (`Err(Cancelled)` if [`Loop::cancel_work`] took it before it started,
    /// `Err(Panicked)` if `work` panicked). Never blocks: a full queue is
    /// `Err(WorkError::Full)` at once (and neither function runs).
    pub fn queue_work<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(&mut Loop, Result<T, WorkError>) + 'static,
    ) -> Result<WorkId, WorkError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let handle: Handle = self.handle();
        let run = move || {
            let res = catch_unwind(AssertUnwindSafe(work)).map_err(|_| WorkError::Panicked);
            // A loop dropped meanwhile refuses the post; the result is dropped here.
            let _ = handle.post(move |lp: &mut Loop| lp.finish_work(id, res));
        };
        let owner = self.work.owner;
        let job = Job {
            id,
            owner,
            run: Box::new(run),
        };
        let pool = self.work.pool().clone();
        if let Err((job, e)) = pool.push(job) {
            drop(job);
            return Err(e);
        }
        let done: DoneFn<T> = Box::new(done);
        self.work.pending.insert(
            id,
            Pending {
                done: Box::new(done),
                fail: fail_typed::<T>,
                pool,
            },
        );
        Ok(WorkId(id))
    }

    fn finish_work<T: 'static>(&mut self, id: u64, res: Result<T, WorkError>) {
        let Some(p) = self.work.pending.remove(&id) else {
            return;
        };
        match res {
            Ok(v) => {
                if let Ok(done) = p.done.downcast::<DoneFn<T>>() {
                    done(self, Ok(v));
                }
            }
            Err(e) => (p.fail)(p.done, self, e),
        }
    }

    /// Cancels job `id` if no thread has started it: it leaves the queue and its done
    /// function runs with `Err(WorkError::Cancelled)` at the end of this iteration. False if
    /// it has started (its done function will get the result), ended, or is unknown.
    pub fn cancel_work(&mut self, id: WorkId) -> bool {
        let Some(p) = self.work.pending.get(&id.0) else {
            return false;
        };
        let Some(job) = p.pool.cancel(id.0) else {
            return false;
        };
        drop(job);
        self.defer(move |lp| lp.fail_work(id.0, WorkError::Cancelled));
        true
    }

    fn fail_work(&mut self, id: u64, e: WorkError) {
        if let Some(p) = self.work.pending.remove(&id) {
            (p.fail)(p.done, self, e);
        }
    }

    /// Makes this loop queue its work on `pool` from now on (jobs queued before stay in
    /// their pool, and can still be cancelled).
    pub fn set_work_pool(&mut self, pool: WorkPool) {
        self.work.pool = Some(pool);
    }

    /// The pool this loop queues work on.
    pub fn work_pool(&mut self) -> WorkPool {
        self.work.pool().clone()
    }

    /// Jobs queued from this loop whose done function has not run yet.
    pub fn work_pending(&self) -> usize {
        self.work.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::mpsc;

    fn run_until(lp: &mut Loop, mut cond: impl FnMut(&mut Loop) -> bool) {
        let start = std::time::Instant::now();
        while !cond(lp) {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            lp.timer(Duration::from_millis(20), |_| {});
            lp.run_once().unwrap();
        }
    }

    #[test]
    fn done_runs_on_the_loop_thread_with_the_result() {
        let mut lp = Loop::new().unwrap();
        lp.set_work_pool(WorkPool::new(2, 16));
        let me = std::thread::current().id();
        let got = Rc::new(RefCell::new(Vec::new()));
        for i in 0..8u64 {
            let got = got.clone();
            lp.queue_work(
                move || (i * i, std::thread::current().id()),
                move |_, r| {
                    let (v, tid) = r.unwrap();
                    assert_ne!(tid, me, "work on a pool thread");
                    assert_eq!(std::thread::current().id(), me, "done on the loop thread");
                    got.borrow_mut().push(v);
                },
            )
            .unwrap();
        }
        assert_eq!(lp.work_pending(), 8);
        run_until(&mut lp, |lp| lp.work_pending() == 0);
        let mut v = got.borrow().clone();
        v.sort();
        assert_eq!(v, [0, 1, 4, 9, 16, 25, 36, 49]);
        assert!(lp.work_pool().threads() <= 2);
    }

    /// One thread held by a job that waits for the test; `n` more queued behind it.
    fn blocked_pool(lp: &mut Loop, max_queued: usize) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        lp.set_work_pool(WorkPool::new(1, max_queued));
        lp.queue_work(
            move || {
                started_tx.send(()).unwrap();
                let _ = rx.recv_timeout(Duration::from_secs(10));
            },
            |_, r| r.unwrap(),
        )
        .unwrap();
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        tx
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        let mut lp = Loop::new().unwrap();
        let release = blocked_pool(&mut lp, 3);
        let ran = Rc::new(RefCell::new(0));
        for _ in 0..3 {
            let ran = ran.clone();
            lp.queue_work(|| 1, move |_, r| *ran.borrow_mut() += r.unwrap())
                .unwrap();
        }
        let e = lp
            .queue_work(|| 1, |_, _| panic!("refused work ran"))
            .unwrap_err();
        assert_eq!(e, WorkError::Full { max_queued: 3 });
        assert!(e.to_string().contains("full"), "{e}");
        assert_eq!(lp.work_pool().queued(), 3);
        release.send(()).unwrap();
        run_until(&mut lp, |lp| lp.work_pending() == 0);
        assert_eq!(*ran.borrow(), 3);
        // Room again.
        lp.queue_work(|| 1, |_, r| assert_eq!(r, Ok(1))).unwrap();
        run_until(&mut lp, |lp| lp.work_pending() == 0);
    }

    #[test]
    fn cancel_before_start_and_not_after() {
        let mut lp = Loop::new().unwrap();
        let release = blocked_pool(&mut lp, 8);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let a = lp
            .queue_work(
                || -> i32 { panic!("cancelled work ran") },
                move |_, r| s.borrow_mut().push(r),
            )
            .unwrap();
        let s = seen.clone();
        let b = lp
            .queue_work(|| 7, move |_, r| s.borrow_mut().push(r))
            .unwrap();
        assert!(lp.cancel_work(a));
        assert!(!lp.cancel_work(a), "only once");
        assert_eq!(lp.work_pool().queued(), 1);
        release.send(()).unwrap();
        run_until(&mut lp, |lp| lp.work_pending() == 0);
        let mut got = seen.borrow().clone();
        got.sort_by_key(|r| r.is_ok());
        assert_eq!(got, [Err(WorkError::Cancelled), Ok(7)]);
        assert!(!lp.cancel_work(b), "finished work cannot be cancelled");
    }

    #[test]
    fn a_panicking_work_function_is_reported_and_the_pool_goes_on() {
        let mut lp = Loop::new().unwrap();
        lp.set_work_pool(WorkPool::new(1, 4));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        lp.queue_work(
            || -> u8 { panic!("boom (expected by the test)") },
            move |_, r| s.borrow_mut().push(r),
        )
        .unwrap();
        let s = seen.clone();
        lp.queue_work(|| 5u8, move |_, r| s.borrow_mut().push(r))
            .unwrap();
        run_until(&mut lp, |lp| lp.work_pending() == 0);
        assert_eq!(*seen.borrow(), [Err(WorkError::Panicked), Ok(5)]);
    }

    /// Counts drops of what the jobs capture.
    struct Tracked(Arc<AtomicU64>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_dropped_loop_releases_everything_it_queued() {
        let drops = Arc::new(AtomicU64::new(0));
        let pool = WorkPool::new(1, 16);
        {
            let mut lp = Loop::new().unwrap();
            lp.set_work_pool(pool.clone());
            // The one thread is held by a job that waits for the test.
            let (tx, rx) = mpsc::channel::<()>();
            let t = Tracked(drops.clone());
            let (st_tx, st_rx) = mpsc::channel::<()>();
            lp.queue_work(
                move || {
                    st_tx.send(()).unwrap();
                    let _ = rx.recv_timeout(Duration::from_secs(10));
                    t
                },
                |_, _| panic!("done after the loop went"),
            )
            .unwrap();
            st_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            for _ in 0..5 {
                let (w, d) = (Tracked(drops.clone()), Tracked(drops.clone()));
                lp.queue_work(
                    move || drop(w),
                    move |_, _: Result<(), _>| {
                        drop(d);
                        panic!("done after the loop went")
                    },
                )
                .unwrap();
            }
            assert_eq!(pool.queued(), 5);
            drop(lp);
            // Queued jobs left the pool; their captures (work and done) are dropped.
            assert_eq!(pool.queued(), 0);
            assert_eq!(drops.load(Ordering::SeqCst), 10);
            tx.send(()).unwrap();
        }
        // The running job's result is dropped on its thread once it ends.
        let start = std::time::Instant::now();
        while drops.load(Ordering::SeqCst) < 11 {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(drops.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn jobs_stay_with_the_pool_they_were_queued_on() {
        let mut lp = Loop::new().unwrap();
        let release = blocked_pool(&mut lp, 8);
        let old = lp.work_pool();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let (s1, s2) = (seen.clone(), seen.clone());
        let a = lp
            .queue_work(|| 1, move |_, r| s1.borrow_mut().push(r))
            .unwrap();
        let _b = lp
            .queue_work(|| 2, move |_, r| s2.borrow_mut().push(r))
            .unwrap();
        lp.set_work_pool(WorkPool::new(1, 8));
        assert!(lp.cancel_work(a), "cancelled in the pool it waits in");
        assert_eq!(old.queued(), 1);
        drop(lp);
        assert_eq!(old.queued(), 0, "the dropped loop's job left its old pool");
        assert!(seen.borrow().is_empty(), "no done function after the drop");
        release.send(()).unwrap();
    }

    #[test]
    fn loops_share_a_pool_and_idle_threads_stay_bounded() {
        let pool = WorkPool::new(3, 64);
        let mut a = Loop::new().unwrap();
        let mut b = Loop::new().unwrap();
        a.set_work_pool(pool.clone());
        b.set_work_pool(pool.clone());
        for _ in 0..20 {
            a.queue_work(
                || std::thread::sleep(Duration::from_millis(1)),
                |_, r| r.unwrap(),
            )
            .unwrap();
            b.queue_work(|| (), |_, r| r.unwrap()).unwrap();
        }
        assert!(pool.threads() <= 3, "{}", pool.threads());
        run_until(&mut a, |lp| lp.work_pending() == 0);
        run_until(&mut b, |lp| lp.work_pending() == 0);
        assert!(pool.threads() <= 3);
        assert_eq!(pool.max_threads(), 3);
        assert_eq!(pool.max_queued(), 64);
    }
}
