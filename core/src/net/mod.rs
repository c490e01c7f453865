//! Networking on the loop: the address syntax, listeners, connections and the buffer pool.

mod addr;
pub(crate) mod conn;
pub(crate) mod connect;
mod contain;
pub(crate) mod file;
mod listen_spec;
mod listener;
pub(crate) mod pool;
pub mod transport;

pub use addr::{Addr, AddrError, PeerAddr};
pub(crate) use conn::SMALL_STATIC;
pub use conn::{ConnOptions, Io, Protocol};
pub use connect::{ResolveFn, ResolveId, Target};
pub use listen_spec::parse_listen;
pub(crate) use listener::local_addr;
pub use listener::{AcceptFn, Accepted, ListenOptions, Listener};
pub use pool::DEFAULT_BUF_SIZE;
pub use transport::{Plain, TlsInfo, Transport, Wire};
