//! Forms and query strings in the C ABI: urlencoded pairs decoded one call at a time, a
//! streaming form parser (urlencoded or multipart) fed by the caller, and
//! myriad_req_read_form, which feeds it the request body as it arrives.

use std::ffi::{c_char, c_int, c_void};

use myriad::form::{Error as FormError, Event, Form, Limits, Part};

use crate::{
    c_bytes, guard, myriad_free_fn, myriad_req_t, UserData, MYRIAD_EBADREQ, MYRIAD_EGONE,
    MYRIAD_EINVAL, MYRIAD_EMEDIATYPE, MYRIAD_ENOTFOUND, MYRIAD_ESTATE, MYRIAD_ESTOPPED,
    MYRIAD_ETOOLARGE, MYRIAD_OK,
};

/// A (name, value) callback: decoded bytes valid during the call only (not
/// NUL-terminated). Return 0 to go on, non-zero to stop.
pub type myriad_pair_fn = Option<
    unsafe extern "C" fn(
        name: *const c_char,
        name_len: usize,
        value: *const c_char,
        value_len: usize,
        userdata: *mut c_void,
    ) -> c_int,
>;

/// Decodes an `application/x-www-form-urlencoded` string (a query string without '?', or a
/// form body) and calls `cb` for each pair in order: `+` is a space, `%XX` the byte, a `%`
/// not followed by two hex digits stays as it is, a pair without `=` has an empty value,
/// empty pairs are skipped, repeated names are all reported. The same rules as the Lua
/// `req.args` and the Node `req.query`. Any thread. Errors: MYRIAD_EINVAL,
/// MYRIAD_ESTOPPED (`cb` returned non-zero).
#[no_mangle]
pub unsafe extern "C" fn myriad_urlencoded_parse(
    data: *const c_char,
    len: usize,
    cb: myriad_pair_fn,
    userdata: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's bytes.
        let (Some(d), Some(cb)) = (unsafe { c_bytes(data.cast(), len) }, cb) else {
            return MYRIAD_EINVAL;
        };
        for (n, v) in myriad::percent::parse_urlencoded(d) {
            // SAFETY: the callback gets bytes valid for the call.
            if unsafe {
                cb(
                    n.as_ptr().cast(),
                    n.len(),
                    v.as_ptr().cast(),
                    v.len(),
                    userdata,
                )
            } != 0
            {
                return MYRIAD_ESTOPPED;
            }
        }
        MYRIAD_OK
    })
}

/// A part of a form (opaque): given with MYRIAD_FORM_PART, valid until that part's
/// MYRIAD_FORM_PART_END.
pub struct myriad_part_t {
    _opaque: [u8; 0],
}

fn part_ref<'a>(p: *const myriad_part_t) -> Option<&'a Part> {
    // SAFETY: the C contract: a pointer the library gave (a `Part` cast to the opaque
    // type) during its validity, or NULL.
    unsafe { p.cast::<Part>().as_ref() }
}

unsafe fn out_str(s: &str, out: *mut *const c_char, len: *mut usize) -> c_int {
    if out.is_null() || len.is_null() {
        return MYRIAD_EINVAL;
    }
    // SAFETY: writable out-pointers.
    unsafe {
        *out = s.as_ptr().cast();
        *len = s.len();
    }
    MYRIAD_OK
}

/// The part's field name (not NUL-terminated; valid during the callback). Any thread.
/// Errors: MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_part_name(
    part: *const myriad_part_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    guard(|| match part_ref(part) {
        // SAFETY: forwarded out-pointers.
        Some(p) => unsafe { out_str(&p.name, out, len) },
        None => MYRIAD_EINVAL,
    })
}

/// The part's filename as the client sent it (`filename*` decoded if given): a file part
/// has one (possibly empty). Never use it as a path. Any thread.
/// Errors: MYRIAD_ENOTFOUND (not a file), MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_part_filename(
    part: *const myriad_part_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    guard(|| match part_ref(part) {
        // SAFETY: forwarded out-pointers.
        Some(p) => match &p.filename {
            // SAFETY: forwarded out-pointers.
            Some(f) => unsafe { out_str(f, out, len) },
            None => MYRIAD_ENOTFOUND,
        },
        None => MYRIAD_EINVAL,
    })
}

/// The part's Content-Type header. Any thread. Errors: MYRIAD_ENOTFOUND, MYRIAD_EINVAL.
#[no_mangle]
pub unsafe extern "C" fn myriad_part_content_type(
    part: *const myriad_part_t,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    guard(|| match part_ref(part) {
        // SAFETY: forwarded out-pointers.
        Some(p) => match &p.content_type {
            // SAFETY: forwarded out-pointers.
            Some(f) => unsafe { out_str(f, out, len) },
            None => MYRIAD_ENOTFOUND,
        },
        None => MYRIAD_EINVAL,
    })
}

/// Form event: a part begins (`part` describes it).
pub const MYRIAD_FORM_PART: c_int = 1;
/// Form event: a piece of the current part's value (`data`, `len`; never empty).
pub const MYRIAD_FORM_DATA: c_int = 2;
/// Form event: the current part is complete.
pub const MYRIAD_FORM_PART_END: c_int = 3;
/// Form event: the form is complete.
pub const MYRIAD_FORM_END: c_int = 4;

/// Limit: most parts (default 1000).
pub const MYRIAD_FORM_MAX_PARTS: c_int = 1;
/// Limit: largest header block of a multipart part, bytes (default 8 KiB).
pub const MYRIAD_FORM_MAX_HEADER: c_int = 2;
/// Limit: largest non-file field value, bytes (default 1 MiB; a urlencoded pair encoded).
pub const MYRIAD_FORM_MAX_FIELD: c_int = 3;
/// Limit: largest body, bytes (default none: the server's MYRIAD_MAX_BODY applies).
pub const MYRIAD_FORM_MAX_TOTAL: c_int = 4;

/// Form event callback: the event (MYRIAD_FORM_PART, _DATA, _PART_END, _END), the current
/// part (NULL for _END), data for _DATA, user data. With myriad_req_read_form the event may
/// also be negative: the form failed with that code (MYRIAD_EBADREQ, MYRIAD_ETOOLARGE,
/// MYRIAD_EGONE for a body that never completed), `data`/`len` then a static description,
/// and it is the last call; answer with myriad_http_status_of(event). Everything is valid
/// during the call only. Return 0 to go on, non-zero to stop (no more calls).
pub type myriad_form_fn = Option<
    unsafe extern "C" fn(
        event: c_int,
        part: *const myriad_part_t,
        data: *const u8,
        len: usize,
        userdata: *mut c_void,
    ) -> c_int,
>;

/// A streaming form parser (opaque): urlencoded or multipart/form-data, fed the body in
/// pieces. One thread at a time.
pub struct myriad_form_t {
    content_type: String,
    limits: Limits,
    form: Option<Form>,
    sink: Sink,
    error: Option<FormError>,
}

/// The C callback the events go to.
struct Sink {
    cb: unsafe extern "C" fn(c_int, *const myriad_part_t, *const u8, usize, *mut c_void) -> c_int,
    ud: UserData,
    stopped: bool,
}

impl Sink {
    fn emit(&mut self, ev: Event<'_>) {
        if self.stopped {
            return;
        }
        let (code, part, data, len) = match ev {
            Event::Part(p) => (MYRIAD_FORM_PART, p as *const Part, std::ptr::null(), 0),
            Event::Data(d) => (MYRIAD_FORM_DATA, std::ptr::null(), d.as_ptr(), d.len()),
            Event::PartEnd => (MYRIAD_FORM_PART_END, std::ptr::null(), std::ptr::null(), 0),
            Event::End => (MYRIAD_FORM_END, std::ptr::null(), std::ptr::null(), 0),
        };
        // SAFETY: the registered callback; `part` is the parser's (cast to the opaque
        // myriad_part_t, cast back by the accessors), alive until the part ends.
        if unsafe { (self.cb)(code, part.cast(), data, len, self.ud.get()) } != 0 {
            self.stopped = true;
        }
    }
}

fn code_of(e: FormError) -> c_int {
    match e.status() {
        413 => MYRIAD_ETOOLARGE,
        415 => MYRIAD_EMEDIATYPE,
        _ => MYRIAD_EBADREQ,
    }
}

/// A static NUL-terminated description of a form error.
fn message(e: FormError) -> &'static str {
    match e {
        FormError::UnsupportedType => "not a form content type\0",
        FormError::NoBoundary => "multipart body without a valid boundary\0",
        FormError::Malformed(_) => "malformed form body\0",
        FormError::Truncated => "form body ended before its closing delimiter\0",
        FormError::TooManyParts => "too many form parts\0",
        FormError::HeaderTooLarge => "form part headers too large\0",
        FormError::FieldTooLarge => "form field too large\0",
        FormError::TooLarge => "form body too large\0",
    }
}

impl myriad_form_t {
    fn new(
        ct: &[u8],
        cb: myriad_form_fn,
        ptr: *mut c_void,
        dtor: myriad_free_fn,
    ) -> Result<Box<myriad_form_t>, c_int> {
        let Some(cb) = cb else {
            return Err(MYRIAD_EINVAL);
        };
        let ct = std::str::from_utf8(ct).map_err(|_| MYRIAD_EMEDIATYPE)?;
        myriad::form::content_kind(ct).map_err(code_of)?;
        Ok(Box::new(myriad_form_t {
            content_type: ct.to_string(),
            limits: Limits::default(),
            form: None,
            sink: Sink {
                cb,
                ud: UserData { ptr, dtor },
                stopped: false,
            },
            error: None,
        }))
    }

    /// Feeds `data` (and ends the body if `end`).
    fn feed(&mut self, data: &[u8], end: bool) -> c_int {
        if let Some(e) = self.error {
            return code_of(e);
        }
        if self.sink.stopped {
            return MYRIAD_ESTOPPED;
        }
        if self.form.is_none() {
            match Form::new(&self.content_type, self.limits) {
                Ok(f) => self.form = Some(f),
                Err(e) => {
                    self.error = Some(e);
                    return code_of(e);
                }
            }
        }
        let (Some(form), sink) = (self.form.as_mut(), &mut self.sink) else {
            return MYRIAD_ESTATE;
        };
        let mut r = form.feed(data, |ev| sink.emit(ev));
        if end && r.is_ok() && !sink.stopped {
            r = form.finish(|ev| sink.emit(ev));
        }
        match r {
            Err(e) => {
                self.error = Some(e);
                code_of(e)
            }
            Ok(()) if self.sink.stopped => MYRIAD_ESTOPPED,
            Ok(()) => MYRIAD_OK,
        }
    }
}

fn form_mut<'a>(f: *mut myriad_form_t) -> Option<&'a mut myriad_form_t> {
    // SAFETY: the C contract: a live form or NULL, used by one thread at a time.
    unsafe { f.as_mut() }
}

/// Creates a form parser for a body of this Content-Type (the request's Content-Type
/// header value), calling `cb` with its events (never a negative one: errors are returned
/// by myriad_form_feed / myriad_form_finish). `dtor(userdata)` runs at myriad_form_free.
/// Any thread (then one at a time). Errors (`dtor` not called): MYRIAD_EINVAL,
/// MYRIAD_EMEDIATYPE (neither form type: 415), MYRIAD_EBADREQ (multipart without a valid
/// boundary: 400).
#[no_mangle]
pub unsafe extern "C" fn myriad_form_new(
    out: *mut *mut myriad_form_t,
    content_type: *const c_char,
    ct_len: usize,
    cb: myriad_form_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's bytes.
        let Some(ct) = (unsafe { c_bytes(content_type.cast(), ct_len) }) else {
            return MYRIAD_EINVAL;
        };
        if out.is_null() {
            return MYRIAD_EINVAL;
        }
        match myriad_form_t::new(ct, cb, userdata, None) {
            Ok(mut f) => {
                f.sink.ud.dtor = dtor;
                // SAFETY: `out` is writable.
                unsafe { *out = Box::into_raw(f) };
                MYRIAD_OK
            }
            Err(e) => e,
        }
    })
}

/// Sets a limit (MYRIAD_FORM_MAX_PARTS, _MAX_HEADER, _MAX_FIELD, _MAX_TOTAL; value > 0)
/// before the first myriad_form_feed. Errors: MYRIAD_EINVAL (unknown limit, 0),
/// MYRIAD_ESTATE (already fed).
#[no_mangle]
pub unsafe extern "C" fn myriad_form_set_limit(
    f: *mut myriad_form_t,
    which: c_int,
    value: u64,
) -> c_int {
    guard(|| {
        let Some(f) = form_mut(f) else {
            return MYRIAD_EINVAL;
        };
        if f.form.is_some() || f.error.is_some() {
            return MYRIAD_ESTATE;
        }
        if value == 0 {
            return MYRIAD_EINVAL;
        }
        let v = usize::try_from(value).unwrap_or(usize::MAX);
        match which {
            MYRIAD_FORM_MAX_PARTS => f.limits.parts = v,
            MYRIAD_FORM_MAX_HEADER => f.limits.header_bytes = v,
            MYRIAD_FORM_MAX_FIELD => f.limits.field_bytes = v,
            MYRIAD_FORM_MAX_TOTAL => f.limits.total_bytes = value,
            _ => return MYRIAD_EINVAL,
        }
        MYRIAD_OK
    })
}

/// Parses the next piece of the body, calling the callback for each event it completes.
/// Errors (final: later calls return the same): MYRIAD_EBADREQ (malformed: answer 400),
/// MYRIAD_ETOOLARGE (a limit: 413), MYRIAD_ESTOPPED (the callback asked to stop),
/// MYRIAD_EINVAL. myriad_form_error describes the last one.
#[no_mangle]
pub unsafe extern "C" fn myriad_form_feed(
    f: *mut myriad_form_t,
    data: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's bytes.
        let (Some(f), Some(d)) = (form_mut(f), unsafe { c_bytes(data, len) }) else {
            return MYRIAD_EINVAL;
        };
        f.feed(d, false)
    })
}

/// The body is complete: reports what is left (a urlencoded body's last field, then
/// MYRIAD_FORM_END). Errors: as myriad_form_feed; MYRIAD_EBADREQ for a multipart body cut
/// before its closing delimiter.
#[no_mangle]
pub unsafe extern "C" fn myriad_form_finish(f: *mut myriad_form_t) -> c_int {
    guard(|| match form_mut(f) {
        Some(f) => f.feed(&[], true),
        None => MYRIAD_EINVAL,
    })
}

/// A static NUL-terminated description of the form's error ("" if none).
#[no_mangle]
pub unsafe extern "C" fn myriad_form_error(f: *const myriad_form_t) -> *const c_char {
    // SAFETY: the C contract: a live form or NULL.
    let e = unsafe { f.as_ref() }.and_then(|f| f.error);
    e.map_or("\0", message).as_ptr().cast()
}

/// Frees a form parser (running the destructor). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn myriad_form_free(f: *mut myriad_form_t) {
    let _ = guard(|| {
        if !f.is_null() {
            // SAFETY: from myriad_form_new, not used again.
            drop(unsafe { Box::from_raw(f) });
        }
        MYRIAD_OK
    });
}

/// The body callback of myriad_req_read_form: feeds the parser, reports errors as a
/// negative event, and ends it at the body's end.
unsafe extern "C" fn on_form_body(
    _req: *mut myriad_req_t,
    data: *const u8,
    len: usize,
    event: c_int,
    ud: *mut c_void,
) {
    // SAFETY: `ud` is the form registered by myriad_req_read_form, freed by the body
    // callback's destructor only.
    let f = unsafe { &mut *(ud as *mut myriad_form_t) };
    if f.sink.stopped || f.error.is_some() {
        return;
    }
    let rc = match event {
        crate::MYRIAD_BODY_DATA => {
            // SAFETY: the body piece is valid for this call.
            let d = unsafe { std::slice::from_raw_parts(data, len) };
            f.feed(d, false)
        }
        crate::MYRIAD_BODY_END => f.feed(&[], true),
        _ => MYRIAD_EGONE,
    };
    if rc < 0 && rc != MYRIAD_ESTOPPED {
        let msg = match (rc, f.error) {
            (_, Some(e)) => message(e),
            _ => "the request body did not complete\0",
        };
        f.sink.stopped = true;
        // SAFETY: the registered callback; the message is static.
        unsafe {
            (f.sink.cb)(
                rc,
                std::ptr::null(),
                msg.as_ptr(),
                msg.len() - 1,
                f.sink.ud.get(),
            )
        };
    }
}

unsafe extern "C" fn free_form(ud: *mut c_void) {
    // SAFETY: the form boxed by myriad_req_read_form.
    drop(unsafe { Box::from_raw(ud as *mut myriad_form_t) });
}

/// Parses the request body as a form while it arrives (the request's Content-Type picks
/// urlencoded or multipart; default limits, the server's MYRIAD_MAX_BODY on top), calling
/// `cb` with each event: parts, data pieces (a file's bytes as they come, never held
/// whole), part ends, the end — or one negative event if the form fails (see
/// myriad_form_fn). `dtor(userdata)` runs when the request is done with it. Call it in the
/// handler, on the loop thread, instead of myriad_req_on_body. Errors (no callback, `dtor`
/// not called): MYRIAD_EMEDIATYPE (no Content-Type or another type: 415), MYRIAD_EBADREQ
/// (multipart without a boundary: 400), MYRIAD_EINVAL, MYRIAD_ESTATE (not in the handler),
/// MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_read_form(
    req: *mut myriad_req_t,
    cb: myriad_form_fn,
    userdata: *mut c_void,
    dtor: myriad_free_fn,
) -> c_int {
    let mut ct: Option<Vec<u8>> = None;
    let rc = crate::server::with_req(req, |q| {
        ct = crate::server::with_request(q, |r| r.header("content-type").map(<[u8]>::to_vec))
            .flatten();
        MYRIAD_OK
    });
    if rc != MYRIAD_OK {
        return rc;
    }
    let Some(ct) = ct else {
        return if cb.is_none() {
            MYRIAD_EINVAL
        } else {
            MYRIAD_EMEDIATYPE
        };
    };
    let f = match guard_form(|| myriad_form_t::new(&ct, cb, userdata, None)) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let fp = Box::into_raw(f);
    // SAFETY: a live request; the form is freed by `free_form` when the body callback is
    // dropped (after its last call), or below on error.
    let rc =
        unsafe { crate::myriad_req_on_body(req, Some(on_form_body), fp.cast(), Some(free_form)) };
    if rc != MYRIAD_OK {
        // SAFETY: not registered: still ours (its destructor field is unset).
        drop(unsafe { Box::from_raw(fp) });
        return rc;
    }
    // Registered: the user data's destructor now belongs to the form.
    // SAFETY: the form is alive (owned by the body callback) and only touched on this
    // thread; no body event can run during this call.
    unsafe { (*fp).sink.ud.dtor = dtor };
    MYRIAD_OK
}

fn guard_form(
    f: impl FnOnce() -> Result<Box<myriad_form_t>, c_int>,
) -> Result<Box<myriad_form_t>, c_int> {
    crate::guard_or(Err(crate::MYRIAD_EPANIC), f)
}
