//! Outbound connections: a non-blocking connect(2) registered once like any accepted socket
//! (its first writable edge says it is connected, an error edge carries `SO_ERROR`), with a
//! connect timeout on the loop's timer heap; and host-name resolution on a helper thread,
//! so that getaddrinfo never blocks a loop.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use super::listener::{new_socket, set_opt, sockaddr_of, unix_sockaddr};
use super::{Accepted, Addr, ConnOptions, PeerAddr, Protocol};
use crate::reactor::{Handle, Loop, Token};
use crate::sys::syscall;

/// Where to connect: an address the loop can use at once, or a name to resolve first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A numeric address, unix:PATH or fd:N (an already connected socket to adopt).
    Addr(Addr),
    /// HOST:PORT with a host name (resolved off the loop thread).
    Name(String, u16),
}

impl Target {
    /// Parses HOST:PORT, [V6]:PORT, unix:PATH or fd:N, where HOST may be a name.
    pub fn parse(s: &str) -> io::Result<Target> {
        if let Ok(a) = s.parse::<Addr>() {
            return Ok(Target::Addr(a));
        }
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {s:?}"));
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
        if !ok {
            return Err(bad());
        }
        Ok(Target::Name(host.to_string(), port))
    }
}

/// Identifies a pending name resolution (see [`Loop::resolve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResolveId(u64);

/// Receives the addresses a name resolved to (or the error).
pub type ResolveFn = Box<dyn FnOnce(&mut Loop, io::Result<Vec<SocketAddr>>)>;

/// Pending resolutions of one loop.
#[derive(Default)]
pub(crate) struct Resolves {
    next: u64,
    pending: HashMap<u64, ResolveFn>,
}

struct Job {
    host: String,
    port: u16,
    id: u64,
    handle: Handle,
}

/// The resolver thread (started on demand; it exits after a few idle seconds, so that a
/// process that stopped resolving holds no thread and no resolver state).
static RESOLVER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
const RESOLVER_IDLE: Duration = Duration::from_secs(5);

fn lookup(j: Job) {
    let res = (j.host.as_str(), j.port)
        .to_socket_addrs()
        .map(|it| it.collect::<Vec<_>>());
    let id = j.id;
    // A loop that is gone no longer wants the answer.
    let _ = j.handle.post(move |lp| lp.resolved(id, res));
}

fn resolver(r: mpsc::Receiver<Job>) {
    loop {
        match r.recv_timeout(RESOLVER_IDLE) {
            Ok(j) => lookup(j),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Retire unless a job raced in; submitters hold the lock while sending.
                let mut tx = RESOLVER.lock().unwrap_or_else(|e| e.into_inner());
                match r.try_recv() {
                    Ok(j) => {
                        drop(tx);
                        lookup(j);
                    }
                    Err(_) => {
                        *tx = None;
                        return;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn submit(job: Job) -> io::Result<()> {
    let mut tx = RESOLVER.lock().unwrap_or_else(|e| e.into_inner());
    if tx.is_none() {
        let (s, r) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("myriad-resolver".into())
            .spawn(move || resolver(r))?;
        *tx = Some(s);
    }
    tx.as_ref()
        .expect("started above")
        .send(job)
        .map_err(|_| io::Error::other("resolver thread is gone"))
}

impl Loop {
    /// Resolves `host` (getaddrinfo, on a helper thread shared by all loops) and calls `f`
    /// on this loop with the addresses, in the order the resolver gave them.
    pub fn resolve(
        &mut self,
        host: &str,
        port: u16,
        f: impl FnOnce(&mut Loop, io::Result<Vec<SocketAddr>>) + 'static,
    ) -> io::Result<ResolveId> {
        let id = self.resolves.next;
        self.resolves.next += 1;
        submit(Job {
            host: host.to_string(),
            port,
            id,
            handle: self.handle(),
        })?;
        self.resolves.pending.insert(id, Box::new(f));
        Ok(ResolveId(id))
    }

    /// Forgets a pending resolution: its callback is dropped, never called. Returns false
    /// if it already completed.
    pub fn cancel_resolve(&mut self, id: ResolveId) -> bool {
        self.resolves.pending.remove(&id.0).is_some()
    }

    fn resolved(&mut self, id: u64, res: io::Result<Vec<SocketAddr>>) {
        if let Some(f) = self.resolves.pending.remove(&id) {
            f(self, res);
        }
    }

    /// Connects to `addr` without blocking and drives the socket with `proto`:
    /// [`Protocol::on_connect`] once connected, or [`Protocol::on_close`] with the error
    /// (`ETIMEDOUT` after `timeout`). Output queued before the connect completes is sent
    /// right after it. `Addr::Fd` adopts an already connected socket (made non-blocking).
    /// Errors known at once (an unusable address, a full Unix backlog) are returned here.
    pub fn connect<P: Protocol>(
        &mut self,
        addr: &Addr,
        timeout: Option<Duration>,
        opts: ConnOptions,
        proto: P,
    ) -> io::Result<Token> {
        let (fd, peer) = match addr {
            Addr::Tcp(sa) => (connect_tcp(sa)?, PeerAddr::Inet(*sa)),
            Addr::Unix(path) => {
                let fd = new_socket(libc::AF_UNIX)?;
                let (sun, len) = unix_sockaddr(path)?;
                syscall!(connect(
                    fd.as_raw_fd(),
                    (&sun as *const libc::sockaddr_un).cast(),
                    len
                ))?;
                (fd, PeerAddr::Unix)
            }
            Addr::Fd(n) => {
                let flags = syscall!(fcntl(*n, libc::F_GETFL))?;
                syscall!(fcntl(*n, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
                // SAFETY: the caller hands over fd N, which nothing else will close.
                let fd = unsafe { OwnedFd::from_raw_fd(*n) };
                let peer = super::listener::local_addr(*n).unwrap_or(PeerAddr::Unix);
                return Ok(self.add_conn_with(Accepted { fd, peer }, proto, opts));
            }
        };
        self.stats.other += 2; // socket + connect
        let conn = Accepted { fd, peer };
        Ok(self.add_connecting(conn, proto, opts, timeout))
    }
}

fn connect_tcp(sa: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = new_socket(family)?;
    set_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    let (st, len) = sockaddr_of(sa);
    match syscall!(connect(
        fd.as_raw_fd(),
        (&st as *const libc::sockaddr_storage).cast(),
        len
    )) {
        Ok(_) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert!(matches!(
            Target::parse("127.0.0.1:80").unwrap(),
            Target::Addr(Addr::Tcp(_))
        ));
        assert!(matches!(
            Target::parse("[::1]:80").unwrap(),
            Target::Addr(Addr::Tcp(_))
        ));
        assert!(matches!(
            Target::parse("unix:/tmp/x").unwrap(),
            Target::Addr(Addr::Unix(_))
        ));
        assert_eq!(
            Target::parse("example.org:8080").unwrap(),
            Target::Name("example.org".into(), 8080)
        );
        assert!(Target::parse("example.org").is_err());
        assert!(Target::parse("exa mple:1").is_err());
        assert!(Target::parse("host:99999").is_err());
    }
}
