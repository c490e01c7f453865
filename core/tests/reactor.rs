//! The loop on its own: timers, deferred callbacks, stop, posting from threads, fd
//! watchers, and driving the loop from a host's poll() loop.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use myriad::{Interest, Loop, Ready};

/// Runs the loop until `done` or `secs` pass (then panics).
fn run_until(lp: &mut Loop, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        lp.run_once().unwrap();
    }
}

#[test]
fn timers_fire_in_deadline_order_and_never_early() {
    let mut lp = Loop::new().unwrap();
    let fired: Rc<RefCell<Vec<(u64, Duration)>>> = Rc::default();
    // Deliberately armed out of order, including duplicates and zero.
    let delays = [30u64, 10, 20, 0, 50, 10, 5, 40, 1, 25];
    for &ms in &delays {
        let armed = Instant::now();
        let f = fired.clone();
        lp.timer(Duration::from_millis(ms), move |_| {
            f.borrow_mut().push((ms, armed.elapsed()));
        });
    }
    assert_eq!(lp.timer_count(), delays.len());
    let f = fired.clone();
    run_until(&mut lp, 5, move || f.borrow().len() == delays.len());
    let fired = fired.borrow();
    let order: Vec<u64> = fired.iter().map(|f| f.0).collect();
    let mut sorted = delays.to_vec();
    sorted.sort();
    assert_eq!(order, sorted, "fired out of deadline order");
    for (ms, waited) in fired.iter() {
        assert!(
            *waited >= Duration::from_millis(*ms),
            "timer of {ms} ms fired after {waited:?}"
        );
    }
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn many_random_timers_never_fire_early() {
    let mut lp = Loop::new().unwrap();
    let early = Rc::new(RefCell::new(Vec::new()));
    let count = Rc::new(RefCell::new(0usize));
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let d = Duration::from_micros(x % 40_000);
        let armed = Instant::now();
        let (e, c) = (early.clone(), count.clone());
        lp.timer(d, move |_| {
            if armed.elapsed() < d {
                e.borrow_mut().push((d, armed.elapsed()));
            }
            *c.borrow_mut() += 1;
        });
    }
    let c = count.clone();
    run_until(&mut lp, 5, move || *c.borrow() == 500);
    assert!(
        early.borrow().is_empty(),
        "early timers: {:?}",
        early.borrow()
    );
}

#[test]
fn cancel_one_shot_and_repeating_from_inside() {
    let mut lp = Loop::new().unwrap();
    let log: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let l = log.clone();
    let a = lp.timer(Duration::from_millis(5), move |_| l.borrow_mut().push("a"));
    let l = log.clone();
    lp.timer(Duration::from_millis(15), move |_| l.borrow_mut().push("b"));
    assert!(lp.cancel_timer(a));
    assert!(!lp.cancel_timer(a), "second cancel reports false");

    let ticks = Rc::new(RefCell::new(Vec::new()));
    let t = ticks.clone();
    let start = Instant::now();
    lp.repeat(
        Duration::from_millis(2),
        Duration::from_millis(3),
        move |lp, id| {
            t.borrow_mut().push(start.elapsed());
            if t.borrow().len() == 4 {
                assert!(lp.cancel_timer(id), "cancel self from inside");
            }
        },
    );
    let (l, t) = (log.clone(), ticks.clone());
    run_until(&mut lp, 5, move || {
        l.borrow().len() == 1 && t.borrow().len() == 4
    });
    assert_eq!(*log.borrow(), vec!["b"]);
    // After cancelling itself, no further tick even when time passes.
    let waited = Rc::new(RefCell::new(false));
    let w = waited.clone();
    lp.timer(Duration::from_millis(20), move |_| *w.borrow_mut() = true);
    run_until(&mut lp, 5, move || *waited.borrow());
    // Repeating: 4 ticks at >= 2, 5, 8, 11 ms, then no more.
    let ticks = ticks.borrow();
    assert_eq!(ticks.len(), 4, "repeating timer cancelled itself after 4");
    for (i, t) in ticks.iter().enumerate() {
        assert!(
            *t >= Duration::from_millis(2 + 3 * i as u64),
            "tick {i} early: {t:?}"
        );
    }
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn arming_and_cancelling_100k_timers_costs_no_syscall() {
    let mut lp = Loop::new().unwrap();
    lp.run_once_nowait().unwrap();
    let before = lp.stats();
    let mut ids = Vec::with_capacity(100_000);
    for i in 0..100_000u64 {
        ids.push(lp.timer(Duration::from_millis(1000 + i % 5000), |_| {
            panic!("cancelled timer fired")
        }));
    }
    assert_eq!(lp.timer_count(), 100_000);
    for id in ids {
        assert!(lp.cancel_timer(id));
    }
    assert_eq!(lp.timer_count(), 0);
    let after = lp.stats();
    assert_eq!(before, after, "arming/cancelling made syscalls");
    // With nothing armed the loop would block forever: no timeout to report.
    assert_eq!(lp.next_timeout(), None);
    lp.run_once_nowait().unwrap();
    let s = lp.stats();
    assert_eq!(
        (s.wait, s.ctl, s.read, s.write, s.other),
        (before.wait + 1, before.ctl, 0, 0, 0)
    );
}

#[test]
fn now_is_cached_inside_an_iteration_and_fresh_outside() {
    let mut lp = Loop::new().unwrap();
    // Outside an iteration: the clock, not the time of the last wait.
    lp.run_once_nowait().unwrap();
    let a = lp.now();
    thread::sleep(Duration::from_millis(20));
    assert!(
        lp.now() - a >= Duration::from_millis(20),
        "stale outside the loop"
    );
    // Inside: one time per iteration, however long the callbacks take.
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.timer(Duration::ZERO, move |lp| {
        let first = lp.now();
        thread::sleep(Duration::from_millis(20));
        s.borrow_mut().push((first, lp.now()));
    });
    run_until(&mut lp, 5, || !seen.borrow().is_empty());
    let (first, second) = seen.borrow()[0];
    assert_eq!(first, second, "the cached time moved inside a callback");
    assert!(lp.now() - second >= Duration::from_millis(20));
}

#[test]
fn deferred_runs_at_end_of_same_iteration() {
    let mut lp = Loop::new().unwrap();
    let log: Rc<RefCell<Vec<(String, u64)>>> = Rc::default();
    let l = log.clone();
    lp.timer(Duration::ZERO, move |lp| {
        let it = lp.stats().iterations;
        l.borrow_mut().push(("timer".into(), it));
        let l2 = l.clone();
        lp.defer(move |lp| {
            l2.borrow_mut()
                .push(("deferred".into(), lp.stats().iterations));
            let l3 = l2.clone();
            // Deferred from a deferred callback: next iteration, without blocking.
            lp.defer(move |lp| {
                l3.borrow_mut()
                    .push(("again".into(), lp.stats().iterations))
            });
        });
    });
    let l = log.clone();
    run_until(&mut lp, 5, move || l.borrow().len() == 3);
    let log = log.borrow();
    assert_eq!(log[0].0, "timer");
    assert_eq!(log[1], ("deferred".to_string(), log[0].1), "same iteration");
    assert_eq!(
        log[2],
        ("again".to_string(), log[0].1 + 1),
        "next iteration"
    );
}

#[test]
fn stop_from_callback_and_from_other_thread() {
    let mut lp = Loop::new().unwrap();
    lp.timer(Duration::from_millis(5), |lp| lp.stop());
    let t = Instant::now();
    lp.run().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(5));

    // run() blocks with nothing to do until another thread stops it.
    let h = lp.handle();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        h.stop();
    });
    let t = Instant::now();
    lp.run().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(40));
    stopper.join().unwrap();

    // run_once reports the stop request; the request is consumed.
    lp.handle().stop();
    assert!(lp.run_once().unwrap());
    assert!(!lp.run_once_nowait().unwrap());
}

#[test]
fn post_from_8_threads_delivers_each_exactly_once() {
    const THREADS: usize = 8;
    const PER: usize = 12_500; // 100,000 in all
    let mut lp = Loop::new().unwrap();
    let seen: Rc<RefCell<Vec<Vec<u32>>>> = Rc::new(RefCell::new(vec![Vec::new(); THREADS]));
    // Messages are closures; each records (thread, seq) in a loop-thread structure that the
    // closure finds through a thread-local, since posted closures must be Send.
    type Seen = Rc<RefCell<Vec<Vec<u32>>>>;
    thread_local! {
        static SINK: RefCell<Option<Seen>> = const { RefCell::new(None) };
    }
    SINK.with(|s| *s.borrow_mut() = Some(seen.clone()));
    let h = lp.handle();
    let go = Arc::new(std::sync::Barrier::new(THREADS));
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let h = h.clone();
            let go = go.clone();
            thread::spawn(move || {
                go.wait();
                for i in 0..PER as u32 {
                    h.post(move |_| {
                        SINK.with(|s| s.borrow().as_ref().unwrap().borrow_mut()[t].push(i))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    let s2 = seen.clone();
    run_until(&mut lp, 30, move || {
        s2.borrow().iter().map(|v| v.len()).sum::<usize>() == THREADS * PER
    });
    for p in posters {
        p.join().unwrap();
    }
    lp.run_once_nowait().unwrap();
    for (t, v) in seen.borrow().iter().enumerate() {
        assert_eq!(v.len(), PER, "thread {t}: count");
        assert!(
            v.iter().enumerate().all(|(i, &x)| x == i as u32),
            "thread {t}: order/duplicates"
        );
    }
    let st = lp.stats();
    let msgs = (THREADS * PER) as u64;
    println!("eventfd writes for {msgs} posts: {}", st.wakeups);
    assert!(st.wakeups <= msgs);
    assert!(
        st.wakeups * 10 <= msgs,
        "wakeups not coalesced: {}",
        st.wakeups
    );
}

#[test]
fn posts_between_two_iterations_cost_one_eventfd_write() {
    let mut lp = Loop::new().unwrap();
    let h = lp.handle();
    let n = Arc::new(AtomicUsize::new(0));
    // The loop is not iterating while another thread posts 1,000 messages.
    let n2 = n.clone();
    thread::spawn(move || {
        for _ in 0..1000 {
            let n = n2.clone();
            h.post(move |_| {
                n.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(lp.stats().wakeups, 1);
    assert_eq!(lp.next_timeout(), Some(Duration::ZERO), "posts pending");
    lp.run_once().unwrap();
    assert_eq!(n.load(Ordering::Relaxed), 1000);
    // The wakeup is re-armed: the next post writes again, and wakes a blocked loop.
    let h = lp.handle();
    let n2 = n.clone();
    let poster = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        h.post(move |_| {
            n2.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    });
    let n3 = n.clone();
    run_until(&mut lp, 5, move || n3.load(Ordering::Relaxed) == 1001);
    poster.join().unwrap();
    assert_eq!(lp.stats().wakeups, 2);
    // Posting to a dropped loop fails and gives the closure back.
    let h = lp.handle();
    drop(lp);
    assert!(h.post(|_| {}).is_err());
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds that we then own (no pipe2 on macOS).
    let r = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    for fd in fds {
        // SAFETY: fcntl on a fresh fd of ours.
        let r = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(r, 0);
    }
    // SAFETY: fresh fds from pipe.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn fd_watchers_edge_and_level() {
    let mut lp = Loop::new().unwrap();
    let (r, w) = pipe();
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let calls = Rc::new(RefCell::new(0));
    let (g, c) = (got.clone(), calls.clone());
    let rfd = r.as_raw_fd();
    let tok = lp
        .watch(rfd, Interest::READ | Interest::EDGE, move |_, _, ready| {
            assert!(ready.contains(Ready::READABLE));
            *c.borrow_mut() += 1;
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: reading into a live stack buffer.
                let n = unsafe { libc::read(rfd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                g.borrow_mut().extend_from_slice(&buf[..n as usize]);
            }
        })
        .unwrap();
    let mut wf = std::fs::File::from(w);
    wf.write_all(b"ping").unwrap();
    let g = got.clone();
    run_until(&mut lp, 5, move || g.borrow().len() == 4);
    assert_eq!(&*got.borrow(), b"ping");
    // Edge-triggered and drained: no further calls without new data.
    lp.run_once_nowait().unwrap();
    assert_eq!(*calls.borrow(), 1);
    assert!(lp.unwatch(tok));
    assert!(!lp.unwatch(tok), "stale token");
    wf.write_all(b"more").unwrap();
    lp.run_once_nowait().unwrap();
    assert_eq!(*calls.borrow(), 1, "no callback after unwatch");

    // Level-triggered: called every iteration while data stays unread.
    let level = Rc::new(RefCell::new(0));
    let l = level.clone();
    let tok = lp
        .watch(rfd, Interest::READ, move |_, _, _| *l.borrow_mut() += 1)
        .unwrap();
    for _ in 0..3 {
        lp.run_once_nowait().unwrap();
    }
    assert_eq!(*level.borrow(), 3);
    // Switch interest to write-only on the read end: never ready.
    assert!(lp.rewatch(tok, Interest::WRITE));
    lp.run_once_nowait().unwrap();
    lp.run_once_nowait().unwrap();
    assert_eq!(*level.borrow(), 3);
    assert!(lp.unwatch(tok));
    drop(r);

    // A regular file cannot be watched by epoll: reported through the callback.
    let f = std::fs::File::open("/proc/self/status").unwrap();
    let errs = Rc::new(RefCell::new(Vec::new()));
    let e = errs.clone();
    lp.watch(f.as_raw_fd(), Interest::READ, move |lp, t, ready| {
        e.borrow_mut().push(ready);
        lp.unwatch(t);
    })
    .unwrap();
    lp.run_once_nowait().unwrap();
    assert_eq!(errs.borrow().len(), 1);
    if lp.backend_name() == "io_uring" {
        // io_uring polls regular files like poll(2) does: always ready.
        assert!(errs.borrow()[0].contains(Ready::READABLE));
    } else {
        assert!(errs.borrow()[0].contains(Ready::ERROR));
    }
    assert!(lp.watch(-1, Interest::READ, |_, _, _| {}).is_err());
}

/// A host loop (poll(2) here, libuv or GLib in real life) drives myriad through its backend
/// fd, next_timeout and run_once_nowait only.
#[test]
fn host_poll_loop_drives_timers_connections_and_late_changes() {
    let mut lp = Loop::new().unwrap();
    let l = myriad::Listener::bind(
        &"127.0.0.1:0".parse().unwrap(),
        &myriad::ListenOptions::default(),
    )
    .unwrap();
    let addr = match l.addr() {
        myriad::Addr::Tcp(a) => *a,
        _ => unreachable!(),
    };
    lp.listen(l, |lp, a| {
        lp.add_conn(a, common::Echo);
    });
    let fired = Rc::new(RefCell::new(Vec::new()));
    let f = fired.clone();
    lp.timer(Duration::from_millis(30), move |lp| {
        f.borrow_mut().push("t30");
        let f2 = f.clone();
        // A timer armed inside a callback: the host must learn the new deadline.
        lp.timer(Duration::from_millis(10), move |_| {
            f2.borrow_mut().push("t30+10")
        });
    });
    let (tx, rx) = mpsc::channel();
    let client = thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"via host").unwrap();
        let mut b = [0u8; 8];
        s.read_exact(&mut b).unwrap();
        tx.send(b).unwrap();
    });

    let host_poll = |lp: &mut Loop| {
        let timeout = lp.next_timeout();
        let ms = timeout.map_or(-1, |d| d.as_millis() as i32);
        let mut pfd = libc::pollfd {
            fd: lp.backend_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms.min(1000)) };
        lp.run_once_nowait().unwrap();
    };

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut echoed = None;
    while (echoed.is_none() || fired.borrow().len() < 2) && Instant::now() < deadline {
        host_poll(&mut lp);
        if echoed.is_none() {
            echoed = rx.try_recv().ok();
        }
    }
    client.join().unwrap();
    assert_eq!(echoed.as_ref().map(|b| &b[..]), Some(&b"via host"[..]));
    assert_eq!(*fired.borrow(), vec!["t30", "t30+10"]);

    // Idle with no timers: the host may sleep until the backend fd is readable.
    assert_eq!(lp.next_timeout(), None);

    // A change made by the host just before it goes back to polling: a new fd watch whose
    // fd is already readable. It is queued, not yet in the epoll set, so the reported timeout
    // must be 0 — otherwise the host sleeps forever (libuv's Electron bug).
    let (r, w) = pipe();
    std::fs::File::from(w).write_all(b"x").unwrap();
    let seen = Rc::new(RefCell::new(false));
    let s = seen.clone();
    lp.watch(r.as_raw_fd(), Interest::READ, move |lp, t, _| {
        *s.borrow_mut() = true;
        lp.unwatch(t);
    })
    .unwrap();
    assert_eq!(lp.next_timeout(), Some(Duration::ZERO));
    // A timer armed from the host: reported (rounded up to whole ms), never as "forever".
    lp.run_once_nowait().unwrap();
    assert!(*seen.borrow(), "watch registered in the host's pass");
    lp.timer(Duration::from_millis(7), |_| {});
    let t = lp.next_timeout().unwrap();
    assert!(t > Duration::ZERO && t <= Duration::from_millis(7), "{t:?}");
    // A deferred callback also makes it 0.
    lp.defer(|_| {});
    assert_eq!(lp.next_timeout(), Some(Duration::ZERO));
}
