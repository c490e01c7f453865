//! WebSocket: accepting an upgrade from a request, the connection handle, pub/sub.
//!
//! A `myriad_ws_t` is valid from myriad_ws_accept until its close callback returns; the
//! library frees it (and calls the user data's destructor) then. Sends made inside its
//! callbacks are written when the callback returns, sends made elsewhere at the end of the
//! loop iteration: all of an iteration's output leaves in one write.
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use myriad::ws::{self, Handler, Options, Sent, WebSocket};
use myriad::Loop;

use crate::loops::{enter, myriad_loop_t};
use crate::server::{end_req_switch, myriad_req_t, req_loop_of};
use crate::{
    c_bytes, c_str, guard, guard_or, myriad_free_fn, UserData, MYRIAD_EINVAL, MYRIAD_ENOTFOUND,
    MYRIAD_OK,
};

/// The request was not a valid WebSocket upgrade: it was answered with a 4xx (400, 405,
/// or 426 with `Sec-WebSocket-Version: 13` / `Upgrade: websocket`) and its handle freed.
pub const MYRIAD_EWS_REFUSED: c_int = -50;
/// The message was not queued: the connection's queue would pass its max_backpressure
/// (with close_on_backpressure set the connection is closing too).
pub const MYRIAD_EWS_BACKPRESSURE: c_int = -51;
/// The WebSocket is closing or closed: nothing more is sent.
pub const MYRIAD_EWS_CLOSED: c_int = -52;
/// An invalid close code (valid: 1000-1003, 1007-1014, 3000-4999, or 1005 for none).
pub const MYRIAD_EWS_CODE: c_int = -53;
/// The request cannot switch protocols (FastCGI, HTTP/1.0, or its head was already sent);
/// the request handle is freed.
pub const MYRIAD_EWS_PROTOCOL: c_int = -54;

/// Message opcode: continuation (myriad_ws_send_fragment only).
pub const MYRIAD_WS_CONTINUATION: c_int = 0;
/// Message opcode: text (UTF-8).
pub const MYRIAD_WS_TEXT: c_int = 1;
/// Message opcode: binary.
pub const MYRIAD_WS_BINARY: c_int = 2;

/// A WebSocket connection (opaque). Valid from myriad_ws_accept until its close callback
/// returns. Loop thread only.
pub struct myriad_ws_t {
    ws: Option<WebSocket>,
    lp: *mut myriad_loop_t,
    owner: crate::ThreadKey,
}

/// WebSocket options; fill with myriad_ws_options_init, then change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct myriad_ws_options_t {
    /// Largest message accepted, after inflating, over all its fragments (16 MiB); larger
    /// closes the connection with 1009.
    pub max_message: usize,
    /// Accept permessage-deflate when offered (1) or not (0). Default 1.
    pub deflate: c_int,
    /// Messages shorter than this are sent uncompressed (1024).
    pub compress_threshold: usize,
    /// Bytes queued per connection past which a send is refused with
    /// MYRIAD_EWS_BACKPRESSURE (1 MiB).
    pub max_backpressure: usize,
    /// 1: close the connection (1008, output dropped) instead of refusing the message.
    pub close_on_backpressure: c_int,
    /// Send a ping after this many ms without input, and close if nothing answers within
    /// as long again (0: none).
    pub ping_interval_ms: u32,
    /// Close with 1001 after this many ms without input (0: never; default 120000).
    pub idle_timeout_ms: u32,
    /// Subprotocols spoken, comma-separated (pointer + length; NULL/0: none); the first the
    /// client offers is chosen.
    pub protocols: *const c_char,
    /// Length of `protocols`.
    pub protocols_len: usize,
}

/// Open callback: the 101 is queued; sends may start.
pub type myriad_ws_open_fn =
    Option<unsafe extern "C" fn(ws: *mut myriad_ws_t, userdata: *mut c_void)>;
/// Message callback: a whole message, MYRIAD_WS_TEXT (valid UTF-8) or MYRIAD_WS_BINARY;
/// `data` is borrowed for the call.
pub type myriad_ws_message_fn = Option<
    unsafe extern "C" fn(
        ws: *mut myriad_ws_t,
        opcode: c_int,
        data: *const u8,
        len: usize,
        userdata: *mut c_void,
    ),
>;
/// Drain callback: output that had to wait for the client has all been written.
pub type myriad_ws_drain_fn =
    Option<unsafe extern "C" fn(ws: *mut myriad_ws_t, userdata: *mut c_void)>;
/// Close callback, always the last: the client's close code and reason, the code this side
/// failed the connection with (1002, 1007, 1009, 1008 for backpressure), or 1006 for a
/// connection that ended without a close frame. The handle is freed when it returns.
pub type myriad_ws_close_fn = Option<
    unsafe extern "C" fn(
        ws: *mut myriad_ws_t,
        code: c_int,
        reason: *const c_char,
        len: usize,
        userdata: *mut c_void,
    ),
>;

/// The callbacks of a WebSocket; any may be NULL.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct myriad_ws_callbacks_t {
    /// Called once the connection is open.
    pub on_open: myriad_ws_open_fn,
    /// Called for each message.
    pub on_message: myriad_ws_message_fn,
    /// Called when queued output drained after the socket was full.
    pub on_drain: myriad_ws_drain_fn,
    /// Called once at the end.
    pub on_close: myriad_ws_close_fn,
}

struct CHandler {
    cbs: myriad_ws_callbacks_t,
    ud: UserData,
    h: *mut myriad_ws_t,
}

impl Drop for CHandler {
    fn drop(&mut self) {
        // SAFETY: `h` came from Box::into_raw in myriad_ws_accept and is freed only here.
        drop(unsafe { Box::from_raw(self.h) });
    }
}

impl CHandler {
    fn call(&self, lp: &mut Loop, f: impl FnOnce()) {
        // SAFETY: `h` is live (freed only when this handler drops).
        let lb = unsafe { (*self.h).lp };
        enter(lb as *const c_void, lp, f);
    }
}

impl Handler for CHandler {
    fn on_open(&mut self, lp: &mut Loop, _: &WebSocket) {
        if let Some(f) = self.cbs.on_open {
            let (h, ud) = (self.h, self.ud.get());
            // SAFETY: a C callback with the live handle and the caller's user data.
            self.call(lp, || unsafe { f(h, ud) });
        }
    }
    fn on_message(&mut self, lp: &mut Loop, _: &WebSocket, data: &[u8], binary: bool) {
        if let Some(f) = self.cbs.on_message {
            let (h, ud) = (self.h, self.ud.get());
            let op = if binary {
                MYRIAD_WS_BINARY
            } else {
                MYRIAD_WS_TEXT
            };
            // SAFETY: as above; `data` lives for the call.
            self.call(lp, || unsafe { f(h, op, data.as_ptr(), data.len(), ud) });
        }
    }
    fn on_drain(&mut self, lp: &mut Loop, _: &WebSocket) {
        if let Some(f) = self.cbs.on_drain {
            let (h, ud) = (self.h, self.ud.get());
            // SAFETY: as above.
            self.call(lp, || unsafe { f(h, ud) });
        }
    }
    fn on_close(&mut self, lp: &mut Loop, _: &WebSocket, code: u16, reason: &[u8]) {
        if let Some(f) = self.cbs.on_close {
            let (h, ud) = (self.h, self.ud.get());
            // SAFETY: as above; `reason` lives for the call.
            self.call(lp, || unsafe {
                f(
                    h,
                    c_int::from(code),
                    reason.as_ptr().cast(),
                    reason.len(),
                    ud,
                )
            });
        }
    }
}

/// Fills `opts` with the defaults. Any thread. Errors: MYRIAD_EINVAL (NULL).
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_options_init(opts: *mut myriad_ws_options_t) -> c_int {
    guard(|| {
        if opts.is_null() {
            return MYRIAD_EINVAL;
        }
        let d = Options::default();
        let o = myriad_ws_options_t {
            max_message: d.max_message,
            deflate: c_int::from(d.deflate),
            compress_threshold: d.compress_threshold,
            max_backpressure: d.max_backpressure,
            close_on_backpressure: 0,
            ping_interval_ms: 0,
            idle_timeout_ms: d.idle_timeout.map_or(0, |t| t.as_millis() as u32),
            protocols: std::ptr::null(),
            protocols_len: 0,
        };
        // SAFETY: `opts` is writable (checked non-NULL; the caller's contract).
        unsafe { opts.write(o) };
        MYRIAD_OK
    })
}

unsafe fn options(o: *const myriad_ws_options_t) -> Option<Options> {
    let mut opts = Options::default();
    // SAFETY: NULL or a readable options struct.
    let Some(o) = (unsafe { o.as_ref() }) else {
        return Some(opts);
    };
    // SAFETY: the caller passes `protocols_len` readable bytes.
    let protos = unsafe { c_str(o.protocols, o.protocols_len) }?;
    opts.max_message = o.max_message;
    opts.deflate = o.deflate != 0;
    opts.compress_threshold = o.compress_threshold;
    opts.max_backpressure = o.max_backpressure;
    opts.close_on_backpressure = o.close_on_backpressure != 0;
    opts.ping_interval =
        (o.ping_interval_ms > 0).then(|| Duration::from_millis(o.ping_interval_ms.into()));
    opts.idle_timeout =
        (o.idle_timeout_ms > 0).then(|| Duration::from_millis(o.idle_timeout_ms.into()));
    opts.protocols = protos
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    Some(opts)
}

/// Accepts a WebSocket upgrade of request `req` (in its handler or later on the loop
/// thread): answers 101 (with Sec-WebSocket-Accept, the chosen subprotocol, and
/// permessage-deflate if offered and enabled) and stores the new handle in `*out` (may be
/// NULL). The request handle is freed in every case but MYRIAD_EINVAL / MYRIAD_EWRONGTHREAD.
/// `opts` may be NULL (defaults); `cbs` may be NULL (no callbacks). On success the user
/// data belongs to the WebSocket: `dtor` runs after its close callback. Loop thread.
/// Errors: MYRIAD_EWS_REFUSED (not a valid upgrade; answered 4xx), MYRIAD_EWS_PROTOCOL,
/// MYRIAD_EINVAL (bad protocols string), MYRIAD_EGONE, MYRIAD_EWRONGTHREAD. On an error no
/// callback is called, and `dtor` only after MYRIAD_EWS_PROTOCOL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_accept(
    req: *mut myriad_req_t,
    opts: *const myriad_ws_options_t,
    cbs: *const myriad_ws_callbacks_t,
    out: *mut *mut myriad_ws_t,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or a readable options struct.
        let Some(o) = (unsafe { options(opts) }) else {
            return MYRIAD_EINVAL;
        };
        // SAFETY: NULL or a readable callbacks struct.
        let cbs = unsafe { cbs.as_ref() }
            .copied()
            .unwrap_or(myriad_ws_callbacks_t {
                on_open: None,
                on_message: None,
                on_drain: None,
                on_close: None,
            });
        let lb = req_loop_of(req);
        end_req_switch(
            req,
            |r| ws::prepare(r, &o).map(|p| (p, o.clone())),
            |p, res| match p {
                Err(reject) => {
                    ws::refuse(res, reject);
                    MYRIAD_EWS_REFUSED
                }
                Ok((p, o)) => {
                    let h = Box::into_raw(Box::new(myriad_ws_t {
                        ws: None,
                        lp: lb,
                        owner: crate::this_thread(),
                    }));
                    let handler = CHandler {
                        cbs,
                        ud: UserData {
                            ptr: userdata,
                            dtor,
                        },
                        h,
                    };
                    match ws::accept(p, res, o, handler) {
                        Ok(w) => {
                            // SAFETY: `h` is live: the handler owning it is in the connection.
                            unsafe { (*h).ws = Some(w) };
                            if !out.is_null() {
                                // SAFETY: `out` is writable (the caller's contract).
                                unsafe { *out = h };
                            }
                            MYRIAD_OK
                        }
                        // (The handler, with the handle and user data, was dropped.)
                        Err(_) => MYRIAD_EWS_PROTOCOL,
                    }
                }
            },
        )
    })
}

fn with_ws(ws: *mut myriad_ws_t, f: impl FnOnce(&WebSocket) -> c_int) -> c_int {
    guard(|| {
        // SAFETY: NULL or a live handle (valid until its close callback returns).
        match unsafe { ws.as_ref() } {
            Some(h) if h.owner != crate::this_thread() => crate::MYRIAD_EWRONGTHREAD,
            Some(myriad_ws_t { ws: Some(w), .. }) => f(w),
            _ => MYRIAD_EINVAL,
        }
    })
}

fn sent(s: Sent) -> c_int {
    match s {
        Sent::Queued => MYRIAD_OK,
        Sent::Dropped => crate::fail(
            MYRIAD_EWS_BACKPRESSURE,
            "the WebSocket's queue is over max_backpressure",
        ),
        Sent::Closed => MYRIAD_EWS_CLOSED,
        Sent::Invalid => MYRIAD_EWS_CODE,
    }
}

/// Sends a message: `opcode` MYRIAD_WS_TEXT (the bytes should be UTF-8) or
/// MYRIAD_WS_BINARY; the bytes are copied (compressed if deflate is in use and the message
/// is at least compress_threshold long). Loop thread. Errors: MYRIAD_EWS_BACKPRESSURE,
/// MYRIAD_EWS_CLOSED, MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_send(
    ws: *mut myriad_ws_t,
    opcode: c_int,
    data: *const u8,
    len: usize,
) -> c_int {
    with_ws(ws, |w| {
        // SAFETY: `len` readable bytes at `data`.
        let Some(d) = (unsafe { c_bytes(data, len) }) else {
            return MYRIAD_EINVAL;
        };
        match opcode {
            MYRIAD_WS_TEXT | MYRIAD_WS_BINARY => sent(w.send(d, opcode == MYRIAD_WS_BINARY)),
            _ => MYRIAD_EINVAL,
        }
    })
}

/// Sends one fragment of a message: the first with `opcode` MYRIAD_WS_TEXT or
/// MYRIAD_WS_BINARY, the next ones with MYRIAD_WS_CONTINUATION, the last with `fin` 1.
/// Fragments are not compressed; send nothing else between them. Loop thread. Errors as
/// myriad_ws_send.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_send_fragment(
    ws: *mut myriad_ws_t,
    opcode: c_int,
    data: *const u8,
    len: usize,
    fin: c_int,
) -> c_int {
    with_ws(ws, |w| {
        // SAFETY: `len` readable bytes at `data`.
        let Some(d) = (unsafe { c_bytes(data, len) }) else {
            return MYRIAD_EINVAL;
        };
        match opcode {
            MYRIAD_WS_CONTINUATION => sent(w.send_fragment(d, false, false, fin != 0)),
            MYRIAD_WS_TEXT | MYRIAD_WS_BINARY => {
                sent(w.send_fragment(d, opcode == MYRIAD_WS_BINARY, true, fin != 0))
            }
            _ => MYRIAD_EINVAL,
        }
    })
}

/// Sends a ping with up to 125 bytes of payload (longer is cut). Loop thread. Errors:
/// MYRIAD_EWS_CLOSED, MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_ping(
    ws: *mut myriad_ws_t,
    data: *const u8,
    len: usize,
) -> c_int {
    with_ws(ws, |w| {
        // SAFETY: `len` readable bytes at `data`.
        match unsafe { c_bytes(data, len) } {
            Some(d) => sent(w.ping(d)),
            None => MYRIAD_EINVAL,
        }
    })
}

/// Starts the close handshake with `code` and `reason` (cut to 123 bytes); the connection
/// closes when the client answers (or after 5 s) and the close callback runs then. Loop
/// thread. Errors: MYRIAD_EWS_CODE, MYRIAD_EWS_CLOSED, MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_close(
    ws: *mut myriad_ws_t,
    code: c_int,
    reason: *const c_char,
    len: usize,
) -> c_int {
    with_ws(ws, |w| {
        // SAFETY: `len` readable bytes at `reason`.
        let Some(r) = (unsafe { c_bytes(reason.cast(), len) }) else {
            return MYRIAD_EINVAL;
        };
        match u16::try_from(code) {
            Ok(c) => sent(w.close(c, r)),
            Err(_) => MYRIAD_EWS_CODE,
        }
    })
}

/// Closes the TCP connection now, without a close handshake; queued output is dropped and
/// the close callback gets 1006. Loop thread. Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_terminate(ws: *mut myriad_ws_t) -> c_int {
    with_ws(ws, |w| {
        w.terminate();
        MYRIAD_OK
    })
}

/// Stops (`paused` 1) or resumes (0) reading the client's messages. Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_pause(ws: *mut myriad_ws_t, paused: c_int) -> c_int {
    with_ws(ws, |w| {
        w.pause(paused != 0);
        MYRIAD_OK
    })
}

/// Bytes queued and not yet written (the `ws` package's bufferedAmount); 0 for NULL.
/// Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_queued(ws: *mut myriad_ws_t) -> usize {
    guard_or(0, || {
        // SAFETY: NULL or a live handle.
        unsafe { ws.as_ref() }
            .and_then(|h| h.ws.as_ref())
            .map_or(0, |w| w.buffered_amount())
    })
}

/// The subprotocol chosen in the handshake, in `*out`/`*len` (valid as long as the handle;
/// not NUL-terminated). Loop thread. Errors: MYRIAD_ENOTFOUND (none), MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_protocol(
    ws: *mut myriad_ws_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    with_ws(ws, |w| {
        if out.is_null() || len.is_null() {
            return MYRIAD_EINVAL;
        }
        let Some(p) = w.protocol() else {
            return MYRIAD_ENOTFOUND;
        };
        // SAFETY: both out-pointers are writable; the string lives in the handle's state.
        unsafe {
            *out = p.as_ptr().cast();
            *len = p.len();
        }
        MYRIAD_OK
    })
}

/// Subscribes to `topic` (this loop's topics: publishing on another loop or process does
/// not reach it). Subscribing twice is once. Loop thread. Errors: MYRIAD_EWS_CLOSED,
/// MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_subscribe(
    ws: *mut myriad_ws_t,
    topic: *const c_char,
    len: usize,
) -> c_int {
    with_ws(ws, |w| {
        // SAFETY: `len` readable bytes at `topic`.
        match unsafe { c_str(topic, len) } {
            Some(t) if w.subscribe(t) => MYRIAD_OK,
            Some(_) => MYRIAD_EWS_CLOSED,
            None => MYRIAD_EINVAL,
        }
    })
}

/// Unsubscribes from `topic`. Loop thread. Errors: MYRIAD_ENOTFOUND (not subscribed),
/// MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_unsubscribe(
    ws: *mut myriad_ws_t,
    topic: *const c_char,
    len: usize,
) -> c_int {
    with_ws(ws, |w| {
        // SAFETY: `len` readable bytes at `topic`.
        match unsafe { c_str(topic, len) } {
            Some(t) if w.unsubscribe(t) => MYRIAD_OK,
            Some(_) => MYRIAD_ENOTFOUND,
            None => MYRIAD_EINVAL,
        }
    })
}

/// Publishes a message (MYRIAD_WS_TEXT or MYRIAD_WS_BINARY) to every subscriber of
/// `topic` on the calling thread's loop, except `from` when it is not NULL. The frame is
/// encoded once (and compressed once for the subscribers using deflate) and the same bytes
/// are queued on every subscriber; a subscriber over its max_backpressure does not get it
/// (or is closed, by its options). Returns how many subscribers got it (>= 0). Loop thread.
/// Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_ws_publish(
    from: *mut myriad_ws_t,
    topic: *const c_char,
    topic_len: usize,
    opcode: c_int,
    data: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: `topic_len` readable bytes at `topic`, `len` at `data`.
        let (Some(t), Some(d)) = (unsafe { c_str(topic, topic_len) }, unsafe {
            c_bytes(data, len)
        }) else {
            return MYRIAD_EINVAL;
        };
        if opcode != MYRIAD_WS_TEXT && opcode != MYRIAD_WS_BINARY {
            return MYRIAD_EINVAL;
        }
        let binary = opcode == MYRIAD_WS_BINARY;
        // SAFETY: NULL or a live handle.
        let n = match unsafe { from.as_ref() }.and_then(|h| h.ws.as_ref()) {
            Some(w) => w.publish(t, d, binary),
            None => ws::publish(t, d, binary),
        };
        c_int::try_from(n).unwrap_or(c_int::MAX)
    })
}
