//! The pool's status, PHP-FPM style (pool, start time, accepted connections, listen queue,
//! idle/active workers, max active reached, slow requests) with one entry per worker (pid,
//! state, requests, in flight, RSS, start time, last request), as JSON and as OpenMetrics
//! text, served by the supervisor's own loop on its status listeners.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::pool::{Phase, State};
use crate::net::Addr;
use crate::reactor::Loop;
use crate::server::{Proto, ServerOptions};

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, not serving yet.
    Starting,
    /// Serving, with nothing in flight.
    Idle,
    /// Serving, with requests in flight.
    Busy,
    /// Told to stop: finishing what it has.
    Retiring,
}

impl WorkerState {
    /// The state's name in the status ("starting", "idle", "busy", "retiring").
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
        }
    }
}

/// One worker.
#[derive(Clone, Debug)]
pub struct WorkerStatus {
    /// Process id.
    pub pid: i32,
    /// Slot (listener set) it serves.
    pub slot: usize,
    /// State.
    pub state: WorkerState,
    /// Requests handed to its handlers.
    pub requests: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Resident memory in bytes (read once a second; 0 where unknown).
    pub rss: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time: u64,
    /// The request running now or last ("GET /x").
    pub last_request: String,
}

/// The pool.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    /// The pool's name.
    pub pool: String,
    /// "static" or "dynamic".
    pub process_manager: &'static str,
    /// The supervisor's start time, seconds since the Unix epoch.
    pub start_time: u64,
    /// Requests accepted by the pool's workers, those gone included.
    pub accepted_conn: u64,
    /// Connections waiting in the accept queues now (TCP).
    pub listen_queue: u64,
    /// The accept queues' capacity.
    pub listen_queue_len: u64,
    /// Serving workers with nothing in flight.
    pub idle_processes: usize,
    /// Serving workers with requests in flight.
    pub active_processes: usize,
    /// The most workers busy at once.
    pub max_active_processes: usize,
    /// Requests that ran longer than the slow threshold.
    pub slow_requests: u64,
    /// Workers started to replace others (crashes, recycling, reloads).
    pub respawns: u64,
    /// The supervisor's pid.
    pub pid: i32,
    /// "running" or "stopping".
    pub phase: &'static str,
    /// Every worker.
    pub workers: Vec<WorkerStatus>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The pool's status now.
pub(crate) fn snapshot(s: &State) -> PoolStatus {
    let mut workers = Vec::new();
    let (mut idle, mut active, mut accepted) = (0, 0, s.gone_requests);
    for c in &s.children {
        let in_flight = c.in_flight();
        let state = if c.term_at.is_some() || c.killed {
            WorkerState::Retiring
        } else if !c.ready {
            WorkerState::Starting
        } else if in_flight > 0 {
            active += 1;
            WorkerState::Busy
        } else {
            idle += 1;
            WorkerState::Idle
        };
        accepted += c.requests();
        workers.push(WorkerStatus {
            pid: c.pid,
            slot: c.slot,
            state,
            requests: c.requests(),
            in_flight,
            rss: c.rss,
            start_time: unix_secs(c.started),
            last_request: c.page.page().current().1,
        });
    }
    let (mut q, mut qlen) = (0, 0);
    for b in &s.bound {
        for l in &b.socks {
            if let (Addr::Tcp(_), Some((n, max))) = (&b.addr, super::proc::listen_queue(l.fd())) {
                q += u64::from(n);
                qlen += u64::from(max);
            }
        }
    }
    PoolStatus {
        pool: s.opts.pool_name.clone(),
        process_manager: if s.opts.max_workers > s.opts.workers {
            "dynamic"
        } else {
            "static"
        },
        start_time: unix_secs(s.started),
        accepted_conn: accepted,
        listen_queue: q,
        listen_queue_len: qlen,
        idle_processes: idle,
        active_processes: active,
        max_active_processes: s.max_active.max(active),
        slow_requests: s.slow_requests,
        respawns: s.respawns,
        // SAFETY: getpid cannot fail.
        pid: unsafe { libc::getpid() },
        phase: if s.phase == Phase::Running {
            "running"
        } else {
            "stopping"
        },
        workers,
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl PoolStatus {
    /// As JSON (PHP-FPM's field names, plus `workers`).
    pub fn to_json(&self) -> String {
        let mut o = String::from("{\"pool\":");
        json_str(&mut o, &self.pool);
        let _ = write!(
            o,
            ",\"process manager\":\"{}\",\"start time\":{},\"accepted conn\":{},\"listen queue\":{},\"listen queue len\":{},\"idle processes\":{},\"active processes\":{},\"total processes\":{},\"max active processes\":{},\"slow requests\":{},\"respawns\":{},\"pid\":{},\"phase\":\"{}\",\"workers\":[",
            self.process_manager,
            self.start_time,
            self.accepted_conn,
            self.listen_queue,
            self.listen_queue_len,
            self.idle_processes,
            self.active_processes,
            self.workers.len(),
            self.max_active_processes,
            self.slow_requests,
            self.respawns,
            self.pid,
            self.phase
        );
        for (i, w) in self.workers.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"pid\":{},\"slot\":{},\"state\":\"{}\",\"requests\":{},\"in flight\":{},\"rss\":{},\"start time\":{},\"last request\":",
                w.pid,
                w.slot,
                w.state.as_str(),
                w.requests,
                w.in_flight,
                w.rss,
                w.start_time
            );
            json_str(&mut o, &w.last_request);
            o.push('}');
        }
        o.push_str("]}\n");
        o
    }

    /// As OpenMetrics text (Prometheus), ending with `# EOF`.
    pub fn to_openmetrics(&self) -> String {
        let mut o = String::new();
        let pool = self.pool.replace(['"', '\\', '\n'], "_");
        let mut g = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                o,
                "# TYPE myriad_{name} {kind}\n# HELP myriad_{name} {help}"
            );
            let suffix = if kind == "counter" { "_total" } else { "" };
            let _ = writeln!(o, "myriad_{name}{suffix}{{pool=\"{pool}\"}} {v}");
        };
        g(
            "start_time_seconds",
            "gauge",
            "When the supervisor started.",
            self.start_time,
        );
        g(
            "accepted_requests",
            "counter",
            "Requests accepted by the pool's workers.",
            self.accepted_conn,
        );
        g(
            "listen_queue",
            "gauge",
            "Connections waiting to be accepted.",
            self.listen_queue,
        );
        g(
            "listen_queue_length",
            "gauge",
            "Capacity of the accept queues.",
            self.listen_queue_len,
        );
        g(
            "idle_workers",
            "gauge",
            "Serving workers with nothing in flight.",
            self.idle_processes as u64,
        );
        g(
            "active_workers",
            "gauge",
            "Serving workers with requests in flight.",
            self.active_processes as u64,
        );
        g(
            "workers",
            "gauge",
            "Worker processes.",
            self.workers.len() as u64,
        );
        g(
            "max_active_workers",
            "gauge",
            "The most workers busy at once.",
            self.max_active_processes as u64,
        );
        g(
            "slow_requests",
            "counter",
            "Requests slower than the slow threshold.",
            self.slow_requests,
        );
        g(
            "respawns",
            "counter",
            "Workers started to replace others.",
            self.respawns,
        );
        let per = [
            (
                "worker_requests",
                "counter",
                "Requests served by the worker.",
            ),
            (
                "worker_in_flight",
                "gauge",
                "Requests in flight in the worker.",
            ),
            (
                "worker_rss_bytes",
                "gauge",
                "Resident memory of the worker.",
            ),
        ];
        for (name, kind, help) in per {
            let _ = writeln!(
                o,
                "# TYPE myriad_{name} {kind}\n# HELP myriad_{name} {help}"
            );
            let suffix = if kind == "counter" { "_total" } else { "" };
            for w in &self.workers {
                let v = match name {
                    "worker_requests" => w.requests,
                    "worker_in_flight" => w.in_flight,
                    _ => w.rss,
                };
                let _ = writeln!(
                    o,
                    "myriad_{name}{suffix}{{pool=\"{pool}\",pid=\"{}\",state=\"{}\"}} {v}",
                    w.pid,
                    w.state.as_str()
                );
            }
        }
        o.push_str("# EOF\n");
        o
    }
}

/// Serves the status listeners from the supervisor's loop.
pub(crate) fn serve(lp: &mut Loop, st: &std::rc::Rc<std::cell::RefCell<State>>) {
    let listeners: Vec<crate::net::Listener> =
        st.borrow().status.iter().map(|(_, l)| l.clone()).collect();
    if listeners.is_empty() {
        return;
    }
    let st = st.clone();
    let srv = lp.server(ServerOptions::default(), move |_, req, mut res| {
        let snap = snapshot(&st.borrow());
        let om = req.path().ends_with("/metrics") || req.query().contains("openmetrics");
        let (ctype, body) = if om {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                snap.to_openmetrics(),
            )
        } else {
            ("application/json", snap.to_json())
        };
        let _ = res.header("Content-Type", ctype.as_bytes());
        let _ = res.header("Cache-Control", b"no-store");
        let _ = res.write(body.as_bytes());
        let _ = res.finish();
    });
    for l in listeners {
        srv.listen(lp, l, Proto::Http);
    }
}
