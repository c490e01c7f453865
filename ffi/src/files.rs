//! File responses and the static file handler in C: `myriad_req_write_file` (a body from
//! a file descriptor, sent by sendfile) and `myriad_files_t` (myriad::files::FileServer:
//! a root directory served as nginx's static module would), plus the loop's file counters.
//!
//! A `myriad_files_t` is configuration (root, options) usable from every loop thread of a
//! multi-threaded server: each loop thread that serves with it gets its own FileServer
//! (its own open-file cache), made on its first request and dropped on a later request
//! once the handle was freed.

use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use myriad::files::{FileServer, FilesOptions};

use crate::loops::{myriad_loop_t, with_loop};
use crate::server::{end_req_with, myriad_req_t, with_response};
use crate::{c_bytes, fail, guard, MYRIAD_EINVAL, MYRIAD_ESTATE, MYRIAD_OK};

/// The root given to myriad_files_new cannot be opened as a directory (missing, not a
/// directory, not readable); myriad_last_error_detail says why.
pub const MYRIAD_EFILES_ROOT: c_int = -60;
/// The descriptor given to myriad_req_write_file is not an open regular file.
pub const MYRIAD_EFILES_FD: c_int = -61;
/// The range given to myriad_req_write_file goes past the end of the file.
pub const MYRIAD_EFILES_RANGE: c_int = -62;

/// The description of this module's error codes, for myriad_strerror.
pub(crate) fn strerror(code: c_int) -> Option<&'static str> {
    Some(match code {
        MYRIAD_EFILES_ROOT => "the file root cannot be opened as a directory\0",
        MYRIAD_EFILES_FD => "not an open regular file\0",
        MYRIAD_EFILES_RANGE => "the range goes past the end of the file\0",
        _ => return None,
    })
}

/// Queues `length` bytes of the file open on `fd`, from `offset`, as body (length
/// UINT64_MAX: to the end of the file). The bytes are not read by the library on a plain
/// HTTP connection: they go from the page cache to the socket by sendfile (over FastCGI
/// they are read into STDOUT records, a block at a time as the front end takes them). On
/// success the library owns `fd`: it is closed once the bytes are written or the request
/// is gone; the file must keep those bytes until then (a file that shrinks meanwhile
/// closes the connection). On error `fd` stays the caller's. Combines with
/// myriad_req_write and myriad_req_flush like any body piece; finish as usual. Loop thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EFILES_FD (fd is not an open regular file),
/// MYRIAD_EFILES_RANGE (offset + length past its end), MYRIAD_EGONE, MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_req_write_file(
    req: *mut myriad_req_t,
    fd: c_int,
    offset: u64,
    length: u64,
) -> c_int {
    guard(|| {
        if fd < 0 {
            return MYRIAD_EINVAL;
        }
        // SAFETY: fstat writes one stat into a zeroed, live struct; any fd value is safe.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return fail(
                MYRIAD_EFILES_FD,
                format!("fd {fd} is not an open regular file"),
            );
        }
        let size = st.st_size as u64;
        let len = if length == u64::MAX {
            size.saturating_sub(offset)
        } else {
            length
        };
        if offset > size || len > size - offset {
            return fail(
                MYRIAD_EFILES_RANGE,
                format!("{len} bytes from {offset} of a {size}-byte file"),
            );
        }
        let mut taken: Option<Rc<File>> = None;
        let write = |res: &mut myriad::Response| {
            // SAFETY: fstat said `fd` is open; it becomes the library's only now (given
            // back below on error).
            let f = Rc::new(unsafe { File::from_raw_fd(fd) });
            taken = Some(f.clone());
            res.write_file(f, offset, len)
        };
        // SAFETY: `req` is the caller's handle; with_response checks it.
        let code = unsafe { with_response(req, write) };
        if code != MYRIAD_OK {
            // Give the descriptor back without closing it.
            if let Some(f) = taken.and_then(|f| Rc::try_unwrap(f).ok()) {
                let _ = f.into_raw_fd();
            }
        }
        code
    })
}

/// A static file handler's configuration (opaque): see myriad_files_new.
pub struct myriad_files_t {
    root: PathBuf,
    opts: Mutex<FilesOptions>,
    /// Alive while the handle is; each loop thread's FileServer holds a Weak to it.
    token: Arc<()>,
    /// Set by the first serve: the options are fixed from then on.
    used: std::sync::atomic::AtomicBool,
}

thread_local! {
    /// This thread's FileServers, by the handle they serve.
    static SERVERS: RefCell<Vec<(Weak<()>, Rc<FileServer>)>> = const { RefCell::new(Vec::new()) };
}

/// Serves the files under directory `root` (`root_len` bytes, not NUL-terminated) with
/// nginx's defaults: index.html for a directory, `.br`/`.gz` siblings for clients that
/// accept them, an open-file cache of 1024 entries trusted for 1 s, no Cache-Control.
/// Change them with the myriad_files_set_* calls before the first myriad_files_serve.
/// The root is opened once here to check it (and again by each loop thread that serves).
/// Free with myriad_files_free. Any thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_EFILES_ROOT (with myriad_last_error_detail).
#[no_mangle]
pub unsafe extern "C" fn myriad_files_new(
    root: *const c_char,
    root_len: usize,
    out: *mut *mut myriad_files_t,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded (NULL or `root_len` readable bytes).
        let Some(r) = (unsafe { c_bytes(root.cast(), root_len) }) else {
            return MYRIAD_EINVAL;
        };
        if out.is_null() || r.is_empty() || r.contains(&0) {
            return MYRIAD_EINVAL;
        }
        let path = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(r));
        if let Err(e) = FileServer::new(&path, FilesOptions::default()) {
            return fail(
                MYRIAD_EFILES_ROOT,
                format!("file root {}: {}", path.display(), crate::describe(&e)),
            );
        }
        let f = Box::new(myriad_files_t {
            root: path,
            opts: Mutex::new(FilesOptions::default()),
            token: Arc::new(()),
            used: Default::default(),
        });
        // SAFETY: `out` is writable.
        unsafe { *out = Box::into_raw(f) };
        MYRIAD_OK
    })
}

/// Frees the handler (NULL: no-op), once no request is being served with it. Each loop
/// thread's open-file cache for it (its descriptors) goes at that thread's next
/// myriad_files_serve of another handler, or when the thread ends. Any thread.
#[no_mangle]
pub unsafe extern "C" fn myriad_files_free(files: *mut myriad_files_t) {
    let _ = guard(|| {
        if !files.is_null() {
            // SAFETY: from Box::into_raw in myriad_files_new, freed once.
            drop(unsafe { Box::from_raw(files) });
        }
        MYRIAD_OK
    });
}

/// Changes an option before the first serve: MYRIAD_ESTATE afterwards.
unsafe fn set(files: *mut myriad_files_t, f: impl FnOnce(&mut FilesOptions)) -> c_int {
    guard(|| {
        // SAFETY: the caller passes a live handle or NULL.
        let Some(h) = (unsafe { files.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        if h.used.load(std::sync::atomic::Ordering::Acquire) {
            return MYRIAD_ESTATE;
        }
        f(&mut h.opts.lock().unwrap_or_else(|e| e.into_inner()));
        MYRIAD_OK
    })
}

/// The file served for a directory asked for with a trailing slash (`name_len` 0: none,
/// every directory is then 403). A plain name, no '/'. Before the first serve; any thread.
/// Errors: MYRIAD_EINVAL, MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_files_set_index(
    files: *mut myriad_files_t,
    name: *const c_char,
    name_len: usize,
) -> c_int {
    // SAFETY: forwarded.
    let Some(n) = (unsafe { crate::c_str(name, name_len) }) else {
        return MYRIAD_EINVAL;
    };
    if n.contains('/') || n.contains('\0') || n == "." || n == ".." {
        return MYRIAD_EINVAL;
    }
    let n = (!n.is_empty()).then(|| n.to_string());
    // SAFETY: forwarded.
    unsafe { set(files, |o| o.index = n) }
}

/// Whether `NAME.br` / `NAME.gz` are served to clients that accept them (1, the default)
/// or never (0). Before the first serve; any thread. Errors: MYRIAD_EINVAL, MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_files_set_precompressed(
    files: *mut myriad_files_t,
    on: c_int,
) -> c_int {
    if on != 0 && on != 1 {
        return MYRIAD_EINVAL;
    }
    // SAFETY: forwarded.
    unsafe { set(files, |o| o.precompressed = on == 1) }
}

/// A Cache-Control value for every file response (`len` 0: none, the default). Before the
/// first serve; any thread. Errors: MYRIAD_EINVAL (NULL with a length, CR, LF or NUL),
/// MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_files_set_cache_control(
    files: *mut myriad_files_t,
    value: *const c_char,
    len: usize,
) -> c_int {
    // SAFETY: forwarded.
    let Some(v) = (unsafe { crate::c_str(value, len) }) else {
        return MYRIAD_EINVAL;
    };
    if v.bytes().any(|c| c < 0x20 && c != b'\t' || c == 0x7f) {
        return MYRIAD_EINVAL;
    }
    let v = (!v.is_empty()).then(|| v.to_string());
    // SAFETY: forwarded.
    unsafe { set(files, |o| o.cache_control = v) }
}

/// The open-file cache: at most `entries` paths per loop thread (0 turns it off), each
/// trusted for `valid_ms` milliseconds (1 or more) before it is opened again. Before the
/// first serve; any thread. Errors: MYRIAD_EINVAL, MYRIAD_ESTATE.
#[no_mangle]
pub unsafe extern "C" fn myriad_files_set_cache(
    files: *mut myriad_files_t,
    entries: usize,
    valid_ms: u32,
) -> c_int {
    if valid_ms == 0 {
        return MYRIAD_EINVAL;
    }
    // SAFETY: forwarded.
    unsafe {
        set(files, |o| {
            o.cache_entries = entries;
            o.cache_valid = Duration::from_millis(valid_ms.into());
        })
    }
}

/// This thread's FileServer for `h`, made on first use; drops those of freed handles.
fn server_for(h: &myriad_files_t) -> std::io::Result<Rc<FileServer>> {
    SERVERS.with(|s| {
        let mut s = s.borrow_mut();
        s.retain(|(w, _)| w.strong_count() > 0);
        let me = Arc::downgrade(&h.token);
        if let Some((_, fs)) = s.iter().find(|(w, _)| w.ptr_eq(&me)) {
            return Ok(fs.clone());
        }
        h.used.store(true, std::sync::atomic::Ordering::Release);
        let opts = h.opts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let fs = Rc::new(FileServer::new(&h.root, opts)?);
        s.push((me, fs.clone()));
        Ok(fs)
    })
}

/// Answers `req` with the file at `path` (`path_len` bytes) below the root, and frees the
/// request handle like myriad_req_finish (do not use it afterwards, whatever the result).
/// `path` is the request path below the mount point as sent, percent-encoded (e.g. the
/// part of myriad_req_path after "/static/"). Every answer is the handler's: the file
/// (200, 206, multipart ranges, 304, 412, 416), a redirect of a directory to its slash
/// form (301), 400 for a path that tries to leave the root, 403, 404, 405 with Allow for
/// methods other than GET and HEAD (README "Static files" lists them). If the root can no
/// longer be opened on this thread the answer is 500 and the result MYRIAD_EFILES_ROOT.
/// Loop thread (of the request). Errors: MYRIAD_EINVAL (NULL files or path with a length:
/// the request is then still the caller's), MYRIAD_EWRONGTHREAD, MYRIAD_EFILES_ROOT.
#[no_mangle]
pub unsafe extern "C" fn myriad_files_serve(
    files: *mut myriad_files_t,
    req: *mut myriad_req_t,
    path: *const c_char,
    path_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller passes a live handle or NULL.
        let Some(h) = (unsafe { files.as_ref() }) else {
            return MYRIAD_EINVAL;
        };
        // SAFETY: forwarded.
        let Some(p) = (unsafe { c_bytes(path.cast(), path_len) }) else {
            return MYRIAD_EINVAL;
        };
        end_req_with(req, |q, res| match server_for(h) {
            Ok(fs) => {
                match q {
                    Some(q) => fs.serve(q, res, p),
                    None => fs.serve_later(res, p),
                }
                MYRIAD_OK
            }
            Err(e) => {
                let _ = res.send(500, "text/plain", b"500 Internal Server Error\n");
                fail(
                    MYRIAD_EFILES_ROOT,
                    format!("file root {}: {}", h.root.display(), crate::describe(&e)),
                )
            }
        })
    })
}

/// The loop's file counters (see myriad_loop_file_stats).
#[repr(C)]
#[derive(Default)]
pub struct myriad_file_stats_t {
    /// sendfile calls.
    pub sendfile: u64,
    /// File bytes sent by sendfile: from the page cache to the socket, not through user
    /// space.
    pub file_sent: u64,
    /// pread calls for file bytes that pass through user space (FastCGI, TLS).
    pub file_reads: u64,
    /// File bytes read into user space for them (0 on plain HTTP).
    pub file_copied: u64,
}

/// Copies the loop's file counters into `*out`. Loop thread. Errors: MYRIAD_EINVAL,
/// MYRIAD_EWRONGTHREAD.
#[no_mangle]
pub unsafe extern "C" fn myriad_loop_file_stats(
    lp: *mut myriad_loop_t,
    out: *mut myriad_file_stats_t,
) -> c_int {
    if out.is_null() {
        return MYRIAD_EINVAL;
    }
    guard(|| {
        // SAFETY: forwarded; `out` is writable.
        unsafe {
            with_loop(lp, |l| {
                let s = l.stats();
                *out = myriad_file_stats_t {
                    sendfile: s.sendfile,
                    file_sent: s.file_sent,
                    file_reads: s.file_reads,
                    file_copied: s.file_copied,
                };
                MYRIAD_OK
            })
        }
    })
}
