//! Servers (HTTP and FastCGI listeners, threads, limits) and the request/response handle.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use myriad::{
    Addr, Handle, ListenOptions, Listener, Loop, Proto, Request, Response, Server, ServerOptions,
};

use myriad::tls::TlsAcceptor;

use crate::loops::{enter, myriad_loop_t, with_loop};
use crate::{
    c_bytes, c_str, copy_cstr, fail, guard, guard_or, myriad_free_fn, os_err, FreeBuf, UserData,
    MYRIAD_EADDR, MYRIAD_EGONE, MYRIAD_EINVAL, MYRIAD_ENOTFOUND, MYRIAD_ESTATE,
    MYRIAD_EWRONGTHREAD, MYRIAD_OK,
};

/// Protocol: HTTP/1.1.
pub const MYRIAD_HTTP: c_int = 1;
/// Protocol: FastCGI.
pub const MYRIAD_FCGI: c_int = 2;
/// Protocol: HTTP/1.1 over TLS (a listener added by myriad_server_listen_tls).
pub const MYRIAD_HTTPS: c_int = 3;

/// Limit: largest request body in bytes (413 beyond).
pub const MYRIAD_MAX_BODY: c_int = 1;
/// Limit: largest request head in bytes (431 beyond).
pub const MYRIAD_MAX_HEAD: c_int = 2;
/// Timeout (ms) for a whole request head.
pub const MYRIAD_HEADER_TIMEOUT_MS: c_int = 3;
/// Timeout (ms) between pieces of a request body.
pub const MYRIAD_BODY_TIMEOUT_MS: c_int = 4;
/// Timeout (ms) of an idle keep-alive connection.
pub const MYRIAD_IDLE_TIMEOUT_MS: c_int = 5;
/// Timeout (ms) for a client that stops reading.
pub const MYRIAD_WRITE_TIMEOUT_MS: c_int = 6;
/// Graceful shutdown: longest wait (ms) for in-flight requests.
pub const MYRIAD_DRAIN_TIMEOUT_MS: c_int = 7;
/// FastCGI: largest total PARAMS size in bytes.
pub const MYRIAD_MAX_PARAMS: c_int = 8;
/// Timeout (ms) for a handler's response once the request is read: to its first output, then
/// between two pieces of it (default 60000, as nginx's fastcgi_read_timeout and
/// proxy_read_timeout). When it passes, a request nothing was sent for yet is answered 504
/// and its handler sees it aborted (myriad_req_is_aborted, the abort callback); a response
/// already started is cut short (as by myriad_req_abort). 0 turns it off.
pub const MYRIAD_RESPONSE_TIMEOUT_MS: c_int = 9;
/// FastCGI: most requests open at once on one connection (default 64; GET_VALUES reports it
/// as FCGI_MAX_REQS). A BEGIN_REQUEST beyond it gets END_REQUEST with FCGI_OVERLOADED
/// (FCGI_CANT_MPX_CONN when it is 1).
pub const MYRIAD_FCGI_MAX_REQUESTS: c_int = 10;

/// Body event: a piece of data.
pub const MYRIAD_BODY_DATA: c_int = 0;
/// Body event: the body is complete.
pub const MYRIAD_BODY_END: c_int = 1;
/// Body event: the body will not complete (client gone, timeout, bad framing).
pub const MYRIAD_BODY_ABORTED: c_int = 2;

/// A request and its response (opaque). Valid from the handler call until
/// myriad_req_finish (or myriad_req_send / myriad_req_send_async), which frees it.
/// Using it after that is a bug the library catches only for a while: a finished handle
/// is usually kept for reuse, and until it is reused (never within the next 64 requests
/// of the same server and loop) every call on it returns MYRIAD_EGONE.
pub struct myriad_req_t {
    req: *mut Request,
    res: Option<Response>,
    lp: *mut myriad_loop_t,
    handle: Handle,
    owner: crate::ThreadKey,
    in_handler: bool,
    finished: bool,
    /// Set to false when the handle is finished; callbacks that may outlive it (body,
    /// abort, drain) hold a clone. Made on the first such registration.
    alive: Option<Rc<Cell<bool>>>,
    cgi: Option<Vec<(String, String)>>,
    /// Path parameters set by myriad_router_dispatch / myriad_router_match (storage kept
    /// across reuses of the handle).
    pub(crate) params: myriad::router::Params,
    /// The server's free handles: a finished handle goes back there (a request then
    /// allocates nothing here).
    pool: std::rc::Weak<ReqPool>,
}

/// Finished request handles kept for reuse by one server on one loop, oldest first.
type ReqPool = RefCell<VecDeque<Box<myriad_req_t>>>;

/// Most finished handles a server keeps.
const REQ_POOL_MAX: usize = 256;

/// Finished handles that wait before reuse: the oldest is taken only when more than this
/// many are free. A handle used after its finish (a C bug) then fails with MYRIAD_EGONE for
/// at least this many later requests instead of acting on the very next one, as reuse of
/// the latest freed handle would. Costs under 10 KB per server and loop.
const REQ_QUARANTINE: usize = 64;

impl myriad_req_t {
    /// The flag callbacks check before using the handle (see `alive`).
    fn alive(&mut self) -> Rc<Cell<bool>> {
        self.alive
            .get_or_insert_with(|| Rc::new(Cell::new(true)))
            .clone()
    }

    /// Marks the handle finished: callbacks holding `alive` will not touch it.
    fn finish_handle(&mut self) {
        self.finished = true;
        if let Some(a) = self.alive.take() {
            a.set(false);
        }
    }
}

/// Frees a finished handle: back to its server's pool, or dropped.
///
/// # Safety
/// `r` came from `Box::into_raw` in the server's handler and is not used again.
unsafe fn release_req(r: *mut myriad_req_t) {
    // SAFETY: per the contract above.
    let mut b = unsafe { Box::from_raw(r) };
    drop(b.res.take());
    b.cgi = None;
    b.params.clear();
    b.req = std::ptr::null_mut();
    if let Some(pool) = b.pool.upgrade() {
        let mut free = pool.borrow_mut();
        if free.len() < REQ_POOL_MAX {
            free.push_back(b);
        }
    }
}

/// Request handler: called on a loop thread for each request. With several threads it is
/// called concurrently from each of them. The handler (or whoever it hands the request to)
/// must end every request with myriad_req_finish, myriad_req_send(_async) or
/// myriad_req_abort; one that never ends is ended by the server's response timeout (a
/// server limit with a default, see the MYRIAD_*_TIMEOUT_MS limits), not left hanging.
pub type myriad_handler_fn =
    Option<unsafe extern "C" fn(req: *mut myriad_req_t, userdata: *mut c_void)>;

struct CHandler {
    cb: unsafe extern "C" fn(*mut myriad_req_t, *mut c_void),
    ud: UserData,
}
// SAFETY: the C contract: a handler used with several threads must be thread-safe.
unsafe impl Sync for CHandler {}

struct Started {
    main: Server,
    main_lp: *mut myriad_loop_t,
    workers: Vec<(std::thread::JoinHandle<()>, Handle)>,
}

/// A server (opaque): listeners, threads, limits and a handler. Configure, then start on a
/// loop. Loop thread of the loop it is started on (configuration: any single thread).
pub struct myriad_server_t {
    addrs: Vec<(Addr, ListenOptions, Proto, Option<TlsAcceptor>)>,
    bound: Vec<(String, c_int)>,
    threads: usize,
    pub(crate) opts: ServerOptions,
    handler: Option<Arc<CHandler>>,
    started: Option<Started>,
}

/// Creates a server (no listeners, 1 thread, default limits). Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_server_new(out: *mut *mut myriad_server_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        let s = Box::new(myriad_server_t {
            addrs: Vec::new(),
            bound: Vec::new(),
            threads: 1,
            opts: ServerOptions::default(),
            handler: None,
            started: None,
        });
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(s) };
        MYRIAD_OK
    })
}

/// Frees a server; a started one is stopped at once (connections closed, threads joined).
/// NULL is a no-op. Loop thread of the loop it was started on, outside its callbacks.
#[no_mangle]
pub unsafe extern "C" fn myriad_server_free(srv: *mut myriad_server_t) {
    if srv.is_null() {
        return;
    }
    guard(|| {
        // SAFETY: from myriad_server_new, not used again.
        let s = unsafe { Box::from_raw(srv) };
        if let Some(st) = s.started {
            for (_, h) in &st.workers {
                h.stop();
            }
            for (t, _) in st.workers {
                let _ = t.join();
            }
            drop(st.main);
        }
        MYRIAD_OK
    });
}

pub(crate) unsafe fn srv_mut<'a>(srv: *mut myriad_server_t) -> Option<&'a mut myriad_server_t> {
    // SAFETY: the caller passes a live server or NULL.
    unsafe { srv.as_mut() }
}

impl myriad_server_t {
    /// Whether myriad_server_start ran.
    pub(crate) fn is_started(&self) -> bool {
        self.started.is_some()
    }
}

/// Adds a listener to bind at start (for other modules: socket activation).
pub(crate) fn push_listener(s: &mut myriad_server_t, a: Addr, p: Proto) {
    s.addrs.push((a, ListenOptions::default(), p, None));
}

/// Adds a listener: `proto` is MYRIAD_HTTP or MYRIAD_FCGI, `addr` is HOST:PORT,
/// [V6]:PORT, unix:PATH or fd:N (port 0 picks a free port; HOST is numeric: an IPv4
/// address, localhost or `*` — listeners resolve no names), optionally followed by
/// listener options `?OPT[&OPT]...`:
/// - `mode=0660` — a Unix socket's file mode. Default: what the umask leaves (usually
///   0755: only the owner can connect, since connecting needs write permission), because
///   who else may connect is the operator's choice; a front end running as another user
///   (nginx workers as nobody or www-data) needs e.g. `mode=0660&group=www-data` or `0666`.
/// - `owner=USER|UID`, `group=GROUP|GID` — the Unix socket file's owner and group
///   (changing the owner needs privileges; the group, membership of it).
/// - `reuseport` — share a TCP port with other sockets that ask for it too, other processes
///   included (SO_REUSEPORT). Without it a port somebody listens on fails to start with
///   EADDRINUSE, with one thread or several (the server's own threads always share it).
///
/// Bound at myriad_server_start. Errors: MYRIAD_EINVAL, MYRIAD_EADDR (bad syntax, a host
/// name, an unknown option or user: myriad_last_error_detail says which), MYRIAD_ESTATE
/// (already started).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_listen(
    srv: *mut myriad_server_t,
    proto: c_int,
    addr: *const c_char,
    addr_len: usize,
) -> c_int {
    crate::clear_detail();
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(a)) = (unsafe { srv_mut(srv) }, unsafe { c_str(addr, addr_len) }) else {
            return MYRIAD_EINVAL;
        };
        let p = match proto {
            MYRIAD_HTTP => Proto::Http,
            MYRIAD_FCGI => Proto::Fcgi,
            _ => return MYRIAD_EINVAL,
        };
        if s.started.is_some() {
            return MYRIAD_ESTATE;
        }
        match myriad::parse_listen(a) {
            Ok((a, o)) => {
                s.addrs.push((a, o, p, None));
                MYRIAD_OK
            }
            Err(e) => fail(MYRIAD_EADDR, e.to_string()),
        }
    })
}

/// Adds an HTTPS listener (HTTP/1.1 over TLS with `tls`'s certificates) on `addr` (as
/// myriad_server_listen). The configuration is checked now; reloading it
/// (myriad_tls_config_reload) changes what new connections get. `tls` may be freed after
/// (reloading then needs another attached configuration). The TLS handshake and the first
/// request head share MYRIAD_HEADER_TIMEOUT_MS. Errors: MYRIAD_EINVAL, MYRIAD_EADDR,
/// MYRIAD_ESTATE, MYRIAD_ETLS (no certificate...: see myriad_tls_config_error).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_listen_tls(
    srv: *mut myriad_server_t,
    addr: *const c_char,
    addr_len: usize,
    tls: *mut crate::myriad_tls_config_t,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded: live objects (or NULL) and `addr_len` readable bytes.
        let (Some(s), Some(a), Some(t)) = (
            unsafe { srv_mut(srv) },
            unsafe { c_str(addr, addr_len) },
            unsafe { tls.as_mut() },
        ) else {
            return MYRIAD_EINVAL;
        };
        if s.started.is_some() {
            return MYRIAD_ESTATE;
        }
        let (a, o) = match myriad::parse_listen(a) {
            Ok(x) => x,
            Err(e) => return fail(MYRIAD_EADDR, e.to_string()),
        };
        match t.acceptor() {
            Ok(acc) => {
                s.addrs.push((a, o, Proto::Http, Some(acc)));
                MYRIAD_OK
            }
            Err(e) => e,
        }
    })
}

/// Sets the number of loop threads (1..=256; default 1). The first runs on the loop given
/// to myriad_server_start; the others are started by the server. Errors: MYRIAD_EINVAL,
/// MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_server_set_threads(srv: *mut myriad_server_t, n: u32) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { srv_mut(srv) }) else {
            return MYRIAD_EINVAL;
        };
        if !(1..=256).contains(&n) {
            return MYRIAD_EINVAL;
        }
        if s.started.is_some() {
            return MYRIAD_ESTATE;
        }
        s.threads = n as usize;
        MYRIAD_OK
    })
}

/// Sets a limit or timeout (MYRIAD_MAX_BODY, MYRIAD_*_TIMEOUT_MS...). Every limit applies to
/// HTTP and FastCGI requests alike (MYRIAD_MAX_PARAMS and MYRIAD_FCGI_MAX_REQUESTS to FastCGI
/// only). Errors: MYRIAD_EINVAL (unknown `which`, or 0 for a size or for a timeout other
/// than MYRIAD_DRAIN_TIMEOUT_MS and MYRIAD_RESPONSE_TIMEOUT_MS), MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_server_set_limit(
    srv: *mut myriad_server_t,
    which: c_int,
    value: u64,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { srv_mut(srv) }) else {
            return MYRIAD_EINVAL;
        };
        if s.started.is_some() {
            return MYRIAD_ESTATE;
        }
        let o = &mut s.opts;
        let ms = Duration::from_millis(value);
        match which {
            MYRIAD_MAX_BODY => o.max_body = value,
            MYRIAD_MAX_HEAD if value >= 1024 => o.max_head = value.min(1 << 30) as usize,
            MYRIAD_HEADER_TIMEOUT_MS if value > 0 => o.header_timeout = ms,
            MYRIAD_BODY_TIMEOUT_MS if value > 0 => o.body_timeout = ms,
            MYRIAD_IDLE_TIMEOUT_MS if value > 0 => o.idle_timeout = ms,
            MYRIAD_WRITE_TIMEOUT_MS if value > 0 => o.write_timeout = ms,
            MYRIAD_DRAIN_TIMEOUT_MS => o.drain_timeout = ms,
            MYRIAD_MAX_PARAMS if value > 0 => o.max_params = value.min(1 << 30) as usize,
            MYRIAD_RESPONSE_TIMEOUT_MS => o.response_timeout = ms,
            MYRIAD_FCGI_MAX_REQUESTS if value > 0 => {
                o.fcgi_max_requests = value.min(65535) as usize
            }
            _ => return MYRIAD_EINVAL,
        }
        MYRIAD_OK
    })
}

/// Sets the request handler; `dtor(userdata)` runs when the server is freed.
/// Errors: MYRIAD_EINVAL, MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_server_set_handler(
    srv: *mut myriad_server_t,
    cb: myriad_handler_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(s), Some(cb)) = (unsafe { srv_mut(srv) }, cb) else {
            return MYRIAD_EINVAL;
        };
        if s.started.is_some() {
            return MYRIAD_ESTATE;
        }
        s.handler = Some(Arc::new(CHandler {
            cb,
            ud: UserData {
                ptr: userdata,
                dtor,
            },
        }));
        MYRIAD_OK
    })
}

fn make_server(
    l: &mut Loop,
    lb: *mut myriad_loop_t,
    opts: ServerOptions,
    h: Arc<CHandler>,
) -> Server {
    let handle = l.handle();
    let pool: Rc<ReqPool> = Rc::new(RefCell::new(VecDeque::new()));
    l.server(opts, move |l, req, res| {
        let reused = {
            let mut free = pool.borrow_mut();
            if free.len() > REQ_QUARANTINE {
                free.pop_front()
            } else {
                None
            }
        };
        let b = match reused {
            Some(mut b) => {
                b.req = req as *mut Request;
                b.res = Some(res);
                b.in_handler = true;
                b.finished = false;
                b
            }
            None => Box::new(myriad_req_t {
                req: req as *mut Request,
                res: Some(res),
                lp: lb,
                handle: handle.clone(),
                owner: crate::this_thread(),
                in_handler: true,
                finished: false,
                alive: None,
                cgi: None,
                params: myriad::router::Params::new(),
                pool: Rc::downgrade(&pool),
            }),
        };
        let r = Box::into_raw(b);
        // SAFETY: the C handler gets the request handle; it stays valid until finished.
        enter(lb as *const c_void, l, || unsafe { (h.cb)(r, h.ud.ptr) });
        // SAFETY: `r` is freed only here or by a finish outside the handler call.
        unsafe {
            (*r).in_handler = false;
            (*r).req = std::ptr::null_mut();
            if (*r).finished {
                release_req(r);
            }
        }
    })
}

/// Binds every listener and starts serving: thread 0 on `lp` (run it with
/// myriad_loop_run), the others on threads of their own. Loop thread of `lp`.
/// Errors: MYRIAD_EINVAL (no handler, no listener), MYRIAD_ESTATE (started), OS errors
/// (e.g. MYRIAD_EOS_BASE - EADDRINUSE); myriad_last_error_detail then names the listener
/// and what went wrong (`http listener 127.0.0.1:8080: Address already in use (...)`,
/// `fcgi listener unix:/nonexistent/x.sock: No such file or directory (...)`). Nothing is
/// left bound after an error.
#[no_mangle]
pub unsafe extern "C" fn myriad_server_start(
    srv: *mut myriad_server_t,
    lp: *mut myriad_loop_t,
) -> c_int {
    crate::clear_detail();
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { srv_mut(srv) }) else {
            return MYRIAD_EINVAL;
        };
        let Some(h) = s.handler.clone() else {
            return fail(MYRIAD_EINVAL, "no handler set (myriad_server_set_handler)");
        };
        if s.addrs.is_empty() {
            return fail(MYRIAD_EINVAL, "no listener added (myriad_server_listen)");
        }
        if lp.is_null() {
            return MYRIAD_EINVAL;
        }
        if s.started.is_some() {
            return MYRIAD_ESTATE;
        }
        let mut per: Vec<Vec<(Listener, Proto, Option<TlsAcceptor>)>> =
            (0..s.threads).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for (a, o, p, tls) in &s.addrs {
            match Listener::bind_many(a, s.threads, o) {
                Ok(ls) => {
                    bound.push((
                        ls[0].addr().to_string(),
                        match (p, tls) {
                            (_, Some(_)) => MYRIAD_HTTPS,
                            (Proto::Http, None) => MYRIAD_HTTP,
                            (Proto::Fcgi, None) => MYRIAD_FCGI,
                        },
                    ));
                    for (t, l) in ls.into_iter().enumerate() {
                        per[t].push((l, *p, tls.clone()));
                    }
                }
                Err(e) => {
                    let proto = match (p, tls) {
                        (_, Some(_)) => "https",
                        (Proto::Http, None) => "http",
                        (Proto::Fcgi, None) => "fcgi",
                    };
                    return fail(os_err(&e), bind_detail(proto, a, &e));
                }
            }
        }
        let opts = s.opts.clone();
        let mut workers = Vec::new();
        for ls in per.drain(1..) {
            let (h2, o2) = (h.clone(), opts.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let Ok(l) = Loop::new() else { return };
                let lb = Box::into_raw(myriad_loop_t::new(l));
                // SAFETY: this thread owns the loop box until the end of the closure.
                unsafe {
                    with_loop(lb, |l| {
                        let srv = make_server(l, lb, o2, h2);
                        for (li, p, tls) in ls {
                            listen(&srv, l, li, p, tls);
                        }
                        let _ = tx.send(l.handle());
                        WORKER.with(|w| *w.borrow_mut() = Some(srv));
                        let _ = l.run();
                        WORKER.with(|w| w.borrow_mut().take());
                        MYRIAD_OK
                    });
                    drop(Box::from_raw(lb));
                }
            });
            match rx.recv() {
                Ok(handle) => workers.push((t, handle)),
                Err(_) => return crate::MYRIAD_ENOMEM,
            }
        }
        let first = per.pop().unwrap_or_default();
        // SAFETY: forwarded.
        let r = unsafe {
            with_loop(lp, |l| {
                let srv = make_server(l, lp, opts, h);
                for (li, p, tls) in first {
                    listen(&srv, l, li, p, tls);
                }
                s.started = Some(Started {
                    main: srv,
                    main_lp: lp,
                    workers,
                });
                MYRIAD_OK
            })
        };
        s.bound = bound;
        r
    })
}

/// What a failed bind was about, in words, with a hint at the usual cause.
pub(crate) fn bind_detail(proto: &str, a: &Addr, e: &std::io::Error) -> String {
    let hint = match (e.raw_os_error(), a) {
        (Some(libc::EADDRINUSE), Addr::Tcp(_)) => {
            " (another socket listens on this port; add ?reuseport to both to share it on purpose)"
                .to_string()
        }
        (Some(libc::ENOENT), Addr::Unix(p)) => match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => {
                format!(" (the directory {} does not exist)", d.display())
            }
            _ => String::new(),
        },
        (Some(libc::EACCES), Addr::Tcp(sa)) if sa.port() < 1024 => {
            " (ports below 1024 need privileges)".into()
        }
        (Some(libc::EACCES), Addr::Unix(_)) => {
            " (the socket's directory is not writable by this user)".into()
        }
        (Some(libc::EADDRNOTAVAIL), Addr::Tcp(_)) => {
            " (no interface of this machine has that address)".into()
        }
        (Some(libc::EBADF), Addr::Fd(_)) => " (no such file descriptor was inherited)".into(),
        _ => String::new(),
    };
    format!("{proto} listener {a}: {}{hint}", crate::describe(e))
}

thread_local! {
    static WORKER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

/// Serves a listener: over TLS when it has an acceptor.
fn listen(srv: &Server, l: &mut Loop, li: Listener, p: Proto, tls: Option<TlsAcceptor>) {
    match tls {
        Some(acc) => srv.listen_tls(l, li, acc),
        None => srv.listen(l, li, p),
    };
}

/// Number of listeners (valid after myriad_server_start).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_listener_count(srv: *const myriad_server_t) -> usize {
    // SAFETY: a live server or NULL.
    guard_or(0, || unsafe { srv.as_ref() }.map_or(0, |s| s.bound.len()))
}

/// Writes listener `i`'s bound address ("127.0.0.1:40123", "unix:/x.sock", "fd:0") as a
/// NUL-terminated string into `buf` (capacity `cap`), and its protocol into `*proto`
/// (optional). Returns the string length. Errors: MYRIAD_EINVAL (short buffer),
/// MYRIAD_ENOTFOUND (no such listener or not started).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_listener_addr(
    srv: *const myriad_server_t,
    i: usize,
    proto: *mut c_int,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard(|| {
        // SAFETY: a live server or NULL.
        let Some(s) = (unsafe { srv.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        let Some((a, p)) = s.bound.get(i) else {
            return MYRIAD_ENOTFOUND;
        };
        // SAFETY: `buf` has `cap` writable bytes.
        let n = unsafe { copy_cstr(a, buf, cap) };
        if n >= 0 && !proto.is_null() {
            // SAFETY: `proto` is NULL or writable.
            unsafe { *proto = *p };
        }
        n
    })
}

/// Graceful shutdown: stops accepting, closes idle connections, lets in-flight requests
/// finish (up to the drain timeout), stops the server's other threads, then calls
/// `cb(lp, userdata)` on the server's loop. Loop thread. Errors: MYRIAD_ESTATE (not
/// started).
#[no_mangle]
pub unsafe extern "C" fn myriad_server_shutdown(
    srv: *mut myriad_server_t,
    cb: crate::loops::myriad_cb,
    userdata: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let Some(s) = (unsafe { srv_mut(srv) }) else {
            return MYRIAD_EINVAL;
        };
        let Some(st) = s.started.as_mut() else {
            return MYRIAD_ESTATE;
        };
        for (_, h) in &st.workers {
            let _ = h.post(|l| {
                WORKER.with(|w| {
                    if let Some(srv) = w.borrow().as_ref() {
                        srv.shutdown(l, |l| l.stop());
                    } else {
                        l.stop();
                    }
                })
            });
        }
        let workers: Vec<_> = st.workers.drain(..).map(|w| w.0).collect();
        let lb = st.main_lp;
        let ud = userdata as usize;
        let main = st.main.clone();
        // SAFETY: forwarded.
        unsafe {
            with_loop(lb, move |l| {
                main.shutdown(l, move |l| {
                    for t in workers {
                        let _ = t.join();
                    }
                    if let Some(cb) = cb {
                        enter(lb as *const c_void, l, || cb(lb, ud as *mut c_void));
                    }
                });
                MYRIAD_OK
            })
        }
    })
}

// ---- the request/response handle -------------------------------------------------------

unsafe fn req_ref<'a>(r: *mut myriad_req_t) -> Result<&'a mut myriad_req_t, c_int> {
    // SAFETY: the caller passes a live request or NULL.
    let Some(r) = (unsafe { r.as_mut() }) else {
        return Err(MYRIAD_EINVAL);
    };
    if crate::this_thread() != r.owner {
        return Err(MYRIAD_EWRONGTHREAD);
    }
    if r.finished {
        return Err(MYRIAD_EGONE);
    }
    Ok(r)
}

/// Runs `f` on a live, unfinished request of this thread, behind the panic guard; the
/// handle errors (NULL, wrong thread, finished) are returned as codes.
pub(crate) fn with_req(
    req: *mut myriad_req_t,
    f: impl FnOnce(&mut myriad_req_t) -> c_int,
) -> c_int {
    guard(|| {
        // SAFETY: every caller is an extern function whose C contract is a live request
        // handle (or NULL, rejected by req_ref).
        match unsafe { req_ref(req) } {
            Ok(r) => f(r),
            Err(e) => e,
        }
    })
}

pub(crate) fn with_request<R>(r: &myriad_req_t, f: impl FnOnce(&Request) -> R) -> Option<R> {
    if !r.req.is_null() {
        // SAFETY: set only during the handler call, when the request is live.
        return Some(f(unsafe { &*r.req }));
    }
    r.res.as_ref()?.with_request(f)
}

pub(crate) unsafe fn put_str(s: &[u8], out: *mut *const c_char, len: *mut usize) -> c_int {
    if out.is_null() || len.is_null() {
        return MYRIAD_EINVAL;
    }
    // SAFETY: both out-pointers are writable.
    unsafe {
        *out = s.as_ptr().cast();
        *len = s.len();
    }
    MYRIAD_OK
}

unsafe fn str_getter(
    req: *mut myriad_req_t,
    out: *mut *const c_char,
    len: *mut usize,
    get: impl for<'a> Fn(&'a Request) -> &'a str,
) -> c_int {
    with_req(req, |r| {
        // SAFETY: the bytes live in the request's storage until it is finished.
        with_request(r, |q| unsafe { put_str(get(q).as_bytes(), out, len) }).unwrap_or(MYRIAD_EGONE)
    })
}

/// The method ("GET"). Points into the request (valid until finished); not
/// NUL-terminated. Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_method(
    req: *mut myriad_req_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { str_getter(req, out, len, Request::method) }
}

/// The request target as sent ("/a?b=1"): raw bytes, neither percent-decoded nor
/// normalised. Over FastCGI it is the REQUEST_URI parameter (else DOCUMENT_URI, else
/// SCRIPT_NAME, else "/"). Same rules as myriad_req_method.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_target(
    req: *mut myriad_req_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { str_getter(req, out, len, Request::target) }
}

/// The path part of the target ("/a"): the bytes before the first '?', exactly as the
/// client sent them — NOT percent-decoded and NOT normalised (`/users/%34%32` and
/// `/users/../users/5` reach the handler as written; decode and resolve dot segments
/// yourself before using it as a file name or a key). Over FastCGI it comes from the
/// REQUEST_URI parameter the front end passed (nginx: the original, raw `$request_uri`),
/// falling back to DOCUMENT_URI (nginx's normalised, decoded `$document_uri`), then
/// SCRIPT_NAME, then "/". Same rules as myriad_req_method.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_path(
    req: *mut myriad_req_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { str_getter(req, out, len, Request::path) }
}

/// The query string without '?' ("" if none). Same rules as myriad_req_method.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_query(
    req: *mut myriad_req_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { str_getter(req, out, len, Request::query) }
}

/// The first header named `name` (case-insensitive): value bytes into `*out`, `*len`.
/// Loop thread. Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_header(
    req: *mut myriad_req_t,
    name: *const c_char,
    name_len: usize,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    with_req(req, |r| {
        // SAFETY: forwarded.
        let Some(n) = (unsafe { c_str(name, name_len) }) else {
            return MYRIAD_EINVAL;
        };
        with_request(r, |q| match q.header(n) {
            // SAFETY: the bytes live in the request's storage until it is finished.
            Some(v) => unsafe { put_str(v, out, len) },
            None => MYRIAD_ENOTFOUND,
        })
        .unwrap_or(MYRIAD_EGONE)
    })
}

/// Number of headers (duplicates kept, in order), or a negative error. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_header_count(req: *mut myriad_req_t) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        match unsafe { req_ref(req) } {
            Ok(r) => with_request(r, |q| q.header_count() as c_int).unwrap_or(MYRIAD_EGONE),
            Err(e) => e,
        }
    })
}

/// Header `i` (0-based, in order): name and value. Loop thread.
/// Errors: MYRIAD_ENOTFOUND (i out of range), MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_header_at(
    req: *mut myriad_req_t,
    i: usize,
    name: *mut *const c_char,
    name_len: *mut usize,
    value: *mut *const c_char,
    value_len: *mut usize,
) -> c_int {
    with_req(req, |r| {
        with_request(r, |q| match q.headers().nth(i) {
            // SAFETY: the bytes live in the request's storage until it is finished.
            Some((n, v)) => unsafe {
                let e = put_str(n.as_bytes(), name, name_len);
                if e != MYRIAD_OK {
                    return e;
                }
                put_str(v, value, value_len)
            },
            None => MYRIAD_ENOTFOUND,
        })
        .unwrap_or(MYRIAD_EGONE)
    })
}

fn cgi_cache(r: &mut myriad_req_t) -> Option<&Vec<(String, String)>> {
    if r.cgi.is_none() {
        r.cgi = Some(with_request(r, |q| q.cgi_vars())?);
    }
    r.cgi.as_ref()
}

/// The CGI variable `name` (REQUEST_METHOD, QUERY_STRING, REMOTE_ADDR, HTTP_*...): from
/// the FastCGI params, or derived from the HTTP request. Loop thread.
/// Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_cgi(
    req: *mut myriad_req_t,
    name: *const c_char,
    name_len: usize,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    with_req(req, |r| {
        // SAFETY: forwarded.
        let Some(n) = (unsafe { c_str(name, name_len) }) else {
            return MYRIAD_EINVAL;
        };
        let Some(vars) = cgi_cache(r) else {
            return MYRIAD_EGONE;
        };
        match vars.iter().find(|(k, _)| k == n) {
            // SAFETY: the cache lives as long as the request handle.
            Some((_, v)) => unsafe { put_str(v.as_bytes(), out, len) },
            None => MYRIAD_ENOTFOUND,
        }
    })
}

/// Number of CGI variables (sorted by name for myriad_req_cgi_at), or a negative error.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_cgi_count(req: *mut myriad_req_t) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        match unsafe { req_ref(req) } {
            Ok(r) => cgi_cache(r).map_or(MYRIAD_EGONE, |v| v.len() as c_int),
            Err(e) => e,
        }
    })
}

/// CGI variable `i` in name order. Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_cgi_at(
    req: *mut myriad_req_t,
    i: usize,
    name: *mut *const c_char,
    name_len: *mut usize,
    value: *mut *const c_char,
    value_len: *mut usize,
) -> c_int {
    with_req(req, |r| {
        let Some(vars) = cgi_cache(r) else {
            return MYRIAD_EGONE;
        };
        match vars.get(i) {
            // SAFETY: the cache lives as long as the request handle.
            Some((n, v)) => unsafe {
                let e = put_str(n.as_bytes(), name, name_len);
                if e != MYRIAD_OK {
                    return e;
                }
                put_str(v.as_bytes(), value, value_len)
            },
            None => MYRIAD_ENOTFOUND,
        }
    })
}

/// Writes the peer address ("1.2.3.4:5678", "[::1]:5678", "unix:") NUL-terminated into
/// `buf`; returns its length. Errors: MYRIAD_EINVAL (short buffer), MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_peer(
    req: *mut myriad_req_t,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    with_req(req, |r| {
        let Some(p) = with_request(r, |q| q.peer().to_string()) else {
            return MYRIAD_EGONE;
        };
        // SAFETY: `buf` has `cap` writable bytes.
        unsafe { copy_cstr(&p, buf, cap) }
    })
}

/// myriad_req_body_size: the request has no body.
pub const MYRIAD_BODYLEN_NONE: c_int = 0;
/// myriad_req_body_size: the body has the length stored in `*length`.
pub const MYRIAD_BODYLEN_KNOWN: c_int = 1;
/// myriad_req_body_size: the body's length is unknown until it ends (HTTP chunked, or
/// FastCGI without a valid CONTENT_LENGTH: the body ends at the empty STDIN record).
pub const MYRIAD_BODYLEN_UNKNOWN: c_int = 2;

/// How the request's body is delimited, as the server frames it: MYRIAD_BODYLEN_NONE,
/// MYRIAD_BODYLEN_KNOWN (its length in `*length`, if `length` is not NULL) or
/// MYRIAD_BODYLEN_UNKNOWN; with a body, the body callback's MYRIAD_BODY_END says when it
/// ended. Use this rather than the Content-Length / Transfer-Encoding headers or the
/// CONTENT_LENGTH variable (an empty or missing CONTENT_LENGTH over FastCGI still has a
/// body). Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EWRONGTHREAD, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_body_size(req: *mut myriad_req_t, length: *mut u64) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        match unsafe { req_ref(req) } {
            Ok(r) => match with_request(r, |q| q.body_size()) {
                Some(myriad::BodySize::None) => MYRIAD_BODYLEN_NONE,
                Some(myriad::BodySize::Known(n)) => {
                    // SAFETY: NULL or a writable u64 (the caller's contract).
                    if let Some(out) = unsafe { length.as_mut() } {
                        *out = n;
                    }
                    MYRIAD_BODYLEN_KNOWN
                }
                Some(myriad::BodySize::Unknown) => MYRIAD_BODYLEN_UNKNOWN,
                None => MYRIAD_EGONE,
            },
            Err(e) => e,
        }
    })
}

/// MYRIAD_HTTP or MYRIAD_FCGI, or a negative error. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_protocol(req: *mut myriad_req_t) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        match unsafe { req_ref(req) } {
            Ok(r) => with_request(r, |q| {
                if q.protocol() == myriad::app::Protocol::Http {
                    MYRIAD_HTTP
                } else {
                    MYRIAD_FCGI
                }
            })
            .unwrap_or(MYRIAD_EGONE),
            Err(e) => e,
        }
    })
}

/// A TLS fact of the request's connection (HTTPS): `what` is MYRIAD_TLS_VERSION,
/// MYRIAD_TLS_CIPHER, MYRIAD_TLS_SNI or MYRIAD_TLS_ALPN; `*s`/`*len` point at it (not
/// NUL-terminated), valid until the request is finished. Over HTTPS the CGI variables
/// also have HTTPS=on and REQUEST_SCHEME=https. Loop thread. Errors: MYRIAD_ENOTFOUND
/// (not over TLS, or no such fact: no SNI sent, no ALPN agreed), MYRIAD_EINVAL,
/// MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_tls(
    req: *mut myriad_req_t,
    what: c_int,
    s: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        match unsafe { req_ref(req) } {
            // SAFETY: `s` and `len` are writable (checked inside); the facts live in the
            // request (shared with its connection) until it is finished.
            Ok(r) => with_request(r, |q| unsafe {
                crate::tls::tls_fact(q.tls(), what, s, len)
            })
            .unwrap_or(MYRIAD_EGONE),
            Err(e) => e,
        }
    })
}

/// The loop this request is served on (for timers); NULL on error. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_loop(req: *mut myriad_req_t) -> *mut myriad_loop_t {
    guard_or(std::ptr::null_mut(), || {
        // SAFETY: forwarded.
        unsafe { req_ref(req) }.map_or(std::ptr::null_mut(), |r| r.lp)
    })
}

/// Body callback: the request, the bytes (for MYRIAD_BODY_DATA), the event, user data.
pub type myriad_body_fn = Option<
    unsafe extern "C" fn(
        req: *mut myriad_req_t,
        data: *const u8,
        len: usize,
        event: c_int,
        userdata: *mut c_void,
    ),
>;

/// Streams the request body to `cb` as it arrives (MYRIAD_BODY_DATA pieces, then
/// MYRIAD_BODY_END or MYRIAD_BODY_ABORTED). Registering wants the body (a client that sent
/// Expect: 100-continue gets its 100); without it the body is discarded. Only inside the
/// handler call. `cb` is not called after the request is finished. `dtor(userdata)` runs
/// when the body callback is released. Errors: MYRIAD_ESTATE (outside the handler).
#[no_mangle]
pub unsafe extern "C" fn myriad_req_on_body(
    req: *mut myriad_req_t,
    cb: myriad_body_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    with_req(req, |r| {
        let Some(cb) = cb else { return MYRIAD_EINVAL };
        if r.req.is_null() {
            return MYRIAD_ESTATE;
        }
        let ud = UserData {
            ptr: userdata,
            dtor,
        };
        let alive = r.alive();
        let rp = req as usize;
        // SAFETY: in the handler call the request pointer is live.
        unsafe { &mut *r.req }.on_body(move |b| {
            if !alive.get() {
                return;
            }
            let rp = rp as *mut myriad_req_t;
            // SAFETY: `alive` says the handle is not finished, so it is live.
            unsafe {
                match b {
                    myriad::Body::Data(d) => {
                        cb(rp, d.as_ptr(), d.len(), MYRIAD_BODY_DATA, ud.get())
                    }
                    myriad::Body::End => cb(rp, std::ptr::null(), 0, MYRIAD_BODY_END, ud.get()),
                    myriad::Body::Aborted => {
                        cb(rp, std::ptr::null(), 0, MYRIAD_BODY_ABORTED, ud.get())
                    }
                }
            }
        });
        MYRIAD_OK
    })
}

/// Whole-body callback: the request, the complete body (NULL, 0 and status MYRIAD_EGONE if
/// it was aborted), user data. The bytes are valid during the call only.
pub type myriad_whole_body_fn = Option<
    unsafe extern "C" fn(
        req: *mut myriad_req_t,
        data: *const u8,
        len: usize,
        status: c_int,
        userdata: *mut c_void,
    ),
>;

/// Collects the whole body (the server's MYRIAD_MAX_BODY applies) and calls `cb` once.
/// Only inside the handler call. Errors: MYRIAD_ESTATE (outside the handler), MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_read_body(
    req: *mut myriad_req_t,
    cb: myriad_whole_body_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    with_req(req, |r| {
        let Some(cb) = cb else { return MYRIAD_EINVAL };
        if r.req.is_null() {
            return MYRIAD_ESTATE;
        }
        let ud = UserData {
            ptr: userdata,
            dtor,
        };
        let alive = r.alive();
        let rp = req as usize;
        // SAFETY: in the handler call the request pointer is live.
        unsafe { &mut *r.req }.read_body(move |b| {
            if !alive.get() {
                return;
            }
            let rp = rp as *mut myriad_req_t;
            // SAFETY: `alive` says the handle is not finished, so it is live.
            unsafe {
                match b {
                    Some(b) => cb(rp, b.as_ptr(), b.len(), MYRIAD_OK, ud.get()),
                    None => cb(rp, std::ptr::null(), 0, MYRIAD_EGONE, ud.get()),
                }
            }
        });
        MYRIAD_OK
    })
}

/// Abort callback: the request was aborted (client gone, FastCGI ABORT_REQUEST). The
/// handle stays valid: finish it (writes then fail with MYRIAD_EGONE).
pub type myriad_abort_fn =
    Option<unsafe extern "C" fn(req: *mut myriad_req_t, userdata: *mut c_void)>;

/// Calls `cb` if the request is aborted before its response is finished. Only inside the
/// handler call. Errors: MYRIAD_ESTATE, MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_on_abort(
    req: *mut myriad_req_t,
    cb: myriad_abort_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    with_req(req, |r| {
        let Some(cb) = cb else { return MYRIAD_EINVAL };
        if r.req.is_null() {
            return MYRIAD_ESTATE;
        }
        let ud = UserData {
            ptr: userdata,
            dtor,
        };
        let alive = r.alive();
        let rp = req as usize;
        // SAFETY: in the handler call the request pointer is live.
        unsafe { &mut *r.req }.on_abort(move || {
            if alive.get() {
                // SAFETY: not finished, so live.
                unsafe { cb(rp as *mut myriad_req_t, ud.get()) };
            }
        });
        MYRIAD_OK
    })
}

/// Calls `cb(req, userdata)` once, on the loop, when everything written so far has been
/// sent to the client (soon, if nothing is queued): with myriad_req_queued it paces a body
/// produced faster than the client reads (a proxy pauses its upstream stream until then).
/// Replaces an earlier drain callback; dropped uncalled if the request finishes or is
/// aborted first. Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_on_drain(
    req: *mut myriad_req_t,
    cb: myriad_req_fn,
    userdata: *mut c_void,
) -> c_int {
    let Some(cb) = cb else { return MYRIAD_EINVAL };
    // SAFETY: a live request or NULL (rejected).
    let alive = match unsafe { req_ref(req) } {
        Ok(r) => r.alive(),
        Err(e) => return e,
    };
    let ud = userdata as usize;
    let rp = req as usize;
    let on_drain = move || {
        if alive.get() {
            // SAFETY: `alive` says the handle is not finished, so it is live.
            unsafe { cb(rp as *mut myriad_req_t, ud as *mut c_void) };
        }
    };
    // SAFETY: forwarded.
    unsafe { with_res(req, move |res| res.on_drain(on_drain)) }
}

fn res_err(e: myriad::ResponseError) -> c_int {
    match e {
        myriad::ResponseError::Gone => MYRIAD_EGONE,
        myriad::ResponseError::HeadSent => MYRIAD_ESTATE,
        myriad::ResponseError::Invalid => MYRIAD_EINVAL,
    }
}

unsafe fn with_res(
    req: *mut myriad_req_t,
    f: impl FnOnce(&mut Response) -> Result<(), myriad::ResponseError>,
) -> c_int {
    with_req(req, |r| match r.res.as_mut() {
        Some(res) => f(res).map_or_else(res_err, |_| MYRIAD_OK),
        None => MYRIAD_EGONE,
    })
}

/// Sets the status (200..=999). Before the head is sent. Loop thread.
/// Status codes below 200 are refused with MYRIAD_EINVAL: 1xx are interim responses the
/// library sends itself (100 Continue), and a protocol switch (101) needs the connection
/// handed to another protocol, which comes with the WebSocket upgrade path, not a raw 101.
/// Errors: MYRIAD_EINVAL, MYRIAD_ESTATE (head sent), MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_status(req: *mut myriad_req_t, code: c_int) -> c_int {
    let Ok(code) = u16::try_from(code) else {
        return MYRIAD_EINVAL;
    };
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.status(code)) }
}

/// Adds a response header (name a token; value without CR, LF or NUL; Content-Length,
/// Transfer-Encoding, Connection and Date are managed by the library and refused).
/// Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_ESTATE (head sent), MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_header_add(
    req: *mut myriad_req_t,
    name: *const c_char,
    name_len: usize,
    value: *const c_char,
    value_len: usize,
) -> c_int {
    // SAFETY: forwarded.
    let (Some(n), Some(v)) = (unsafe { c_bytes(name.cast(), name_len) }, unsafe {
        c_bytes(value.cast(), value_len)
    }) else {
        return MYRIAD_EINVAL;
    };
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.header_bytes(n, v)) }
}

/// Queues body bytes, copied (the caller keeps ownership of `data`). Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_write(
    req: *mut myriad_req_t,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: forwarded.
    let Some(d) = (unsafe { c_bytes(data, len) }) else {
        return MYRIAD_EINVAL;
    };
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.write(d)) }
}

/// Queues body bytes that stay valid and unchanged for the life of the process (string
/// literals), without copying. Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_write_static(
    req: *mut myriad_req_t,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: the caller promises the bytes live forever.
    let Some(d) = (unsafe { c_bytes(data, len) }) else {
        return MYRIAD_EINVAL;
    };
    // SAFETY: as above: a 'static view of caller-guaranteed-static bytes.
    let d: &'static [u8] = unsafe { std::slice::from_raw_parts(d.as_ptr(), d.len()) };
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.write_static(d)) }
}

/// Queues `len` bytes at `data` without copying; `free_fn(userdata)` runs once they are
/// written (or dropped with the connection). On error `free_fn` is NOT called: the buffer
/// stays the caller's. Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_write_free(
    req: *mut myriad_req_t,
    data: *const u8,
    len: usize,
    free_fn: myriad_free_fn,
    userdata: *mut c_void,
) -> c_int {
    if data.is_null() && len > 0 {
        return MYRIAD_EINVAL;
    }
    // SAFETY: validated before taking ownership of the free function.
    if let Err(e) = unsafe { req_ref(req) } {
        return e;
    }
    let buf = FreeBuf::new(data, len, free_fn, userdata);
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.write_owned(Box::new(buf))) }
}

/// Sends the head and the body so far; the rest streams (chunked to HTTP/1.1, STDOUT
/// records over FastCGI). Loop thread. Errors: MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_flush(req: *mut myriad_req_t) -> c_int {
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.flush()) }
}

/// Bytes written by the handler and not yet sent (pace streamed bodies with it), or 0.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_queued(req: *mut myriad_req_t) -> usize {
    // SAFETY: forwarded.
    guard_or(0, || match unsafe { req_ref(req) } {
        Ok(r) => r.res.as_ref().map_or(0, |res| res.queued()),
        Err(_) => 0,
    })
}

/// 1 if the client went away (or the front end aborted the request), 0 if not, or a
/// negative error. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_is_aborted(req: *mut myriad_req_t) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        match unsafe { req_ref(req) } {
            Ok(r) => r.res.as_ref().map_or(1, |res| res.is_aborted() as c_int),
            Err(e) => e,
        }
    })
}

/// Sends a message to the front end's error log (FastCGI STDERR; over HTTP the library's
/// log at warn level). Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_stderr(
    req: *mut myriad_req_t,
    msg: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: forwarded.
    let Some(m) = (unsafe { c_bytes(msg, len) }) else {
        return MYRIAD_EINVAL;
    };
    // SAFETY: forwarded.
    unsafe { with_res(req, |res| res.stderr(m)) }
}

/// Finishes the response and frees the request handle (do not use it afterwards, even on
/// error other than MYRIAD_EINVAL / MYRIAD_EWRONGTHREAD). Finishing an aborted request
/// just frees it. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_finish(req: *mut myriad_req_t) -> c_int {
    end_req(req, |res| {
        match res.finish().map_or_else(res_err, |_| MYRIAD_OK) {
            // (The client left first: nothing to finish.)
            MYRIAD_EGONE => MYRIAD_OK,
            code => code,
        }
    })
}

/// Ends the request with `end`, given its response unless the client left first (then
/// MYRIAD_OK), and frees the handle unless its handler is still running (the server frees
/// it when the handler returns).
fn end_req(req: *mut myriad_req_t, end: impl FnOnce(Response) -> c_int) -> c_int {
    with_req(req, |r| {
        r.finish_handle();
        let code = r.res.take().map_or(MYRIAD_OK, end);
        if !r.in_handler {
            // SAFETY: the handle came from Box::into_raw and is not used again.
            unsafe { release_req(req) };
        }
        code
    })
}

/// [`end_req`] for a caller that also needs the request: `Some` while the handler runs
/// (read it there), `None` after it returned (reach it through the response).
pub(crate) fn end_req_with(
    req: *mut myriad_req_t,
    end: impl FnOnce(Option<&Request>, Response) -> c_int,
) -> c_int {
    with_req(req, |r| {
        r.finish_handle();
        // SAFETY: set only during the handler call, when the request is live.
        let q = (!r.req.is_null()).then(|| unsafe { &*r.req });
        let code = r.res.take().map_or(MYRIAD_OK, |res| end(q, res));
        if !r.in_handler {
            // SAFETY: the handle came from Box::into_raw and is not used again.
            unsafe { release_req(req) };
        }
        code
    })
}

/// Ends the request like [`end_req`], for a protocol switch (the WebSocket accept): `read`
/// looks at the request while it is readable, then `end` gets what it returned and the
/// response (not called if the client left first: MYRIAD_EGONE).
pub(crate) fn end_req_switch<P>(
    req: *mut myriad_req_t,
    read: impl FnOnce(&Request) -> P,
    end: impl FnOnce(P, Response) -> c_int,
) -> c_int {
    with_req(req, |r| {
        let p = with_request(r, read);
        r.finish_handle();
        let code = match (p, r.res.take()) {
            (Some(p), Some(res)) => end(p, res),
            _ => MYRIAD_EGONE,
        };
        if !r.in_handler {
            // SAFETY: the handle came from Box::into_raw and is not used again.
            unsafe { release_req(req) };
        }
        code
    })
}

/// [`with_res`] for other modules of the crate.
pub(crate) unsafe fn with_response(
    req: *mut myriad_req_t,
    f: impl FnOnce(&mut Response) -> Result<(), myriad::ResponseError>,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { with_res(req, f) }
}

/// The loop a request handle belongs to (for callbacks that call C later).
pub(crate) fn req_loop_of(req: *mut myriad_req_t) -> *mut myriad_loop_t {
    // SAFETY: forwarded; NULL or a live handle.
    unsafe { req_ref(req) }.map_or(std::ptr::null_mut(), |r| r.lp)
}

/// Abandons the response, for a handler that cannot complete it (an upstream failed
/// mid-body), so that the client does not take it for a whole one; frees the request handle
/// like myriad_req_finish. What was flushed is still written; then the connection closes
/// without ending the response: an HTTP/1.1 chunked body lacks its last chunk, and a
/// response whose head was not sent gets nothing at all (nginx's 444). Over FastCGI there is
/// no END_REQUEST: a STDERR record says the response was abandoned and the connection
/// closes, ending any other request on it; nginx passes the cut on with fastcgi_keep_conn on,
/// but with keep_conn or buffering off takes the close for the end of the output (only its
/// error log tells). Nor can an HTTP/1.0 client tell a body delimited by the close from a
/// whole one. Aborting an aborted request just frees it. Loop thread. Errors:
/// MYRIAD_EINVAL, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_abort(req: *mut myriad_req_t) -> c_int {
    end_req(req, |res| {
        // (Gone: the client left first; nothing to cut.)
        let _ = res.abort();
        MYRIAD_OK
    })
}

/// Convenience: status, Content-Type, body (copied), finish — and frees the handle.
/// Loop thread. Errors as myriad_req_finish, plus MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_send(
    req: *mut myriad_req_t,
    status: c_int,
    content_type: *const c_char,
    ct_len: usize,
    body: *const u8,
    body_len: usize,
) -> c_int {
    // SAFETY: forwarded.
    let (Some(ct), Some(b)) = (unsafe { c_bytes(content_type.cast(), ct_len) }, unsafe {
        c_bytes(body, body_len)
    }) else {
        return MYRIAD_EINVAL;
    };
    // SAFETY: forwarded.
    let mut e = unsafe { myriad_req_status(req, status) };
    if e == MYRIAD_OK {
        // SAFETY: forwarded.
        e = unsafe { with_res(req, |res| res.header("Content-Type", ct)) };
    }
    if e == MYRIAD_OK {
        // SAFETY: forwarded.
        e = unsafe { with_res(req, |res| res.write(b)) };
    }
    if e == MYRIAD_EINVAL || e == MYRIAD_EWRONGTHREAD {
        return e;
    }
    // SAFETY: forwarded.
    let f = unsafe { myriad_req_finish(req) };
    if e != MYRIAD_OK {
        e
    } else {
        f
    }
}

/// A callback run on the request's loop thread (myriad_req_post).
pub type myriad_req_fn =
    Option<unsafe extern "C" fn(req: *mut myriad_req_t, userdata: *mut c_void)>;

struct SendPtr(usize);

/// A request handle travelling in a post to its loop. If the post never runs (the loop is
/// freed with it still queued: a program stopping with work in flight), dropping it releases
/// the handle, on the loop's thread, where the loop drops its queue — the handle would
/// otherwise be lost for good. Dropped on another thread (a post refused because the loop
/// is gone), it is left alone: only the loop's thread may touch the handle.
struct PostedReq {
    req: usize,
    owner: crate::ThreadKey,
    ran: bool,
}

impl PostedReq {
    fn new(req: *mut myriad_req_t) -> PostedReq {
        // SAFETY: a live request (the caller's contract); `owner` never changes.
        let owner = unsafe { (*req).owner };
        PostedReq {
            req: req as usize,
            owner,
            ran: false,
        }
    }

    /// The handle, for the post that runs (which then owns its fate).
    fn take(mut self) -> *mut myriad_req_t {
        self.ran = true;
        self.req as *mut myriad_req_t
    }
}

impl Drop for PostedReq {
    fn drop(&mut self) {
        if self.ran || crate::this_thread() != self.owner {
            return;
        }
        let r = self.req as *mut myriad_req_t;
        // SAFETY: on the handle's own thread, with its loop being freed: nothing else can
        // use the handle any more (its post was the last use the program made of it).
        let free = unsafe { !(*r).in_handler };
        if free {
            log::warn!("a request posted to a loop that stopped was released unanswered");
            // SAFETY: as above; the handle came from Box::into_raw and is not used again.
            unsafe {
                (*r).finish_handle();
                release_req(r);
            }
        }
    }
}

/// Runs `cb(req, userdata)` on the request's loop thread, soon. ANY THREAD: this is how a
/// worker thread completes a request (cb then writes and finishes it). One wakeup at most.
/// If the loop is freed before `cb` runs (a program stopping with work still posted), `cb`
/// is not called and the request handle is released (its client, if still there, gets a
/// 500). Errors: MYRIAD_EINVAL, MYRIAD_ESTATE (the loop is gone).
#[no_mangle]
pub unsafe extern "C" fn myriad_req_post(
    req: *mut myriad_req_t,
    cb: myriad_req_fn,
    userdata: *mut c_void,
) -> c_int {
    guard(|| {
        let (Some(cb), false) = (cb, req.is_null()) else {
            return MYRIAD_EINVAL;
        };
        // SAFETY: a live, unfinished request (the caller's contract); `handle` is Send+Sync
        // and immutable.
        let (handle, lb) = unsafe { ((*req).handle.clone(), (*req).lp as usize) };
        let (rp, ud) = (PostedReq::new(req), SendPtr(userdata as usize));
        match handle.post(move |l| {
            let (rp, ud) = (rp.take(), ud);
            // SAFETY: runs on the request's loop thread; the request is still unfinished.
            enter(lb as *const c_void, l, || unsafe {
                cb(rp, ud.0 as *mut c_void)
            });
        }) {
            Ok(()) => MYRIAD_OK,
            Err(_) => MYRIAD_ESTATE,
        }
    })
}

/// Like myriad_req_send, from ANY THREAD: the content type and body are copied now; the
/// response is sent and the handle freed on the loop's thread (a status or content type the
/// loop refuses is answered 500 instead, since no caller is left to hear of it). If the loop
/// is freed before it runs, the handle is released then. Errors: MYRIAD_EINVAL,
/// MYRIAD_ESTATE (the loop is gone).
#[no_mangle]
pub unsafe extern "C" fn myriad_req_send_async(
    req: *mut myriad_req_t,
    status: c_int,
    content_type: *const c_char,
    ct_len: usize,
    body: *const u8,
    body_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded.
        let (Some(ct), Some(b)) = (unsafe { c_bytes(content_type.cast(), ct_len) }, unsafe {
            c_bytes(body, body_len)
        }) else {
            return MYRIAD_EINVAL;
        };
        if req.is_null() {
            return MYRIAD_EINVAL;
        }
        let (ct, b) = (ct.to_vec(), b.to_vec());
        // SAFETY: as in myriad_req_post.
        let (handle, lb) = unsafe { ((*req).handle.clone(), (*req).lp as usize) };
        let rp = PostedReq::new(req);
        match handle.post(move |l| {
            let rp = rp.take();
            enter(lb as *const c_void, l, || {
                // SAFETY: runs on the loop thread; the request is unfinished.
                let rc = unsafe {
                    myriad_req_send(
                        rp,
                        status,
                        ct.as_ptr().cast(),
                        ct.len(),
                        b.as_ptr(),
                        b.len(),
                    )
                };
                if rc == MYRIAD_EINVAL {
                    // A response that cannot be built (a bad status or content type): no
                    // caller is left to hear of it, so it becomes a 500 rather than a
                    // request left open.
                    log::warn!(
                        "myriad_req_send_async: invalid status or content type: answering 500"
                    );
                    let msg = b"Internal Server Error\n";
                    // SAFETY: the request is still unfinished (EINVAL leaves it so).
                    let rc = unsafe {
                        myriad_req_send(
                            rp,
                            500,
                            c"text/plain".as_ptr(),
                            10,
                            msg.as_ptr(),
                            msg.len(),
                        )
                    };
                    if rc == MYRIAD_EINVAL {
                        // SAFETY: as above.
                        unsafe { myriad_req_finish(rp) };
                    }
                }
            });
        }) {
            Ok(()) => MYRIAD_OK,
            Err(_) => MYRIAD_ESTATE,
        }
    })
}
