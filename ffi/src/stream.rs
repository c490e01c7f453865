//! Streams: buffered connections for any protocol (what libevent's bufferevents do),
//! accepted from a listener or connected outbound, with the loop's single-syscall rules.
//!
//! A `myriad_stream_t` stays valid until its MYRIAD_STREAM_CLOSED event returns. Calls on
//! it never run its callbacks from inside the call: changes made outside its own callbacks
//! take effect at the end of the loop iteration (all writes of an iteration leave in one
//! write), changes made inside them right after the callback returns.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;
use std::time::{Duration, Instant};

use myriad::{
    Accepted, Addr, ConnOptions, Io, Listener, Loop, PeerAddr, Protocol, ResolveId, Target,
    TimerId, Token,
};

use crate::loops::{enter, myriad_loop_t, with_loop};
use crate::{
    c_bytes, c_str, copy_cstr, guard, guard_or, myriad_free_fn, os_err, FreeBuf, UserData,
    MYRIAD_EADDR, MYRIAD_EGONE, MYRIAD_EINVAL, MYRIAD_ESTATE, MYRIAD_OK, MYRIAD_READ, MYRIAD_WRITE,
};

/// Stream event: an outbound connection is established (queued output goes out now).
pub const MYRIAD_STREAM_CONNECTED: c_int = 1;
/// Stream event: all queued output was written after a write could not complete at once
/// (resume producing; see myriad_stream_queued).
pub const MYRIAD_STREAM_DRAINED: c_int = 2;
/// Stream event: the peer closed its side; nothing more will be read. The stream stays
/// open for writing until myriad_stream_close.
pub const MYRIAD_STREAM_EOF: c_int = 3;
/// Stream event: a read or write timeout passed (`error` is MYRIAD_READ or MYRIAD_WRITE).
/// The stream stays open; that timeout is re-armed by the next read or write progress.
pub const MYRIAD_STREAM_TIMEOUT: c_int = 4;
/// Stream event, always the last: the stream is closed (`error` is 0 for a close, or why it
/// failed: e.g. MYRIAD_EOS_BASE - ECONNREFUSED, MYRIAD_ETIMEDOUT for a connect timeout).
/// The handle and its user data are released when this callback returns.
pub const MYRIAD_STREAM_CLOSED: c_int = 5;

/// A connect (or name resolution) did not complete within its timeout.
pub const MYRIAD_ETIMEDOUT: c_int = -10;
/// A host name could not be resolved.
pub const MYRIAD_ERESOLVE: c_int = -11;

/// A stream (opaque): a connection's buffered input and output. Valid from the accept
/// callback (or myriad_stream_connect) until its MYRIAD_STREAM_CLOSED event returns.
pub struct myriad_stream_t {
    lb: *const myriad_loop_t,
    state: Cell<State>,
    token: Cell<Option<Token>>,
    /// The connection's I/O while one of this stream's callbacks runs.
    io: Cell<*mut c_void>,
    data_fn: Cell<myriad_stream_data_fn>,
    event_fn: Cell<myriad_stream_event_fn>,
    ud: RefCell<Option<UserData>>,
    paused: Cell<bool>,
    /// The write side was shut down (or will be): writes are refused.
    shut: Cell<bool>,
    /// Connected (accepted, or the connect completed).
    connected: Cell<bool>,
    peer: Cell<Option<PeerAddr>>,
    read_ms: Cell<u32>,
    write_ms: Cell<u32>,
    read_at: Cell<Option<Instant>>,
    write_at: Cell<Option<Instant>>,
    write_mark: Cell<usize>,
    /// While resolving: the pending lookup, its timeout timer, and what the caller queued.
    resolve: Cell<Option<ResolveId>>,
    timer: Cell<Option<TimerId>>,
    early: RefCell<Early>,
    /// The TLS facts, once the handshake of a TLS stream is done.
    tls: RefCell<crate::tls::Facts>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Resolving,
    Connecting,
    Open,
    Closing,
    Closed,
}

/// Calls made before an outbound stream had a connection.
#[derive(Default)]
struct Early {
    out: Vec<u8>,
    shutdown: bool,
    close: bool,
    marks: Option<(usize, usize)>,
}

/// Data callback: `len` bytes at `data` are buffered input (borrowed for the call). Return
/// how many were consumed; the rest stays buffered and is offered again, with more, later.
/// (Returning 0 with a full input buffer pauses reading until something is consumed.)
pub type myriad_stream_data_fn = Option<
    unsafe extern "C" fn(
        s: *mut myriad_stream_t,
        data: *const u8,
        len: usize,
        userdata: *mut c_void,
    ) -> usize,
>;

/// Event callback: one of MYRIAD_STREAM_CONNECTED, _DRAINED, _EOF, _TIMEOUT, _CLOSED, with
/// its error or direction (see each event).
pub type myriad_stream_event_fn = Option<
    unsafe extern "C" fn(
        s: *mut myriad_stream_t,
        event: c_int,
        error: c_int,
        userdata: *mut c_void,
    ),
>;

/// Accept callback of a stream listener: a new stream and its peer address ("IP:PORT",
/// "[V6]:PORT" or "unix:"; `peer` is NUL-terminated and borrowed for the call). Set the
/// stream's callbacks here (myriad_stream_set_callbacks); until then its input is held.
pub type myriad_accept_fn = Option<
    unsafe extern "C" fn(
        s: *mut myriad_stream_t,
        peer: *const c_char,
        peer_len: usize,
        userdata: *mut c_void,
    ),
>;

impl myriad_stream_t {
    fn new(lb: *const myriad_loop_t, state: State) -> Rc<myriad_stream_t> {
        Rc::new(myriad_stream_t {
            lb,
            state: Cell::new(state),
            token: Cell::new(None),
            io: Cell::new(std::ptr::null_mut()),
            data_fn: Cell::new(None),
            event_fn: Cell::new(None),
            ud: RefCell::new(None),
            paused: Cell::new(false),
            shut: Cell::new(false),
            connected: Cell::new(state == State::Open),
            peer: Cell::new(None),
            read_ms: Cell::new(0),
            write_ms: Cell::new(0),
            read_at: Cell::new(None),
            write_at: Cell::new(None),
            write_mark: Cell::new(0),
            resolve: Cell::new(None),
            timer: Cell::new(None),
            early: RefCell::new(Early::default()),
            tls: RefCell::new(None),
        })
    }

    fn ptr(&self) -> *mut myriad_stream_t {
        (self as *const myriad_stream_t).cast_mut()
    }

    fn ud(&self) -> *mut c_void {
        self.ud
            .borrow()
            .as_ref()
            .map_or(std::ptr::null_mut(), |u| u.get())
    }

    /// Calls the event callback (`io` is this stream's I/O, when it has a connection).
    fn event(&self, lp: &mut Loop, io: *mut c_void, ev: c_int, err: c_int) {
        let Some(f) = self.event_fn.get() else { return };
        let ud = self.ud();
        // SAFETY: the callback gets this live handle and its own user data.
        self.call_c(lp, io, || unsafe { f(self.ptr(), ev, err, ud) });
    }

    /// Runs `call` (into C) with `io` (this stream's I/O, or NULL) reachable from calls on
    /// the stream and `lp` as the loop for re-entrant calls.
    fn call_c<R>(&self, lp: &mut Loop, io: *mut c_void, call: impl FnOnce() -> R) -> R {
        let prev = self.io.replace(io);
        let r = enter(self.lb.cast(), lp, call);
        self.io.set(prev);
        r
    }

    /// The last event: CLOSED, then the user data is released (its destructor runs).
    fn closed(&self, lp: &mut Loop, err: c_int) {
        if self.state.replace(State::Closed) == State::Closed {
            return;
        }
        if let Some(t) = self.timer.take() {
            lp.cancel_timer(t);
        }
        if let Some(r) = self.resolve.take() {
            lp.cancel_resolve(r);
        }
        self.event(lp, std::ptr::null_mut(), MYRIAD_STREAM_CLOSED, err);
        self.data_fn.set(None);
        self.event_fn.set(None);
        drop(self.ud.borrow_mut().take());
    }

    /// Arms the connection's deadline at the earlier of the read and write timeouts.
    fn rearm(&self, io: &mut Io<'_>) {
        let at = match (self.read_at.get(), self.write_at.get()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        io.set_deadline(at);
    }

    fn arm_read(&self) {
        let ms = self.read_ms.get();
        self.read_at
            .set((ms > 0).then(|| Instant::now() + Duration::from_millis(ms.into())));
    }

    fn arm_write(&self, io: &mut Io<'_>) {
        let ms = self.write_ms.get();
        self.write_mark.set(io.queued());
        self.write_at
            .set((ms > 0).then(|| Instant::now() + Duration::from_millis(ms.into())));
    }
}

/// A callback's I/O as the loop and the I/O pointer C re-entry uses, both derived from one
/// raw pointer: while C code runs, the callback's own frame does not touch `io`, and each
/// re-entrant call uses one of the two at a time.
fn split(io: &mut Io<'_>) -> (*mut Loop, *mut c_void) {
    let iop: *mut Io<'_> = io;
    // SAFETY: `iop` is the live I/O of the running callback.
    let lp = unsafe { (*iop).lp() as *mut Loop };
    (lp, iop.cast())
}

/// The connection side of a stream.
struct StreamProto {
    h: Rc<myriad_stream_t>,
}

impl StreamProto {
    /// Runs an event with this connection's I/O reachable from C.
    fn event(&self, io: &mut Io<'_>, ev: c_int, err: c_int) {
        let (lp, iop) = split(io);
        // SAFETY: see `split`.
        self.h.event(unsafe { &mut *lp }, iop, ev, err);
    }
}

impl Protocol for StreamProto {
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize {
        let h = &self.h;
        if let Some(t) = io.transport() {
            if h.tls.borrow().is_none() {
                *h.tls.borrow_mut() = t.info();
            }
        }
        if h.read_ms.get() > 0 {
            h.arm_read();
            h.rearm(io);
        }
        let Some(f) = h.data_fn.get() else { return 0 };
        if h.paused.get() || h.state.get() != State::Open {
            return 0;
        }
        let ud = h.ud();
        let (lp, iop) = split(io);
        // SAFETY: see `split`; the callback gets the live handle, borrowed input and its
        // user data.
        let n = h.call_c(unsafe { &mut *lp }, iop, || unsafe {
            f(h.ptr(), input.as_ptr(), input.len(), ud)
        });
        n.min(input.len())
    }

    fn on_connect(&mut self, io: &mut Io<'_>) {
        let h = self.h.clone();
        if let Some(t) = h.timer.take() {
            io.lp().cancel_timer(t);
        }
        h.connected.set(true);
        let early = std::mem::take(&mut *h.early.borrow_mut());
        if let Some((low, high)) = early.marks {
            io.set_watermarks(low, high);
        }
        io.write(&early.out);
        if early.shutdown {
            io.shutdown_write();
        }
        if early.close {
            h.state.set(State::Closing);
            io.close();
            return;
        }
        h.state.set(State::Open);
        h.arm_read();
        h.rearm(io);
        self.event(io, MYRIAD_STREAM_CONNECTED, 0);
    }

    fn on_eof(&mut self, io: &mut Io<'_>) {
        if self.h.event_fn.get().is_none() {
            io.close();
            return;
        }
        self.h.read_at.set(None);
        self.h.rearm(io);
        self.event(io, MYRIAD_STREAM_EOF, 0);
    }

    fn on_write_blocked(&mut self, io: &mut Io<'_>) {
        if self.h.write_ms.get() > 0 {
            self.h.arm_write(io);
            self.h.rearm(io);
        }
    }

    fn on_drained(&mut self, io: &mut Io<'_>) {
        self.h.write_at.set(None);
        self.h.rearm(io);
        if self.h.state.get() == State::Open {
            self.event(io, MYRIAD_STREAM_DRAINED, 0);
        }
    }

    fn on_timeout(&mut self, io: &mut Io<'_>) {
        let h = self.h.clone();
        let now = io.lp().now();
        let mut fired = Vec::new();
        if h.write_at.get().is_some_and(|t| t <= now) {
            if io.queued() < h.write_mark.get() {
                // Progress since the timer was armed: the peer is slow, not stuck.
                h.arm_write(io);
            } else {
                h.write_at.set(None);
                fired.push(MYRIAD_WRITE);
            }
        }
        if h.read_at.get().is_some_and(|t| t <= now) {
            if h.paused.get() || io.is_reading_paused() {
                // Not reading by choice: the read timeout restarts when reading resumes.
                h.arm_read();
            } else {
                h.read_at.set(None);
                fired.push(MYRIAD_READ);
            }
        }
        h.rearm(io);
        for dir in fired {
            if h.state.get() == State::Open {
                self.event(io, MYRIAD_STREAM_TIMEOUT, dir);
            }
        }
    }

    fn on_close(&mut self, lp: &mut Loop, _token: Token, err: Option<&std::io::Error>) {
        let code = match err {
            Some(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) && !self.h.connected.get() => {
                MYRIAD_ETIMEDOUT
            }
            // A TLS failure (bad certificate, alert, protocol error).
            Some(e) if e.kind() == std::io::ErrorKind::InvalidData => crate::MYRIAD_ETLS,
            Some(e) => os_err(e),
            None => 0,
        };
        self.h.token.set(None);
        self.h.closed(lp, code);
    }
}

/// Runs `f` with the stream's connection I/O: directly inside the stream's own callback,
/// else through the loop without running callbacks now. `early` handles a stream that has
/// no connection yet (resolving). `s` is NULL or a live handle (the C contract of every
/// stream function, as for `with_req`).
fn with_stream(
    s: *mut myriad_stream_t,
    f: impl FnOnce(&myriad_stream_t, &mut Io<'_>) -> c_int,
    early: impl FnOnce(&myriad_stream_t, &mut Loop) -> c_int,
) -> c_int {
    guard(|| {
        // SAFETY: a live stream handle (valid until its CLOSED event returns) or NULL.
        let Some(h) = (unsafe { s.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        let body = |lp: &mut Loop| {
            if h.state.get() == State::Closed {
                return MYRIAD_EGONE;
            }
            let iop = h.io.get().cast::<Io<'_>>();
            if !iop.is_null() {
                // SAFETY: set only while this stream's callback runs; the callback's own
                // frame does not use it until we return.
                return f(h, unsafe { &mut *iop });
            }
            match h.token.get() {
                Some(t) => lp
                    .with_conn_later::<StreamProto, c_int>(t, |_, io| f(h, io))
                    .unwrap_or(MYRIAD_EGONE),
                None => early(h, lp),
            }
        };
        // SAFETY: the stream's loop outlives it.
        unsafe { with_loop(h.lb, body) }
    })
}

/// `with_stream` for calls that queue output: refused once the stream is closing.
fn with_open(
    s: *mut myriad_stream_t,
    f: impl FnOnce(&mut Io<'_>),
    early: impl FnOnce(&mut Early),
) -> c_int {
    with_stream(
        s,
        |h, io| {
            if h.state.get() == State::Closing || h.shut.get() || h.early.borrow().close {
                return MYRIAD_ESTATE;
            }
            f(io);
            MYRIAD_OK
        },
        |h, _| {
            let mut e = h.early.borrow_mut();
            if e.close || h.shut.get() {
                return MYRIAD_ESTATE;
            }
            early(&mut e);
            MYRIAD_OK
        },
    )
}

/// Listens on `addr` (HOST:PORT, [V6]:PORT, unix:PATH or fd:N, with the listener options
/// of myriad_server_listen: `?mode=0660&owner=..&group=..`, `?reuseport`) and calls `cb`
/// with each accepted stream. `*id` (optional) receives the listener's id for myriad_stream_unlisten.
/// `dtor(userdata)` runs when the listener is closed (or its loop freed); on an error return
/// it does not run (the user data stays the caller's). Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EADDR, OS errors (bind, listen); myriad_last_error_detail
/// names the address and the cause.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_listen(
    lp: *mut myriad_loop_t,
    addr: *const c_char,
    addr_len: usize,
    cb: myriad_accept_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
    id: *mut u64,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { listen(lp, addr, addr_len, None, cb, userdata, dtor, id) }
}

/// myriad_stream_listen over TLS: each accepted stream is a TLS server connection with
/// `tls`'s certificates (chosen by SNI; reloadable with myriad_tls_config_reload); the
/// stream's data is the plaintext, its close sends close_notify, and
/// myriad_stream_tls tells its facts once the handshake is done. A failed handshake
/// closes the stream with MYRIAD_ETLS. Errors: as myriad_stream_listen, MYRIAD_ETLS
/// (`tls` has no certificate...: see myriad_tls_config_error).
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_listen_tls(
    lp: *mut myriad_loop_t,
    addr: *const c_char,
    addr_len: usize,
    tls: *mut crate::myriad_tls_config_t,
    cb: myriad_accept_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
    id: *mut u64,
) -> c_int {
    guard(|| {
        // SAFETY: a live configuration or NULL.
        let Some(t) = (unsafe { tls.as_mut() }) else {
            return MYRIAD_EINVAL;
        };
        match t.acceptor() {
            // SAFETY: forwarded.
            Ok(acc) => unsafe { listen(lp, addr, addr_len, Some(acc), cb, userdata, dtor, id) },
            Err(e) => e,
        }
    })
}

/// The body of the stream listens, with or without TLS.
///
/// # Safety
/// As myriad_stream_listen.
#[allow(clippy::too_many_arguments)]
unsafe fn listen(
    lp: *mut myriad_loop_t,
    addr: *const c_char,
    addr_len: usize,
    tls: Option<myriad::tls::TlsAcceptor>,
    cb: myriad_accept_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
    id: *mut u64,
) -> c_int {
    let ud = userdata as usize;
    crate::clear_detail();
    guard(|| {
        let Some(cb) = cb else {
            return MYRIAD_EINVAL;
        };
        // SAFETY: the caller passes addr_len readable bytes.
        let Some(a) = (unsafe { c_str(addr, addr_len) }) else {
            return MYRIAD_EINVAL;
        };
        let (a, lopts) = match myriad::parse_listen(a) {
            Ok(x) => x,
            Err(e) => return crate::fail(MYRIAD_EADDR, e.to_string()),
        };
        let lb = lp.cast_const();
        // Owned (with its destructor) only once the listener exists: an error return
        // leaves the user data the caller's.
        let make_accept = move |ud: UserData| {
            move |lp: &mut Loop, acc: Accepted| {
                let h = myriad_stream_t::new(lb, State::Open);
                h.peer.set(Some(acc.peer));
                let token =
                    lp.add_conn_with(acc, StreamProto { h: h.clone() }, ConnOptions::default());
                h.token.set(Some(token));
                if let Some(a) = &tls {
                    let layer = a.accept();
                    let set = lp.with_conn_later::<StreamProto, bool>(token, |_, io| {
                        match layer {
                            Some(l) => io.set_transport(l),
                            None => io.abort(),
                        }
                        !io.is_closing()
                    });
                    if set != Some(true) {
                        return;
                    }
                }
                let peer = format!("{}\0", h.peer.get().expect("set above"));
                let ud = ud.get();
                // SAFETY: the callback gets the new handle, a NUL-terminated peer string
                // borrowed for the call, and its user data.
                enter(lb.cast(), lp, || unsafe {
                    cb(h.ptr(), peer.as_ptr().cast(), peer.len() - 1, ud)
                });
            }
        };
        let body = move |lp: &mut Loop| {
            let l = match Listener::bind(&a, &lopts) {
                Ok(l) => l,
                Err(e) => {
                    return crate::fail(os_err(&e), crate::server::bind_detail("stream", &a, &e))
                }
            };
            let ud = UserData {
                ptr: ud as *mut c_void,
                dtor,
            };
            let t = lp.listen(l, make_accept(ud));
            if !id.is_null() {
                // SAFETY: NULL or writable, as documented.
                unsafe { *id = t.to_u64() };
            }
            MYRIAD_OK
        };
        // SAFETY: a live loop from myriad_loop_new.
        unsafe { with_loop(lb, body) }
    })
}

/// Stops a stream listener (its streams stay open); its user data is released.
/// Loop thread. Errors: MYRIAD_ENOTFOUND for an unknown id.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_unlisten(lp: *mut myriad_loop_t, id: u64) -> c_int {
    guard(|| {
        let body = |lp: &mut Loop| {
            if lp.listener_addr(Token::from_u64(id)).is_none() {
                return crate::MYRIAD_ENOTFOUND;
            }
            lp.close_listener(Token::from_u64(id));
            MYRIAD_OK
        };
        // SAFETY: a live loop.
        unsafe { with_loop(lp, body) }
    })
}

/// Writes the bound address of stream listener `id` (e.g. "127.0.0.1:40123", useful after
/// binding port 0) into `buf` (NUL-terminated); returns its length. Loop thread.
/// Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL (buf NULL or too small).
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_listener_addr(
    lp: *mut myriad_loop_t,
    id: u64,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard(|| {
        let body = |lp: &mut Loop| match lp.listener_addr(Token::from_u64(id)) {
            // SAFETY: `buf` has `cap` writable bytes.
            Some(a) => unsafe { copy_cstr(&a.to_string(), buf, cap) },
            None => crate::MYRIAD_ENOTFOUND,
        };
        // SAFETY: a live loop.
        unsafe { with_loop(lp, body) }
    })
}

/// Starts a non-blocking connect to `addr`: HOST:PORT (a name is resolved on a helper
/// thread, never blocking the loop), [V6]:PORT, IP:PORT, unix:PATH, or fd:N (adopts an
/// already connected socket). `*out` receives the stream at once; set its callbacks, and
/// write if you like (output is queued until connected). MYRIAD_STREAM_CONNECTED follows,
/// or MYRIAD_STREAM_CLOSED with the error (MYRIAD_ETIMEDOUT after `timeout_ms`, 0 for
/// none; MYRIAD_ERESOLVE; MYRIAD_EOS_BASE - ECONNREFUSED...). Loop thread.
/// Errors (no stream is created): MYRIAD_EINVAL, MYRIAD_EADDR, immediate OS errors;
/// myriad_last_error_detail names the address and the cause.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_connect(
    lp: *mut myriad_loop_t,
    addr: *const c_char,
    addr_len: usize,
    timeout_ms: u64,
    out: *mut *mut myriad_stream_t,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { connect(lp, addr, addr_len, timeout_ms, None, out) }
}

/// myriad_stream_connect over TLS: the stream is a TLS client connection that verifies
/// the server's certificate against `tls`'s CA roots (myriad_tls_config_add_ca_file; the
/// system's by default) for `server_name` (pointer + length; NULL: the host of `addr`),
/// sent as SNI, with `tls`'s ALPN and versions. Data written before the handshake is
/// done is sent once it is; a failed verification or handshake closes the stream with
/// MYRIAD_ETLS. Errors: as myriad_stream_connect, MYRIAD_ETLS (no CA roots, a bad server
/// name: see myriad_tls_config_error).
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_connect_tls(
    lp: *mut myriad_loop_t,
    addr: *const c_char,
    addr_len: usize,
    timeout_ms: u64,
    tls: *mut crate::myriad_tls_config_t,
    server_name: *const c_char,
    server_name_len: usize,
    out: *mut *mut myriad_stream_t,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded: a live configuration (or NULL) and readable strings.
        let (Some(t), Some(a)) = (unsafe { tls.as_mut() }, unsafe { c_str(addr, addr_len) }) else {
            return MYRIAD_EINVAL;
        };
        let name = if server_name.is_null() {
            match Target::parse(a) {
                Ok(Target::Name(host, _)) => host,
                Ok(Target::Addr(Addr::Tcp(sa))) => sa.ip().to_string(),
                Ok(_) => return MYRIAD_EINVAL,
                Err(_) => return MYRIAD_EADDR,
            }
        } else {
            // SAFETY: forwarded.
            match unsafe { c_str(server_name, server_name_len) } {
                Some(n) => n.to_string(),
                None => return MYRIAD_EINVAL,
            }
        };
        let layer = match t.connector().map(|c| c.connect(&name)) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                t.record_error(e.message());
                return crate::MYRIAD_ETLS;
            }
            Err(e) => return e,
        };
        // SAFETY: forwarded.
        unsafe { connect(lp, addr, addr_len, timeout_ms, Some(layer), out) }
    })
}

/// The body of the stream connects, with or without a TLS layer.
///
/// # Safety
/// As myriad_stream_connect.
unsafe fn connect(
    lp: *mut myriad_loop_t,
    addr: *const c_char,
    addr_len: usize,
    timeout_ms: u64,
    layer: Option<Box<dyn myriad::net::Transport>>,
    out: *mut *mut myriad_stream_t,
) -> c_int {
    crate::clear_detail();
    guard(|| {
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        // SAFETY: the caller passes addr_len readable bytes.
        let Some(a) = (unsafe { c_str(addr, addr_len) }) else {
            return MYRIAD_EINVAL;
        };
        let target = match Target::parse(a) {
            Ok(t) => t,
            Err(e) => return crate::fail(MYRIAD_EADDR, e.to_string()),
        };
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        let lb = lp.cast_const();
        let body = |lp: &mut Loop| {
            let h = match target {
                Target::Addr(a) => {
                    let h = myriad_stream_t::new(lb, State::Connecting);
                    if let Err(e) = start_connect(lp, &h, &a, timeout, layer) {
                        let d = format!("connect {a}: {}", crate::describe(&e));
                        return crate::fail(os_err(&e), d);
                    }
                    h
                }
                Target::Name(host, port) => {
                    match start_resolve(lp, lb, &host, port, timeout, layer) {
                        Ok(h) => h,
                        Err(e) => {
                            let d = format!("connect {host}:{port}: {}", crate::describe(&e));
                            return crate::fail(os_err(&e), d);
                        }
                    }
                }
            };
            // SAFETY: `out` is writable (checked).
            unsafe { *out = h.ptr() };
            MYRIAD_OK
        };
        // SAFETY: a live loop.
        unsafe { with_loop(lb, body) }
    })
}

fn start_connect(
    lp: &mut Loop,
    h: &Rc<myriad_stream_t>,
    a: &Addr,
    timeout: Option<Duration>,
    layer: Option<Box<dyn myriad::net::Transport>>,
) -> std::io::Result<()> {
    let t = lp.connect(
        a,
        timeout,
        ConnOptions::default(),
        StreamProto { h: h.clone() },
    )?;
    h.token.set(Some(t));
    if let Some(l) = layer {
        lp.with_conn_later::<StreamProto, ()>(t, |_, io| io.set_transport(l));
    }
    if let Addr::Tcp(sa) = a {
        h.peer.set(Some(PeerAddr::Inet(*sa)));
    } else {
        h.peer.set(Some(PeerAddr::Unix));
    }
    if matches!(a, Addr::Fd(_)) {
        // Adopted sockets are connected already: tell the stream as if it just connected.
        lp.with_conn_later::<StreamProto, ()>(t, |p, io| p.on_connect(io));
    }
    Ok(())
}

fn start_resolve(
    lp: &mut Loop,
    lb: *const myriad_loop_t,
    host: &str,
    port: u16,
    timeout: Option<Duration>,
    layer: Option<Box<dyn myriad::net::Transport>>,
) -> std::io::Result<Rc<myriad_stream_t>> {
    let h = myriad_stream_t::new(lb, State::Resolving);
    let layer = Cell::new(layer);
    let started = lp.now();
    let hr = h.clone();
    let id = lp.resolve(host, port, move |lp, res| {
        hr.resolve.set(None);
        if hr.state.get() != State::Resolving {
            return;
        }
        let addrs = match res {
            Ok(v) if !v.is_empty() => v,
            Ok(_) | Err(_) => return hr.closed(lp, MYRIAD_ERESOLVE),
        };
        let left = timeout.map(|t| t.saturating_sub(lp.now() - started));
        if let Some(t) = hr.timer.take() {
            lp.cancel_timer(t);
        }
        hr.state.set(State::Connecting);
        if let Err(e) = start_connect(lp, &hr, &Addr::Tcp(addrs[0]), left, layer.take()) {
            hr.closed(lp, os_err(&e));
        }
    })?;
    h.resolve.set(Some(id));
    if let Some(t) = timeout {
        let ht = h.clone();
        h.timer.set(Some(lp.timer(t, move |lp| {
            ht.timer.set(None);
            if ht.state.get() == State::Resolving {
                ht.closed(lp, MYRIAD_ETIMEDOUT);
            }
        })));
    }
    Ok(h)
}

/// Sets (or replaces) the stream's callbacks and user data; a replaced user data's
/// destructor runs now. `data` NULL holds input buffered (reading stops when the buffer is
/// full); `event` NULL closes the stream at the peer's EOF. Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_set_callbacks(
    s: *mut myriad_stream_t,
    data: myriad_stream_data_fn,
    event: myriad_stream_event_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    let ud = RefCell::new(Some(UserData {
        ptr: userdata,
        dtor,
    }));
    let set = |h: &myriad_stream_t| {
        h.data_fn.set(data);
        h.event_fn.set(event);
        let old = std::mem::replace(&mut *h.ud.borrow_mut(), ud.borrow_mut().take());
        drop(old);
        // Input that arrived before the callbacks is offered after this call (it kicks).
        MYRIAD_OK
    };
    let r = with_stream(s, |h, _| set(h), |h, _| set(h));
    if r != MYRIAD_OK {
        // Not registered: the user data stays the caller's (no destructor call).
        if let Some(u) = ud.into_inner() {
            std::mem::forget(u);
        }
    }
    r
}

/// Queues a copy of `len` bytes. Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_ESTATE (closing, or the write side was shut down),
/// MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_write(
    s: *mut myriad_stream_t,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: the caller passes `len` readable bytes.
    let Some(b) = (unsafe { c_bytes(data, len) }) else {
        return MYRIAD_EINVAL;
    };
    with_open(s, |io| io.write(b), |e| e.out.extend_from_slice(b))
}

/// Queues `len` bytes that stay valid and unchanged for the life of the process (string
/// literals), without copying. Loop thread. Errors: as myriad_stream_write.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_write_static(
    s: *mut myriad_stream_t,
    data: *const u8,
    len: usize,
) -> c_int {
    if data.is_null() && len > 0 {
        return MYRIAD_EINVAL;
    }
    let b: &'static [u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the caller promises `len` bytes at `data` that live forever.
        unsafe { std::slice::from_raw_parts(data, len) }
    };
    with_open(s, |io| io.write_static(b), |e| e.out.extend_from_slice(b))
}

/// Queues `len` bytes at `data` without copying; `free_fn(userdata)` runs once they are
/// written or dropped with the stream. On error `free_fn` is NOT called. Loop thread.
/// Errors: as myriad_stream_write.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_write_free(
    s: *mut myriad_stream_t,
    data: *const u8,
    len: usize,
    free_fn: myriad_free_fn,
    userdata: *mut c_void,
) -> c_int {
    if data.is_null() && len > 0 {
        return MYRIAD_EINVAL;
    }
    let buf = RefCell::new(Some(FreeBuf::new(data, len, free_fn, userdata)));
    let r = with_open(
        s,
        |io| {
            if let Some(b) = buf.borrow_mut().take() {
                io.write_owned(Box::new(b));
            }
        },
        |e| {
            if let Some(b) = buf.borrow_mut().take() {
                e.out.extend_from_slice(b.as_ref());
            }
        },
    );
    if r != MYRIAD_OK {
        // Not queued: the buffer stays the caller's.
        if let Some(b) = buf.into_inner() {
            std::mem::forget(b);
        }
    }
    r
}

/// Output queued and not yet written (0 on a bad handle). Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_queued(s: *mut myriad_stream_t) -> usize {
    let n = Cell::new(0usize);
    with_stream(
        s,
        |_, io| {
            n.set(io.queued());
            MYRIAD_OK
        },
        |h, _| {
            n.set(h.early.borrow().out.len());
            MYRIAD_OK
        },
    );
    n.get()
}

/// Stops (`paused` non-zero) or resumes reading and data callbacks; input already
/// buffered is offered again on resume. Loop thread. Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_pause(s: *mut myriad_stream_t, paused: c_int) -> c_int {
    with_stream(
        s,
        |h, io| {
            h.paused.set(paused != 0);
            io.pause_reading(paused != 0);
            MYRIAD_OK
        },
        |h, _| {
            h.paused.set(paused != 0);
            MYRIAD_OK
        },
    )
}

/// Output marks for backpressure: reading pauses while more than `high` bytes are queued,
/// and resumes at `low` or less (defaults 256 KiB / 64 KiB). Loop thread.
/// Errors: MYRIAD_EINVAL (low > high), MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_set_watermarks(
    s: *mut myriad_stream_t,
    low: usize,
    high: usize,
) -> c_int {
    if low > high {
        return MYRIAD_EINVAL;
    }
    with_stream(
        s,
        |_, io| {
            io.set_watermarks(low, high);
            MYRIAD_OK
        },
        |h, _| {
            h.early.borrow_mut().marks = Some((low, high));
            MYRIAD_OK
        },
    )
}

/// Read and write timeouts in ms (0 turns one off): MYRIAD_STREAM_TIMEOUT fires when
/// nothing was read for `read_ms` while reading, or queued output made no progress for
/// `write_ms`. Set before the connection completes, they start when it does. Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_set_timeouts(
    s: *mut myriad_stream_t,
    read_ms: u32,
    write_ms: u32,
) -> c_int {
    with_stream(
        s,
        |h, io| {
            h.read_ms.set(read_ms);
            h.write_ms.set(write_ms);
            if !h.connected.get() {
                return MYRIAD_OK;
            }
            h.arm_read();
            if io.queued() > 0 {
                h.arm_write(io);
            } else {
                h.write_at.set(None);
            }
            h.rearm(io);
            MYRIAD_OK
        },
        |h, _| {
            h.read_ms.set(read_ms);
            h.write_ms.set(write_ms);
            MYRIAD_OK
        },
    )
}

/// Shuts down the write side once queued output is written (the peer reads EOF); reading
/// goes on. Later writes fail with MYRIAD_ESTATE. Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_shutdown(s: *mut myriad_stream_t) -> c_int {
    with_stream(
        s,
        |h, io| {
            h.shut.set(true);
            io.shutdown_write();
            MYRIAD_OK
        },
        |h, _| {
            h.shut.set(true);
            h.early.borrow_mut().shutdown = true;
            MYRIAD_OK
        },
    )
}

/// Closes the stream once queued output is written; no more data callbacks. The
/// MYRIAD_STREAM_CLOSED event follows (never from inside this call). Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_close(s: *mut myriad_stream_t) -> c_int {
    with_stream(
        s,
        |h, io| {
            match h.state.get() {
                State::Open => h.state.set(State::Closing),
                // Not connected yet: close right after connecting and flushing.
                _ => h.early.borrow_mut().close = true,
            }
            io.close();
            MYRIAD_OK
        },
        |h, _| {
            h.early.borrow_mut().close = true;
            MYRIAD_OK
        },
    )
}

/// Closes the stream now, discarding queued output (a pending connect or name lookup is
/// cancelled). MYRIAD_STREAM_CLOSED follows (never from inside this call). Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_abort(s: *mut myriad_stream_t) -> c_int {
    with_stream(
        s,
        |h, io| {
            if h.state.get() == State::Open {
                h.state.set(State::Closing);
            }
            io.abort();
            MYRIAD_OK
        },
        |h, lp| {
            // Resolving: no connection to close; CLOSED comes at the iteration's end.
            if let Some(r) = h.resolve.take() {
                lp.cancel_resolve(r);
            }
            let me = h.ptr();
            // SAFETY: the handle stays alive through the Rc the deferred call takes.
            let rc = unsafe {
                Rc::increment_strong_count(me.cast_const());
                Rc::from_raw(me.cast_const())
            };
            lp.defer(move |lp| rc.closed(lp, 0));
            MYRIAD_OK
        },
    )
}

/// Writes the stream's peer address ("IP:PORT", "[V6]:PORT" or "unix:") into `buf`
/// (NUL-terminated); returns its length. Loop thread.
/// Errors: MYRIAD_EINVAL (buf NULL or too small), MYRIAD_ESTATE (still resolving).
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_peer(
    s: *mut myriad_stream_t,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard_or(MYRIAD_EINVAL, || {
        // SAFETY: a live stream or NULL.
        let Some(h) = (unsafe { s.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        match h.peer.get() {
            // SAFETY: `buf` has `cap` writable bytes.
            Some(p) => unsafe { copy_cstr(&p.to_string(), buf, cap) },
            None => MYRIAD_ESTATE,
        }
    })
}

/// A TLS fact of a TLS stream (myriad_stream_listen_tls, myriad_stream_connect_tls):
/// `what` is MYRIAD_TLS_VERSION, _CIPHER, _SNI (server side) or _ALPN; `*s`/`*len` point
/// at it (not NUL-terminated), valid while the stream is. Known from the stream's first
/// data on (the handshake is done by then). Loop thread. Errors: MYRIAD_ENOTFOUND (not
/// TLS, handshake not done, or no such fact), MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_tls(
    s: *mut myriad_stream_t,
    what: c_int,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    guard_or(MYRIAD_EINVAL, || {
        // SAFETY: a live stream or NULL.
        let Some(h) = (unsafe { s.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        let facts = h.tls.borrow();
        // SAFETY: `out`/`len` checked inside; the facts live as long as the stream.
        unsafe { crate::tls::tls_fact(facts.as_deref(), what, out, len) }
    })
}

/// The stream's loop (NULL for a NULL stream). Any thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_stream_loop(s: *mut myriad_stream_t) -> *mut myriad_loop_t {
    // SAFETY: a live stream or NULL.
    unsafe { s.as_ref() }.map_or(std::ptr::null_mut(), |h| h.lb.cast_mut())
}
