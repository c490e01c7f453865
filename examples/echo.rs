//! A small echo server on myriad's loop: `echo [--listen ADDR]... [--threads N]`.
//! ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N (default 127.0.0.1:7070; port 0 picks
//! one). Prints `listening echo ADDR` per listener, logs the loop's syscall counters every
//! 10 s, and exits 0 on SIGTERM or SIGINT.

use std::time::Duration;

use myriad::{Addr, Io, ListenOptions, Listener, Loop, Protocol};

struct Echo;

impl Protocol for Echo {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        io.write(input);
        input.len()
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("echo: {msg}\nusage: echo [--listen ADDR]... [--threads N]");
    std::process::exit(2);
}

fn main() {
    let mut addrs: Vec<Addr> = Vec::new();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                let v = args.next().unwrap_or_else(|| usage("--listen needs ADDR"));
                addrs.push(v.parse().unwrap_or_else(|e| usage(&format!("{e}"))));
            }
            "--threads" => {
                let v = args.next().unwrap_or_else(|| usage("--threads needs N"));
                threads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .unwrap_or_else(|| usage("--threads takes 1..256"));
            }
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    if addrs.is_empty() {
        addrs.push("127.0.0.1:7070".parse().unwrap());
    }
    // Per thread, one listener for each address.
    let mut per_thread: Vec<Vec<Listener>> = (0..threads).map(|_| Vec::new()).collect();
    for a in &addrs {
        let ls = Listener::bind_many(a, threads, &ListenOptions::default()).unwrap_or_else(|e| {
            eprintln!("echo: cannot listen on {a}: {e}");
            std::process::exit(1);
        });
        println!("listening echo {}", ls[0].addr());
        for (t, l) in ls.into_iter().enumerate() {
            per_thread[t].push(l);
        }
    }
    use std::io::Write;
    std::io::stdout().flush().unwrap();

    // The main loop watches the signals before other threads start (they inherit the mask).
    let mut main_lp = Loop::new().expect("loop");
    let handles: std::rc::Rc<std::cell::RefCell<Vec<myriad::Handle>>> = Default::default();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let hs = handles.clone();
        main_lp
            .watch_signal(sig, move |lp, _| {
                for h in hs.borrow().iter() {
                    h.stop();
                }
                lp.stop();
            })
            .expect("signal");
    }
    let workers: Vec<_> = per_thread
        .drain(1..)
        .map(|ls| {
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let mut lp = Loop::new().expect("loop");
                for l in ls {
                    lp.listen(l, |lp, a| {
                        lp.add_conn(a, Echo);
                    });
                }
                tx.send(lp.handle()).unwrap();
                lp.run().expect("run");
            });
            (t, rx.recv().unwrap())
        })
        .collect();
    handles
        .borrow_mut()
        .extend(workers.iter().map(|w| w.1.clone()));
    for l in per_thread.pop().unwrap() {
        main_lp.listen(l, |lp, a| {
            lp.add_conn(a, Echo);
        });
    }
    main_lp.repeat(Duration::from_secs(10), Duration::from_secs(10), |lp, _| {
        eprintln!(
            "echo: {} connections; {:?}",
            lp.connection_count(),
            lp.stats()
        );
    });
    main_lp.run().expect("run");
    for (t, _) in workers {
        t.join().unwrap();
    }
}
