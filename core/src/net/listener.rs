//! Listening sockets: TCP (IPv4/IPv6), Unix (mode, stale-file replacement that never removes
//! an unrelated file), and inherited fds; one per thread with SO_REUSEPORT, or one shared by
//! all threads with EPOLLEXCLUSIVE. Accepting uses accept4 and keeps the peer address it
//! returns; it stops at EAGAIN or after a bounded batch, and on EMFILE/ENFILE it pauses with
//! a backoff instead of spinning. On io_uring (5.19+) the ring accepts instead: one
//! multishot accept per listener, no accept4 at all; a Unix connection's peer needs no
//! syscall, a TCP one's a `getpeername` (a multishot accept cannot return addresses).

use std::any::Any;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Addr, PeerAddr};
use crate::reactor::{Loop, Next, Source, Token};
use crate::sys::{syscall, Interest, Ready};

/// Connections accepted per listener per loop iteration, at most.
const ACCEPT_BATCH: usize = 64;
/// Pause after EMFILE/ENFILE/ENOBUFS before trying to accept again.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// Options for binding a listener.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// listen(2) backlog.
    pub backlog: i32,
    /// File mode of a Unix socket (e.g. 0o660); `None` keeps the umask's choice.
    pub unix_mode: Option<u32>,
    /// Owner (uid) given to a Unix socket file; `None` leaves the process's.
    pub unix_owner: Option<u32>,
    /// Group (gid) given to a Unix socket file; `None` leaves the process's.
    pub unix_group: Option<u32>,
    /// Share the TCP port with other sockets that ask for it too (SO_REUSEPORT), other
    /// processes included. Without it a port somebody already listens on is refused with
    /// EADDRINUSE, whatever the number of threads (`bind_many` still gives its own threads
    /// one socket each with SO_REUSEPORT, after checking that nobody else holds the port).
    pub reuseport: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 4096,
            unix_mode: None,
            unix_owner: None,
            unix_group: None,
            reuseport: false,
        }
    }
}

struct Inner {
    fd: OwnedFd,
    addr: Addr,
    /// A Unix socket file we created, with its identity, removed when the listener goes.
    unix_file: Option<(PathBuf, u64, u64)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.unix_file {
            // Remove the file only if it is still the socket we created.
            if let Ok((d, i, true)) = stat_identity(path) {
                if d == *dev && i == *ino {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// A bound, listening socket. Cloning shares the socket (for one listener used by several
/// loops with EPOLLEXCLUSIVE).
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
    shared: bool,
}

/// A connection taken by accept4, with the peer address it returned.
pub struct Accepted {
    /// The connected, non-blocking, close-on-exec socket.
    pub fd: OwnedFd,
    /// The peer's address.
    pub peer: PeerAddr,
}

impl Listener {
    /// Binds and listens on `addr` (for `Addr::Fd`, adopts the inherited listening socket).
    pub fn bind(addr: &Addr, opts: &ListenOptions) -> io::Result<Listener> {
        let inner = match addr {
            Addr::Tcp(sa) => bind_tcp(sa, opts)?,
            Addr::Unix(path) => bind_unix(path, opts)?,
            Addr::Fd(n) => adopt_fd(*n)?,
        };
        Ok(Listener {
            inner: Arc::new(inner),
            shared: false,
        })
    }

    /// Binds `n` listeners for `n` loops: TCP gets one socket each with SO_REUSEPORT (the
    /// kernel spreads connections); Unix sockets and inherited fds get one socket shared by
    /// all, registered with EPOLLEXCLUSIVE so one loop is woken per connection. With port 0,
    /// every TCP socket gets the port the first one was given.
    ///
    /// One rule whatever `n`: unless `opts.reuseport` asks for sharing, a TCP port that
    /// another socket (another process, or another server of this one) listens on is
    /// refused with EADDRINUSE. With several threads the port is first bound by a probe
    /// socket without SO_REUSEPORT, which fails if anybody holds it, and closed just before
    /// the threads' sockets are bound (two servers starting in that same instant could
    /// still both succeed).
    pub fn bind_many(addr: &Addr, n: usize, opts: &ListenOptions) -> io::Result<Vec<Listener>> {
        let n = n.max(1);
        match addr {
            // macOS's SO_REUSEPORT does not spread connections over the sockets of a port:
            // there, TCP shares one socket like the others.
            Addr::Tcp(sa) if n > 1 && cfg!(not(target_os = "macos")) => {
                if !opts.reuseport && sa.port() != 0 {
                    drop(probe_tcp(sa)?);
                }
                let opts = ListenOptions {
                    reuseport: true,
                    ..opts.clone()
                };
                let first = Listener::bind(addr, &opts)?;
                let bound = first.addr().clone();
                let mut v = vec![first];
                for _ in 1..n {
                    v.push(Listener::bind(&bound, &opts)?);
                }
                Ok(v)
            }
            _ => {
                let mut l = Listener::bind(addr, opts)?;
                l.shared = n > 1;
                Ok(vec![l; n])
            }
        }
    }

    /// A listener on an already listening socket this process owns (e.g. one from
    /// [`crate::systemd::listen_fds`]); its address is `fd:N`. Fails (closing `fd`) if it is
    /// not a listening socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        let n = fd.as_raw_fd();
        check_listening(n)?;
        log::debug!("listening on inherited fd {n}");
        Ok(Listener {
            inner: Arc::new(Inner {
                fd,
                addr: Addr::Fd(n),
                unix_file: None,
            }),
            shared: false,
        })
    }

    /// Like [`Listener::bind_many`] for a listener this process owns already: `n` handles
    /// sharing the one socket (registered with EPOLLEXCLUSIVE when `n` > 1).
    pub fn share(self, n: usize) -> Vec<Listener> {
        let n = n.max(1);
        let mut l = self;
        l.shared = n > 1;
        vec![l; n]
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub fn addr(&self) -> &Addr {
        &self.inner.addr
    }

    /// The listening fd.
    pub fn fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

pub(crate) fn sockaddr_of(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all-zero is valid.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data for which all-zero is valid.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            {
                sin.sin_len = size_of::<libc::sockaddr_in>() as u8;
            }
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data for which all-zero is valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            #[cfg(any(target_os = "freebsd", target_os = "macos"))]
            {
                sin6.sin6_len = size_of::<libc::sockaddr_in6>() as u8;
            }
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// Decodes a sockaddr written by the kernel (accept4, getsockname).
pub(crate) fn peer_of(st: &libc::sockaddr_storage) -> PeerAddr {
    match st.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(st as *const _ as *const libc::sockaddr_in) };
            PeerAddr::Inet(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(st as *const _ as *const libc::sockaddr_in6) };
            PeerAddr::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => PeerAddr::Unix,
    }
}

pub(crate) fn new_socket(family: i32) -> io::Result<OwnedFd> {
    #[cfg(not(target_os = "macos"))]
    let fd = syscall!(socket(
        family,
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?;
    #[cfg(target_os = "macos")]
    let fd = syscall!(socket(family, libc::SOCK_STREAM, 0))?;
    // SAFETY: socket returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    #[cfg(target_os = "macos")]
    macos_socket_flags(fd.as_raw_fd())?;
    Ok(fd)
}

/// What macOS cannot ask for when it creates a socket: non-blocking, close-on-exec, and no
/// SIGPIPE on a write to a closed peer (macOS may not honour `MSG_NOSIGNAL`).
#[cfg(target_os = "macos")]
fn macos_socket_flags(fd: RawFd) -> io::Result<()> {
    crate::sys::set_nonblock_cloexec(fd)?;
    set_opt(fd, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1)
}

pub(crate) fn set_opt(fd: RawFd, level: i32, name: i32, val: i32) -> io::Result<()> {
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&val as *const i32).cast(),
        size_of::<i32>() as libc::socklen_t
    ))
    .map(drop)
}

/// What a socket-address call (getsockname, getpeername) looks like.
type SockAddrFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// A socket's address as `get` reports it.
fn sock_addr(fd: RawFd, get: SockAddrFn) -> io::Result<PeerAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `get` writes at most `len` bytes into `st`, a live sockaddr_storage.
    if unsafe {
        get(
            fd,
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } == -1
    {
        return Err(io::Error::last_os_error());
    }
    Ok(peer_of(&st))
}

/// The local address of a socket (getsockname).
pub(crate) fn local_addr(fd: RawFd) -> io::Result<PeerAddr> {
    sock_addr(fd, libc::getsockname)
}

/// The peer address of a connected socket (getpeername).
fn peer_addr(fd: RawFd) -> io::Result<PeerAddr> {
    sock_addr(fd, libc::getpeername)
}

/// Binds `sa` without SO_REUSEPORT (SO_REUSEADDR only, as a listener would): fails with
/// EADDRINUSE if any socket, with SO_REUSEPORT or not, listens there.
fn probe_tcp(sa: &SocketAddr) -> io::Result<OwnedFd> {
    let fd = new_socket(if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    })?;
    let raw = fd.as_raw_fd();
    set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if sa.is_ipv6() {
        set_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (st, len) = sockaddr_of(sa);
    syscall!(bind(
        raw,
        (&st as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    Ok(fd)
}

fn bind_tcp(sa: &SocketAddr, opts: &ListenOptions) -> io::Result<Inner> {
    let family = if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = new_socket(family)?;
    let raw = fd.as_raw_fd();
    set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if opts.reuseport {
        // FreeBSD spreads connections over the sockets of a port only with the _LB option.
        #[cfg(target_os = "freebsd")]
        set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT_LB, 1)?;
        #[cfg(not(target_os = "freebsd"))]
        set_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if sa.is_ipv6() {
        set_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: no setsockopt per
    // connection, and responses written in one piece are never held back by Nagle.
    set_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    let (st, len) = sockaddr_of(sa);
    syscall!(bind(
        raw,
        (&st as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    syscall!(listen(raw, opts.backlog))?;
    let bound = match local_addr(raw)? {
        PeerAddr::Inet(a) => a,
        PeerAddr::Unix => *sa,
    };
    log::debug!("listening on {bound} (fd {raw})");
    Ok(Inner {
        fd,
        addr: Addr::Tcp(bound),
        unix_file: None,
    })
}

/// (dev, ino, is_socket) of a path, without following a symlink.
fn stat_identity(path: &Path) -> io::Result<(u64, u64, bool)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::symlink_metadata(path)?;
    Ok((md.dev(), md.ino(), md.file_type().is_socket()))
}

pub(crate) fn unix_sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path too long or contains NUL",
        ));
    }
    for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((sun, len as libc::socklen_t))
}

/// If `path` exists: a socket nobody listens on is stale and removed; a live socket gives
/// `AddrInUse`; anything that is not a socket is never touched and gives `AlreadyExists`.
fn clear_stale(path: &Path) -> io::Result<()> {
    let (_, _, is_sock) = match stat_identity(path) {
        Ok(id) => id,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_sock {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        )),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

fn bind_unix(path: &Path, opts: &ListenOptions) -> io::Result<Inner> {
    let (sun, len) = unix_sockaddr(path)?;
    clear_stale(path)?;
    let fd = new_socket(libc::AF_UNIX)?;
    let raw = fd.as_raw_fd();
    syscall!(bind(raw, (&sun as *const libc::sockaddr_un).cast(), len))?;
    let (dev, ino, _) = stat_identity(path)?;
    let inner = Inner {
        fd,
        addr: Addr::Unix(path.to_path_buf()),
        unix_file: Some((path.to_path_buf(), dev, ino)),
    };
    if let Some(mode) = opts.unix_mode {
        // Before listen(): nobody can connect until the mode is right.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if opts.unix_owner.is_some() || opts.unix_group.is_some() {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // u32::MAX is (uid_t)-1 / (gid_t)-1: "leave unchanged".
        let (uid, gid) = (
            opts.unix_owner.unwrap_or(u32::MAX),
            opts.unix_group.unwrap_or(u32::MAX),
        );
        // SAFETY: `c` is a NUL-terminated path; lchown does not follow a symlink.
        syscall!(lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t))?;
    }
    syscall!(listen(raw, opts.backlog))?;
    log::debug!("listening on unix:{} (fd {raw})", path.display());
    Ok(inner)
}

fn adopt_fd(n: i32) -> io::Result<Inner> {
    check_listening(n)?;
    // SAFETY: the caller hands the inherited fd over to us; nothing else in the process
    // should use it from now on (as with systemd's LISTEN_FDS or spawn-fcgi's fd 0).
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    log::debug!("listening on inherited fd {n}");
    Ok(Inner {
        fd,
        addr: Addr::Fd(n),
        unix_file: None,
    })
}

/// Checks that `n` is a listening socket, and makes it non-blocking and close-on-exec.
fn check_listening(n: RawFd) -> io::Result<()> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    syscall!(fstat(n, st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded and filled the struct.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {n} is not a socket"),
        ));
    }
    let mut val: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    syscall!(getsockopt(
        n,
        libc::SOL_SOCKET,
        libc::SO_ACCEPTCONN,
        (&mut val as *mut i32).cast(),
        &mut len
    ))?;
    if val == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {n} is not a listening socket"),
        ));
    }
    let flags = syscall!(fcntl(n, libc::F_GETFL))?;
    syscall!(fcntl(n, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    syscall!(fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC))?;
    Ok(())
}

/// Accept callback: gets the loop and the new connection.
pub type AcceptFn = Box<dyn FnMut(&mut Loop, Accepted)>;

struct ListenSource {
    l: Listener,
    on_accept: AcceptFn,
    paused: bool,
    /// When the last lack of fds (or memory) was logged, and how many since went unlogged:
    /// logged at most once a second, as nginx does, so running out of fds is never silent
    /// and never floods the log.
    warned_at: Option<Instant>,
    unlogged: u32,
    /// The backend accepts (see [`Loop::backend_accepts`]); `Some(unix)`: whether the
    /// socket is a Unix one, whose peers are unnamed.
    ring: Option<bool>,
}

impl ListenSource {
    fn accept_one(&mut self, lp: &mut Loop) -> io::Result<Accepted> {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        lp.stats.accept += 1;
        #[cfg(not(target_os = "macos"))]
        let fd = syscall!(accept4(
            self.l.fd(),
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
        ))?;
        #[cfg(target_os = "macos")]
        let fd = syscall!(accept(
            self.l.fd(),
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len
        ))?;
        log::trace!("accept4(fd {}) = {fd}", self.l.fd());
        // SAFETY: accept returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        #[cfg(target_os = "macos")]
        {
            lp.stats.other += 4; // three fcntl and a setsockopt
            macos_socket_flags(fd.as_raw_fd())?;
        }
        lp.stats.accepted += 1;
        Ok(Accepted {
            fd,
            peer: peer_of(&st),
        })
    }

    /// Handles a failed accept: false for a passing error (go on accepting), true after
    /// pausing (a lack of fds or memory, or an unexpected error: retried after a backoff
    /// rather than in a spin).
    fn failed(&mut self, lp: &mut Loop, token: Token, e: &io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => return false,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                let now = lp.now();
                if self
                    .warned_at
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    let more = std::mem::take(&mut self.unlogged);
                    log::warn!(
                        "accept on {}: {e}; pausing accepts for {:?} at a time{}",
                        self.l.addr(),
                        EMFILE_BACKOFF,
                        if more > 0 {
                            format!(" ({more} more since the last report)")
                        } else {
                            String::new()
                        }
                    );
                    self.warned_at = Some(now);
                } else {
                    self.unlogged += 1;
                }
            }
            _ => log::error!("accept on {}: {e}", self.l.addr()),
        }
        self.paused = true;
        let at = lp.now() + EMFILE_BACKOFF;
        lp.wake_at(at, token);
        true
    }
}

impl Source for ListenSource {
    fn ready(&mut self, lp: &mut Loop, token: Token, ready: Ready) -> Next {
        if ready.contains(Ready::TIMER) {
            self.paused = false;
            if self.ring.is_some() {
                // The accept ended with the error that paused it.
                lp.recv_ctl(self.l.fd(), token, true);
                return Next::Keep;
            }
        }
        if self.paused || self.ring.is_some() {
            return Next::Keep;
        }
        for _ in 0..ACCEPT_BATCH {
            match self.accept_one(lp) {
                Ok(a) => {
                    (self.on_accept)(lp, a);
                    if lp.removing(token) {
                        // Closed by that callback: take no more.
                        return Next::Keep;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Next::Keep,
                Err(e) => {
                    if self.failed(lp, token, &e) {
                        return Next::Keep;
                    }
                }
            }
        }
        // Bounded batch used up: come back next iteration without waiting for an edge.
        Next::Again
    }

    fn accepted(&mut self, lp: &mut Loop, token: Token, res: i32) -> Next {
        if res < 0 {
            if !self.failed(lp, token, &io::Error::from_raw_os_error(-res)) {
                lp.recv_ctl(self.l.fd(), token, true);
            }
            return Next::Keep;
        }
        // SAFETY: the backend handed over the fd its accept installed; nothing else has it.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        lp.stats.accepted += 1;
        let peer = if self.ring == Some(true) {
            PeerAddr::Unix
        } else {
            lp.stats.accept += 1;
            match peer_addr(fd.as_raw_fd()) {
                Ok(p) => p,
                Err(e) => {
                    // The peer is gone already (ENOTCONN): so is the connection.
                    log::debug!("getpeername on a connection from {}: {e}", self.l.addr());
                    return Next::Keep;
                }
            }
        };
        log::trace!("accepted fd {res} on {}", self.l.addr());
        (self.on_accept)(lp, Accepted { fd, peer });
        Next::Keep
    }

    fn close(&mut self, lp: &mut Loop, token: Token) {
        if Arc::strong_count(&self.l.inner) > 1 {
            // Other loops keep the socket open, so it stays in our epoll set unless removed.
            let _ = lp.deregister_fd(self.l.fd(), token);
        }
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn take_over(self: Box<Self>, _: &mut Loop, _: Token) -> Box<dyn Source> {
        self
    }
}

impl Loop {
    /// Accepts connections from `l` on this loop, calling `on_accept` for each (typically
    /// [`Loop::add_conn`]). Returns the listener's token, for [`Loop::close_listener`].
    pub fn listen(
        &mut self,
        l: Listener,
        on_accept: impl FnMut(&mut Loop, Accepted) + 'static,
    ) -> Token {
        let mut interest = Interest::READ | Interest::EDGE;
        if l.shared {
            interest = interest | Interest::EXCLUSIVE;
        }
        let fd = l.fd();
        // A supervised worker accepts with accept4 even on io_uring: a multishot accept
        // cancelled when the worker retires may already have taken connections from the
        // queue, which would be lost instead of left for the slot's next worker.
        let ring = (self.backend_accepts() && self.probe.is_none()).then(|| match l.addr() {
            Addr::Unix(_) => true,
            Addr::Tcp(_) => false,
            // Inherited: whatever getsockname says (a TCP peer is named, so asked for).
            Addr::Fd(_) => !matches!(local_addr(fd), Ok(PeerAddr::Inet(_))),
        });
        if ring.is_some() {
            // (The ring's accepts wake one waiter per connection, as EXCLUSIVE does.)
            interest = interest | Interest::ACCEPT;
        }
        self.add_source(Some((fd, interest)), |_| {
            Box::new(ListenSource {
                l,
                on_accept: Box::new(on_accept),
                paused: false,
                warned_at: None,
                unlogged: 0,
                ring,
            })
        })
    }

    /// Stops accepting on listener `token` and closes this loop's use of it. Returns false
    /// for a stale token.
    pub fn close_listener(&mut self, token: Token) -> bool {
        self.remove_source(token)
    }

    /// The bound address of listener `token`.
    pub fn listener_addr(&mut self, token: Token) -> Option<Addr> {
        self.with_source::<ListenSource, Addr>(token, |s, _, _| (s.l.addr().clone(), Next::Keep))
    }
}
