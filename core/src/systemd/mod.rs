//! systemd's two process protocols, without libsystemd: socket activation
//! (`LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`, sd_listen_fds(3)), in both directions —
//! taking the listeners a service manager passed ([`listen_fds`]) and passing listeners to an
//! exec'd child the same way ([`PassFds`], [`spawn`]) — and readiness notification over
//! `NOTIFY_SOCKET` (sd_notify(3): [`Notifier`], [`notify`], [`watchdog_interval`], [`start_watchdog`]).
//!
//! Both are plain environment variables and a datagram: a program started by
//! `systemd-socket-activate`, by a `.socket` unit, or by any supervisor that speaks the
//! protocol (the myriad supervisor's exec mode does) gets the same fds and names.
//!
//! The name convention the demos and the supervisor use: an fd named `fcgi` serves FastCGI,
//! any other name (`http`, systemd's default `unknown`, a unit's own names) serves HTTP
//! ([`proto_for_name`]).

mod listen;
mod notify;
mod spawn;

pub use listen::{
    listen_fds, listen_fds_count, proto_for_name, ActivationError, ListenFd, LISTEN_FDS_START,
};
pub use notify::{
    monotonic_usec, notify, notify_reloading, service_state, start_watchdog, watchdog_interval,
    Notifier,
};
pub use spawn::{spawn, spawn_with, ChildEnv, PassFds};
