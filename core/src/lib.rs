//! myriad: a single-syscall event loop (epoll or io_uring on Linux, kqueue on FreeBSD and
//! macOS, behind one backend trait) for application servers.
//!
//! One [`Loop`] per thread owns a backend, a slab of sources (listeners, connections, user
//! fd watchers), a timer heap whose next deadline is the wait's timeout, a signalfd, and an
//! eventfd for cross-thread [`Handle::post`]. Each socket is registered once,
//! edge-triggered; reads stop at a short read; output produced from one read leaves in one
//! write. [`Loop::stats`] counts the loop's own syscalls so tests can assert all of that.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod accesslog;
pub mod app;
pub mod cookie;
pub mod fcgi;
pub mod files;
pub mod form;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod net;
pub mod percent;
pub mod reactor;
pub mod router;
pub mod server;
pub mod supervisor;
mod sys;
pub mod systemd;
#[cfg(feature = "tls")]
pub mod tls;
pub mod workpool;
pub mod ws;

pub use accesslog::{AccessLog, AccessLogStats};
pub use app::{Body, BodySize, Completion, Request, Response, ResponseError};
pub use net::{
    parse_listen, Accepted, Addr, ConnOptions, Io, ListenOptions, Listener, PeerAddr, Protocol,
    ResolveId, Target,
};
pub use reactor::{Closed, Handle, Loop, Posted, SignalId, Stats, TimerId, Token};
pub use server::{Proto, Server, ServerOptions};
pub use supervisor::{Supervisor, SupervisorOptions, Worker};
pub use sys::{Interest, Ready};
pub use workpool::{WorkError, WorkId, WorkPool};

/// The README's Rust example, compiled as a doctest so that it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The library's version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
