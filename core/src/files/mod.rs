//! A static file handler as strict as nginx's static module: [`FileServer`] serves the files
//! under a root directory, the body going out by `sendfile` ([`Response::write_file`]).
//!
//! By concern: `resolve.rs` (a request path to an open file, never outside the root),
//! `cond.rs` (validators, conditional requests, Accept-Encoding), `range.rs` (Range),
//! `mime.rs` (Content-Type by extension), `cache.rs` (the open-file cache); this file
//! puts them together in the order of RFC 9110 §13.2.2.
//!
//! What a request gets:
//! - a method other than GET and HEAD: 405 with `Allow: GET, HEAD`;
//! - a path with NUL, a backslash, a bad escape or a `..` above the root: 400; an encoded
//!   slash, a missing file, a FIFO or device, or a file asked for as a directory (`f/`):
//!   404; a file the process may not read or a symlink leading out of the root: 403;
//! - a directory: its index file (`index.html`) when asked for with the slash, else 403
//!   (no listing); without the slash, 301 to the slash form (query kept);
//! - a file: 200 with Content-Type, Last-Modified, a strong ETag, `Accept-Ranges: bytes`,
//!   the configured Cache-Control; `Vary: Accept-Encoding` and, when the client accepts it
//!   and a sibling exists, the `.br` or `.gz` file with `Content-Encoding`;
//! - preconditions (If-Match, If-Unmodified-Since → 412; If-None-Match, If-Modified-Since
//!   → 304), then for GET a Range (one → 206 with Content-Range, several →
//!   multipart/byteranges, none satisfiable → 416 with `Content-Range: bytes */SIZE`,
//!   bad syntax → the whole file), subject to If-Range.

mod cache;
mod cond;
pub mod mime;
mod range;
mod resolve;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use cache::CacheStats;
use cache::{Cache, Kind, Opened};
use cond::{Cond, Preconditions};
use range::Ranges;
use resolve::Mode;

use crate::{Request, Response};

/// How a [`FileServer`] serves.
#[derive(Clone, Debug)]
pub struct FilesOptions {
    /// The file served for a directory asked for with a trailing slash (nginx's `index`);
    /// `None`: a directory is always 403.
    pub index: Option<String>,
    /// Serve `NAME.br` / `NAME.gz` in place of `NAME` to clients that accept that coding
    /// (nginx's `brotli_static` / `gzip_static`); every file response then says
    /// `Vary: Accept-Encoding`.
    pub precompressed: bool,
    /// A `Cache-Control` value for every file response (and its 304s); `None`: none.
    pub cache_control: Option<String>,
    /// Most paths kept in the open-file cache (each found file holds a descriptor while
    /// it is kept); 0 turns the cache off.
    pub cache_entries: usize,
    /// How long a cached lookup is trusted before the path is opened again.
    pub cache_valid: Duration,
}

impl Default for FilesOptions {
    fn default() -> FilesOptions {
        FilesOptions {
            index: Some("index.html".into()),
            precompressed: true,
            cache_control: None,
            cache_entries: 1024,
            cache_valid: Duration::from_secs(1),
        }
    }
}

/// Serves the files under one root directory. Lives on one loop's thread (its open-file
/// cache is not shared); make one per loop.
pub struct FileServer {
    root: File,
    opts: FilesOptions,
    cache: RefCell<Cache>,
    mode: Mode,
    /// For multipart boundaries.
    seq: Cell<u64>,
}

/// The header fields the handler reads.
const ASKED: [&str; 7] = [
    "accept-encoding",
    "if-match",
    "if-unmodified-since",
    "if-none-match",
    "if-modified-since",
    "range",
    "if-range",
];

/// What the handler reads of a request: the live [`Request`], or a copy ([`Ask`]).
trait Asked {
    fn method(&self) -> &str;
    fn path(&self) -> &str;
    fn query(&self) -> &str;
    /// One of [`ASKED`], by its lowercase name.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl Asked for Request {
    fn method(&self) -> &str {
        Request::method(self)
    }
    fn path(&self) -> &str {
        Request::path(self)
    }
    fn query(&self) -> &str {
        Request::query(self)
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        Request::header(self, name)
    }
}

/// A copy of what the handler reads of a request (see [`FileServer::serve_later`]).
struct Ask {
    method: String,
    path: String,
    query: String,
    headers: [Option<Vec<u8>>; 7],
}

impl Asked for Ask {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn query(&self) -> &str {
        &self.query
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        let i = ASKED.iter().position(|n| *n == name)?;
        self.headers[i].as_deref()
    }
}

/// The status and plain-text body of the handler's own answers.
fn error_body(status: u16) -> &'static [u8] {
    match status {
        400 => b"400 Bad Request\n",
        403 => b"403 Forbidden\n",
        404 => b"404 Not Found\n",
        405 => b"405 Method Not Allowed\n",
        412 => b"412 Precondition Failed\n",
        416 => b"416 Range Not Satisfiable\n",
        _ => b"500 Internal Server Error\n",
    }
}

fn errno_status(errno: i32) -> u16 {
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG => 404,
        // Not readable, or a symlink out of the root (EXDEV from openat2, ELOOP from the
        // walk and for a symlink loop).
        libc::EACCES | libc::EPERM | libc::EXDEV | libc::ELOOP => 403,
        _ => 500,
    }
}

fn decimal(n: u64) -> String {
    n.to_string()
}

impl FileServer {
    /// Serves the files under directory `root`. Fails if it cannot be opened or is not a
    /// directory.
    pub fn new(root: impl AsRef<Path>, opts: FilesOptions) -> io::Result<FileServer> {
        use std::os::unix::fs::OpenOptionsExt;
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)?;
        Ok(FileServer {
            root,
            cache: RefCell::new(Cache::new(opts.cache_entries, opts.cache_valid)),
            opts,
            mode: Mode::Auto,
            seq: Cell::new(0x6d79_7269_6164 ^ u64::from(std::process::id()) << 16),
        })
    }

    /// Resolves every path by the `O_NOFOLLOW` walk, as on a kernel without `openat2`
    /// (for tests of the fallback).
    #[doc(hidden)]
    pub fn force_walk(&mut self) {
        self.mode = Mode::Walk;
    }

    /// The open-file cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.cache.borrow().stats
    }

    /// Answers `req` with the file at `path` below the root: `path` is the request path
    /// below the mount point as sent (percent-encoded; a leading '/' is optional), e.g.
    /// "css/site.css" for `GET /static/css/site.css` mounted at "/static/". Finishes `res`
    /// whatever happens (see the module docs for every answer).
    pub fn serve(&self, req: &Request, res: Response, path: &[u8]) {
        self.serve_with(req, res, path);
    }

    /// [`FileServer::serve`] outside the handler's call (later on the loop), where the
    /// request is reached through its response: what the handler needs of it is copied
    /// first (the method, path, query and the seven header fields it reads).
    pub fn serve_later(&self, res: Response, path: &[u8]) {
        let ask = res.with_request(|req| Ask {
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query().to_string(),
            headers: ASKED.map(|n| req.header(n).map(<[u8]>::to_vec)),
        });
        match ask {
            Some(ask) => self.serve_with(&ask, res, path),
            // The exchange is over (the client left): nothing to answer.
            None => drop(res),
        }
    }

    fn serve_with(&self, req: &impl Asked, mut res: Response, path: &[u8]) {
        let head = match req.method() {
            "GET" => false,
            "HEAD" => true,
            _ => {
                let _ = res.header("Allow", b"GET, HEAD");
                return answer(res, 405);
            }
        };
        let clean = match resolve::normalize(path) {
            Ok(c) => c,
            Err(status) => return answer(res, status),
        };
        let now = Instant::now();
        let found = match self.lookup(&clean.path, now) {
            Ok(f) => f,
            Err(e) => return answer(res, errno_status(e)),
        };
        let (found, name) = match found.kind {
            Kind::File if clean.dir_form => return answer(res, 404),
            Kind::File => (found, clean.path),
            Kind::Other => return answer(res, 404),
            Kind::Dir if !clean.dir_form => return redirect(req, res),
            Kind::Dir => {
                let Some(index) = &self.opts.index else {
                    return answer(res, 403);
                };
                let mut p = clean.path;
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(index.as_bytes());
                match self.lookup(&p, now) {
                    Ok(f) if f.kind == Kind::File => (f, p),
                    Ok(_) => return answer(res, 403),
                    Err(e) if errno_status(e) == 404 => return answer(res, 403),
                    Err(e) => return answer(res, errno_status(e)),
                }
            }
        };
        let (file, coding) = self.variant(req, found, &name, now);
        self.respond(req, res, &file, &name, coding, head);
    }

    fn lookup(&self, path: &[u8], now: Instant) -> cache::Found {
        let (root, mode) = (self.root.as_raw_fd(), self.mode);
        self.cache.borrow_mut().get(path, now, || {
            Opened::new(resolve::open_beneath(root, path, mode)?)
        })
    }

    /// The precompressed sibling the client accepts, if any (brotli first).
    fn variant(
        &self,
        req: &impl Asked,
        file: Rc<Opened>,
        name: &[u8],
        now: Instant,
    ) -> (Rc<Opened>, Option<&'static str>) {
        if !self.opts.precompressed {
            return (file, None);
        }
        let Some(ae) = req.header("accept-encoding") else {
            return (file, None);
        };
        for (coding, ext) in [("br", &b".br"[..]), ("gzip", b".gz")] {
            if !cond::accepts(ae, coding) {
                continue;
            }
            let mut p = name.to_vec();
            p.extend_from_slice(ext);
            if let Ok(v) = self.lookup(&p, now) {
                if v.kind == Kind::File {
                    return (v, Some(coding));
                }
            }
        }
        (file, None)
    }

    fn respond(
        &self,
        req: &impl Asked,
        mut res: Response,
        f: &Opened,
        name: &[u8],
        coding: Option<&str>,
        head: bool,
    ) {
        let last_modified = crate::http::date::format_date(f.mtime);
        // The validators and caching headers go on the 304 too (RFC 9110 §15.4.5).
        let _ = res.header("ETag", f.etag.as_bytes());
        let _ = res.header("Last-Modified", &last_modified);
        if self.opts.precompressed {
            let _ = res.header("Vary", b"Accept-Encoding");
        }
        if let Some(cc) = &self.opts.cache_control {
            let _ = res.header("Cache-Control", cc.as_bytes());
        }
        let pre = Preconditions {
            if_match: req.header("if-match"),
            if_unmodified_since: req.header("if-unmodified-since"),
            if_none_match: req.header("if-none-match"),
            if_modified_since: req.header("if-modified-since"),
        };
        match cond::evaluate(&pre, &f.etag, f.mtime) {
            Cond::Proceed => {}
            Cond::NotModified => {
                let _ = res.status(304);
                let _ = res.finish();
                return;
            }
            Cond::Failed => return answer(res, 412),
        }
        let ctype = mime::content_type(name);
        if let Some(c) = coding {
            let _ = res.header("Content-Encoding", c.as_bytes());
        }
        let _ = res.header("Accept-Ranges", b"bytes");
        let ranges = match req.header("range") {
            // Range applies to GET only (RFC 9110 §14.2); If-Range may void it.
            Some(r) if !head => match req.header("if-range") {
                Some(ir) if !cond::if_range_holds(ir, &f.etag, f.mtime) => Ranges::Whole,
                _ => range::parse(r, f.size),
            },
            _ => Ranges::Whole,
        };
        match ranges {
            Ranges::Whole => {
                let _ = res.header("Content-Type", ctype.as_bytes());
                let _ = res.write_file(f.file.clone(), 0, f.size);
            }
            Ranges::Unsatisfiable => {
                let cr = format!("bytes */{}", f.size);
                let _ = res.header("Content-Range", cr.as_bytes());
                return answer(res, 416);
            }
            Ranges::Parts(parts) if parts.len() == 1 => {
                let (a, b) = parts[0];
                let _ = res.status(206);
                let _ = res.header("Content-Type", ctype.as_bytes());
                let cr = format!("bytes {a}-{b}/{}", f.size);
                let _ = res.header("Content-Range", cr.as_bytes());
                let _ = res.write_file(f.file.clone(), a, b - a + 1);
            }
            Ranges::Parts(parts) => {
                let n = self.seq.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
                self.seq.set(n);
                let boundary = format!("{n:016x}");
                let _ = res.status(206);
                let mt = format!("multipart/byteranges; boundary={boundary}");
                let _ = res.header("Content-Type", mt.as_bytes());
                for (a, b) in parts {
                    let part = format!(
                        "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                        decimal(f.size)
                    );
                    let _ = res.write(part.as_bytes());
                    let _ = res.write_file(f.file.clone(), a, b - a + 1);
                }
                let _ = res.write(format!("\r\n--{boundary}--\r\n").as_bytes());
            }
        }
        let _ = res.finish();
    }
}

/// The handler's own answer: `status` with a short text body (none for HEAD: the server
/// drops it).
fn answer(mut res: Response, status: u16) {
    let _ = res.status(status);
    let _ = res.header("Content-Type", b"text/plain");
    let _ = res.write_static(error_body(status));
    let _ = res.finish();
}

/// 301 to the directory form of the request's path (the query kept).
fn redirect(req: &impl Asked, mut res: Response) {
    let mut loc = String::with_capacity(req.path().len() + req.query().len() + 2);
    // One leading slash: "//host/dir" would be a redirect to another host.
    loc.push('/');
    loc.push_str(req.path().trim_start_matches('/'));
    loc.push('/');
    if !req.query().is_empty() {
        loc.push('?');
        loc.push_str(req.query());
    }
    let _ = res.status(301);
    let _ = res.header("Location", loc.as_bytes());
    let _ = res.header("Content-Type", b"text/plain");
    let _ = res.write_static(b"301 Moved Permanently\n");
    let _ = res.finish();
}
