//! Signals reach loop callbacks through the signalfd. Its own process and no test harness:
//! the harness's threads would not have the signals blocked, and a process-directed signal
//! could land on one of them instead of the loop's signalfd.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use myriad::Loop;

fn run_until(lp: &mut Loop, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        lp.run_once().unwrap();
    }
}

fn signal_sent_to_process_reaches_callback() {
    let mut lp = Loop::new().unwrap();
    let got: Rc<RefCell<Vec<i32>>> = Rc::default();
    let g = got.clone();
    let id = lp
        .watch_signal(libc::SIGUSR1, move |_, s| g.borrow_mut().push(s))
        .unwrap();
    let g = got.clone();
    lp.watch_signal(libc::SIGHUP, move |_, s| g.borrow_mut().push(s))
        .unwrap();
    // A bounded wait: a lost signal fails instead of hanging.
    lp.timer(Duration::from_secs(4), |_| panic!("signal never arrived"));
    // SAFETY: kill(2) on our own pid.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    let g = got.clone();
    run_until(&mut lp, "SIGUSR1", move || g.borrow().len() == 1);
    // SAFETY: kill(2) on our own pid.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let g = got.clone();
    run_until(&mut lp, "SIGHUP", move || g.borrow().len() == 2);
    assert_eq!(*got.borrow(), vec![libc::SIGUSR1, libc::SIGHUP]);
    assert!(lp.unwatch_signal(id));
    assert!(!lp.unwatch_signal(id));
    assert!(lp.watch_signal(libc::SIGKILL, |_, _| {}).is_err());
    assert!(lp.watch_signal(0, |_, _| {}).is_err());
}

fn sigterm_stops_the_loop() {
    let mut lp = Loop::new().unwrap();
    lp.watch_signal(libc::SIGTERM, |lp, _| lp.stop()).unwrap();
    lp.timer(Duration::from_millis(10), |_| {
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    lp.timer(Duration::from_secs(4), |_| {
        panic!("SIGTERM never stopped the loop")
    });
    lp.run().unwrap();
}

fn main() {
    let tests: [(&str, fn()); 2] = [
        (
            "signal_sent_to_process_reaches_callback",
            signal_sent_to_process_reaches_callback,
        ),
        ("sigterm_stops_the_loop", sigterm_stops_the_loop),
    ];
    let mut failed = 0;
    for (name, f) in tests {
        match std::panic::catch_unwind(f) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
