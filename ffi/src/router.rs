//! The router's C ABI: routes to C handlers, before-hooks, dispatch of a request, path
//! parameters on the request handle, and a match-only call for bindings that run their
//! own handlers.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use myriad::router::{Match, RouteError, Router};

use crate::server::{put_str, with_req, with_request};
use crate::{
    c_str, copy_cstr, guard, myriad_free_fn, myriad_handler_fn, myriad_req_t, UserData,
    MYRIAD_EINVAL, MYRIAD_ENOTFOUND, MYRIAD_OK,
};

/// A malformed route pattern or method (see myriad_router_add).
pub const MYRIAD_EPATTERN: c_int = -30;
/// A route conflicts with one registered before (same method and pattern, or another
/// parameter name at the same position).
pub const MYRIAD_ECONFLICT: c_int = -31;
/// The path matches routes, none for this method (HTTP 405).
pub const MYRIAD_EMETHOD: c_int = -32;
/// The request is malformed: an invalid percent-encoding in a path parameter, a malformed
/// form body (HTTP 400).
pub const MYRIAD_EBADREQ: c_int = -33;
/// A limit was exceeded: form parts, part headers, field or body size (HTTP 413).
pub const MYRIAD_ETOOLARGE: c_int = -34;
/// The Content-Type is not one this call handles (HTTP 415).
pub const MYRIAD_EMEDIATYPE: c_int = -35;
/// A callback asked to stop.
pub const MYRIAD_ESTOPPED: c_int = -36;
/// An invalid cookie name, value or attribute.
pub const MYRIAD_ECOOKIE: c_int = -37;

/// The HTTP status that answers an error code: MYRIAD_ENOTFOUND 404, MYRIAD_EMETHOD 405,
/// MYRIAD_EBADREQ 400, MYRIAD_ETOOLARGE 413, MYRIAD_EMEDIATYPE 415, MYRIAD_OK 200, any
/// other 500. Any thread.
#[no_mangle]
pub extern "C" fn myriad_http_status_of(code: c_int) -> c_int {
    match code {
        MYRIAD_OK => 200,
        MYRIAD_ENOTFOUND => 404,
        MYRIAD_EMETHOD => 405,
        MYRIAD_EBADREQ => 400,
        MYRIAD_ETOOLARGE => 413,
        MYRIAD_EMEDIATYPE => 415,
        _ => 500,
    }
}

/// Before-hook: runs for every request dispatched, in registration order, before the
/// route's handler (and before a 404/405). Return 0 to go on, non-zero when the hook
/// answered the request itself (it then owns the request: it finished it, or will).
pub type myriad_hook_fn =
    Option<unsafe extern "C" fn(req: *mut myriad_req_t, userdata: *mut c_void) -> c_int>;

struct Route {
    cb: myriad_handler_fn,
    ptr: *mut c_void,
    dtor: myriad_free_fn,
    /// Set once the route is in the router: a route refused by the router is dropped
    /// without running the destructor (the caller keeps its user data).
    armed: AtomicBool,
}

impl Drop for Route {
    fn drop(&mut self) {
        if let (true, Some(d)) = (self.armed.load(Ordering::Relaxed), self.dtor) {
            // SAFETY: the C caller registered `d` to release `ptr`, once.
            unsafe { d(self.ptr) };
        }
    }
}

struct Hook {
    cb: unsafe extern "C" fn(*mut myriad_req_t, *mut c_void) -> c_int,
    ud: UserData,
}

// SAFETY: routes and hooks are called from every server thread; their user data being
// usable from those threads is the C contract written on myriad_router_add.
unsafe impl Sync for Route {}
// SAFETY: as above.
unsafe impl Send for Route {}
// SAFETY: as above.
unsafe impl Sync for Hook {}
// SAFETY: as above.
unsafe impl Send for Hook {}

struct Inner {
    routes: Router<Arc<Route>>,
    /// Replaced whole when a hook is added, so that a dispatch takes it by one reference
    /// count (no allocation per request).
    hooks: Arc<Vec<Arc<Hook>>>,
    last_error: String,
}

/// A router (opaque): method + path patterns to handlers, and before-hooks. Thread-safe:
/// routes may be added from any thread, and requests dispatched from every server thread
/// at once (lookups share a read lock; adding takes it for writing).
pub struct myriad_router_t {
    inner: RwLock<Inner>,
}

fn router_ref<'a>(r: *const myriad_router_t) -> Option<&'a myriad_router_t> {
    // SAFETY: the C contract: a live router or NULL.
    unsafe { r.as_ref() }
}

/// Creates an empty router. Free it with myriad_router_free after every server using it
/// is freed. Any thread. Errors: MYRIAD_EINVAL (NULL `out`).
#[no_mangle]
pub unsafe extern "C" fn myriad_router_new(out: *mut *mut myriad_router_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        let r = Box::new(myriad_router_t {
            inner: RwLock::new(Inner {
                routes: Router::new(),
                hooks: Arc::new(Vec::new()),
                last_error: String::new(),
            }),
        });
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(r) };
        MYRIAD_OK
    })
}

/// Frees a router, running every route's and hook's destructor. NULL is a no-op. Not while
/// a request is being dispatched through it.
#[no_mangle]
pub unsafe extern "C" fn myriad_router_free(r: *mut myriad_router_t) {
    let _ = guard(|| {
        if !r.is_null() {
            // SAFETY: `r` came from myriad_router_new and is not used again.
            drop(unsafe { Box::from_raw(r) });
        }
        MYRIAD_OK
    });
}

/// Adds a route: `method` ("GET"; any HTTP token) and `pattern` ("/users/:id",
/// "/static/*path": see README) to `cb`, called with the request (its parameters readable
/// with myriad_req_param) and `userdata`, on the request's loop thread — with several
/// server threads, concurrently. `cb` may be NULL for a route used only through
/// myriad_router_match. `dtor(userdata)` runs when the router is freed. Any thread.
/// Errors (the route is not added, `dtor` is not called): MYRIAD_EINVAL (NULL or non-UTF-8
/// strings), MYRIAD_EPATTERN (malformed pattern or method), MYRIAD_ECONFLICT (the same
/// method and pattern again, or a parameter named differently at the same position);
/// myriad_router_last_error says which.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn myriad_router_add(
    r: *mut myriad_router_t,
    method: *const c_char,
    method_len: usize,
    pattern: *const c_char,
    pattern_len: usize,
    cb: myriad_handler_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded C strings.
        let (Some(rt), Some(m), Some(p)) = (
            router_ref(r),
            unsafe { c_str(method, method_len) },
            unsafe { c_str(pattern, pattern_len) },
        ) else {
            return MYRIAD_EINVAL;
        };
        let mut inner = rt.inner.write().unwrap_or_else(|e| e.into_inner());
        let route = Arc::new(Route {
            cb,
            ptr: userdata,
            dtor,
            armed: AtomicBool::new(false),
        });
        match inner.routes.add(m, p, route.clone()) {
            Ok(()) => {
                route.armed.store(true, Ordering::Relaxed);
                MYRIAD_OK
            }
            Err(e) => {
                inner.last_error = e.to_string();
                match e {
                    RouteError::Invalid(_) | RouteError::BadMethod => MYRIAD_EPATTERN,
                    RouteError::Duplicate(_) | RouteError::Conflict(_) => MYRIAD_ECONFLICT,
                }
            }
        }
    })
}

/// Copies the message of the last failed myriad_router_add (NUL-terminated) into `buf`
/// of `cap` bytes; returns its length ("" if none failed). Any thread.
/// Errors: MYRIAD_EINVAL (NULL, or `cap` too small).
#[no_mangle]
pub unsafe extern "C" fn myriad_router_last_error(
    r: *const myriad_router_t,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard(|| {
        let Some(rt) = router_ref(r) else {
            return MYRIAD_EINVAL;
        };
        let inner = rt.inner.read().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the caller's buffer of `cap` bytes.
        unsafe { copy_cstr(&inner.last_error, buf, cap) }
    })
}

/// Adds a before-hook (see myriad_hook_fn), run by myriad_router_dispatch for every
/// request, in the order added; `dtor(userdata)` runs when the router is freed. Any thread.
/// Errors: MYRIAD_EINVAL (NULL router or hook; `dtor` is not called).
#[no_mangle]
pub unsafe extern "C" fn myriad_router_before(
    r: *mut myriad_router_t,
    hook: myriad_hook_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    guard(|| {
        let (Some(rt), Some(cb)) = (router_ref(r), hook) else {
            return MYRIAD_EINVAL;
        };
        let h = Arc::new(Hook {
            cb,
            ud: UserData {
                ptr: userdata,
                dtor,
            },
        });
        let mut inner = rt.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut hooks = Vec::clone(&inner.hooks);
        hooks.push(h);
        inner.hooks = Arc::new(hooks);
        MYRIAD_OK
    })
}

/// Outcome of a lookup: the route (cloned out of the lock), or an error code and the
/// Allow value for a 405.
enum Found {
    Route(Arc<Route>),
    /// The code, and for a 405 the Allow value (in the router: valid until it changes).
    Miss(c_int, *const u8, usize),
}

/// Looks up the request and stores its parameters on the handle.
fn lookup(inner: &Inner, req: &mut myriad_req_t) -> Option<Found> {
    let mut params = std::mem::take(&mut req.params);
    let found = with_request(req, |q| {
        match inner.routes.find(q.method(), q.path(), &mut params) {
            Match::Found(route) => Found::Route(route.clone()),
            Match::NotFound => Found::Miss(MYRIAD_ENOTFOUND, std::ptr::null(), 0),
            Match::MethodNotAllowed(a) => Found::Miss(MYRIAD_EMETHOD, a.as_ptr(), a.len()),
            Match::BadRequest => Found::Miss(MYRIAD_EBADREQ, std::ptr::null(), 0),
        }
    });
    req.params = params;
    found
}

/// Answers a miss with its status and a text/plain reason.
unsafe fn answer(req: *mut myriad_req_t, code: c_int, allow: &str) -> c_int {
    let (status, body): (c_int, &[u8]) = match code {
        MYRIAD_ENOTFOUND => (404, b"Not Found"),
        MYRIAD_EMETHOD => (405, b"Method Not Allowed"),
        MYRIAD_EBADREQ => (400, b"Bad Request"),
        _ => (500, b"Internal Server Error"),
    };
    if code == MYRIAD_EMETHOD {
        // SAFETY: forwarded live request; the strings are valid for the call.
        unsafe {
            crate::myriad_req_header_add(
                req,
                c"Allow".as_ptr(),
                5,
                allow.as_ptr().cast(),
                allow.len(),
            )
        };
    }
    // SAFETY: as above.
    unsafe {
        crate::myriad_req_send(
            req,
            status,
            c"text/plain".as_ptr(),
            10,
            body.as_ptr(),
            body.len(),
        )
    }
}

/// Dispatches a request (call it from the server's handler, or make myriad_router_handler
/// the server's handler): runs the before-hooks in order (one returning non-zero ends
/// the dispatch), then the route's handler with the path parameters set on the request.
/// With no route for the path it answers 404 "Not Found", with routes for the path but not
/// the method 405 "Method Not Allowed" with an Allow header, for a parameter that is not
/// valid percent-encoded UTF-8 400 "Bad Request" (all text/plain); a route added with a
/// NULL handler answers 500. HEAD uses the GET route when there is no HEAD route. Loop
/// thread of the request. Errors: MYRIAD_EINVAL, MYRIAD_EGONE, MYRIAD_EWRONGTHREAD (the
/// request was not touched).
#[no_mangle]
pub unsafe extern "C" fn myriad_router_dispatch(
    r: *const myriad_router_t,
    req: *mut myriad_req_t,
) -> c_int {
    // SAFETY: forwarded (the panic boundary around the whole dispatch).
    guard(|| unsafe { dispatch(r, req) })
}

/// myriad_router_dispatch's body.
unsafe fn dispatch(r: *const myriad_router_t, req: *mut myriad_req_t) -> c_int {
    let Some(rt) = router_ref(r) else {
        return MYRIAD_EINVAL;
    };
    let hooks = with_req(req, |_| MYRIAD_OK);
    if hooks != MYRIAD_OK {
        return hooks;
    }
    let hooks = rt
        .inner
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .hooks
        .clone();
    for h in hooks.iter() {
        // SAFETY: the hook takes the live request and its user data.
        if unsafe { (h.cb)(req, h.ud.get()) } != 0 {
            return MYRIAD_OK;
        }
    }
    let mut found = None;
    let mut allow = String::new();
    let rc = with_req(req, |q| {
        // The Allow value is copied while the router is read-locked.
        let inner = rt.inner.read().unwrap_or_else(|e| e.into_inner());
        found = lookup(&inner, q);
        if let Some(Found::Miss(MYRIAD_EMETHOD, p, n)) = found {
            // SAFETY: points into the router, which cannot change while `inner` is held.
            allow = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, n) }).into();
        }
        MYRIAD_OK
    });
    if rc != MYRIAD_OK {
        return rc; // a hook finished the request yet returned 0
    }
    match found {
        Some(Found::Route(route)) => match route.cb {
            // SAFETY: the C handler gets the live request and its user data.
            Some(cb) => unsafe {
                cb(req, route.ptr);
                MYRIAD_OK
            },
            // SAFETY: forwarded live request.
            None => unsafe { answer(req, 0, "") },
        },
        // SAFETY: forwarded live request.
        Some(Found::Miss(code, _, _)) => unsafe { answer(req, code, &allow) },
        None => crate::MYRIAD_EGONE,
    }
}

/// Looks the request up without calling anything (for bindings with handlers of their
/// own): on a match returns 0, sets `*route_userdata` to the route's user data and the
/// path parameters on the request. Otherwise returns MYRIAD_ENOTFOUND (404),
/// MYRIAD_EMETHOD (405: `*allow`, `*allow_len` get the Allow value, not NUL-terminated,
/// stored in the router: valid until a route is added to it or it is freed), or
/// MYRIAD_EBADREQ (400). Before-hooks
/// are not run. `allow`/`allow_len` may be NULL. Loop thread of the request.
/// Errors: MYRIAD_EINVAL, MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_router_match(
    r: *const myriad_router_t,
    req: *mut myriad_req_t,
    route_userdata: *mut *mut c_void,
    allow: *mut *const c_char,
    allow_len: *mut usize,
) -> c_int {
    let Some(rt) = router_ref(r) else {
        return MYRIAD_EINVAL;
    };
    if route_userdata.is_null() {
        return MYRIAD_EINVAL;
    }
    // (with_req is the panic boundary)
    with_req(req, |q| {
        match lookup(&rt.inner.read().unwrap_or_else(|e| e.into_inner()), q) {
            Some(Found::Route(route)) => {
                // SAFETY: checked non-NULL above.
                unsafe { *route_userdata = route.ptr };
                MYRIAD_OK
            }
            Some(Found::Miss(code, p, n)) => {
                if code == MYRIAD_EMETHOD && !allow.is_null() && !allow_len.is_null() {
                    // SAFETY: both out-pointers are writable.
                    unsafe {
                        *allow = p.cast();
                        *allow_len = n;
                    }
                }
                code
            }
            None => crate::MYRIAD_EGONE,
        }
    })
}

/// The path parameter `name` of a routed request (decoded, not NUL-terminated; valid until
/// the request is finished or routed again). Loop thread.
/// Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL, MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_param(
    req: *mut myriad_req_t,
    name: *const c_char,
    name_len: usize,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: forwarded C string.
    let Some(name) = (unsafe { c_str(name, name_len) }) else {
        return MYRIAD_EINVAL;
    };
    with_req(req, |q| match q.params.get(name) {
        // SAFETY: the bytes live on the handle until it is finished or routed again.
        Some(v) => unsafe { put_str(v.as_bytes(), out, len) },
        None => MYRIAD_ENOTFOUND,
    })
}

/// How many path parameters the routed request has (0 if not routed), or a negative
/// error (MYRIAD_EINVAL, MYRIAD_EGONE, MYRIAD_EWRONGTHREAD). Loop thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_param_count(req: *mut myriad_req_t) -> c_int {
    with_req(req, |q| q.params.len() as c_int)
}

/// The `i`th path parameter in pattern order: name and decoded value (same lifetime as
/// myriad_req_param). Loop thread. Errors: MYRIAD_ENOTFOUND (out of range), MYRIAD_EINVAL,
/// MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_param_at(
    req: *mut myriad_req_t,
    i: usize,
    name: *mut *const c_char,
    name_len: *mut usize,
    value: *mut *const c_char,
    value_len: *mut usize,
) -> c_int {
    with_req(req, |q| match q.params.at(i) {
        Some((n, v)) => {
            // SAFETY: writable out-pointers; the bytes live on the handle.
            let rc = unsafe { put_str(n.as_bytes(), name, name_len) };
            if rc != MYRIAD_OK {
                return rc;
            }
            // SAFETY: as above.
            unsafe { put_str(v.as_bytes(), value, value_len) }
        }
        None => MYRIAD_ENOTFOUND,
    })
}

/// A server handler that dispatches through the router given as its user data:
/// `myriad_server_set_handler(srv, myriad_router_handler, router, NULL)` (the router must
/// outlive the server). Errors of myriad_router_dispatch are ignored (the request is then
/// left as it was).
#[no_mangle]
pub unsafe extern "C" fn myriad_router_handler(req: *mut myriad_req_t, router: *mut c_void) {
    // SAFETY: the user data registered with this handler is a live router.
    unsafe { myriad_router_dispatch(router as *const myriad_router_t, req) };
}
