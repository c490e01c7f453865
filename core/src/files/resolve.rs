//! Turning a request path into an open file under the root, safely.
//!
//! First [`normalize`]: percent-decode, refuse what must never reach the file system (NUL,
//! backslashes, encoded slashes, dot segments above the root), drop `.` and empty segments
//! and apply `..`. Then [`open_beneath`] opens the result relative to the root's directory
//! fd so that nothing resolves outside it, symlinks included: `openat2(2)` with
//! `RESOLVE_BENEATH` where the kernel has it (Linux 5.6), otherwise a walk that opens one
//! component at a time with `O_NOFOLLOW` and follows a symlink only by reading it and
//! walking its target from the directory it sits in, refusing any that climbs above the
//! root or is absolute. Symlinks that stay inside the root are served either way.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Why a path was refused before touching the file system: the status to answer.
pub(crate) type Status = u16;

/// A request path made safe: its segments, joined by '/', with no leading slash ("" is
/// the root itself), and whether it was asked for in the directory form (ending in '/').
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Clean {
    pub(crate) path: Vec<u8>,
    pub(crate) dir_form: bool,
}

/// Percent-decodes and normalises `raw` (the part of the request path below the mount
/// point, as sent). 400 for NUL, a backslash (sent or encoded), a bad escape or a `..`
/// that would leave the root; 404 for an encoded slash (`%2F`: no file is named that way).
pub(crate) fn normalize(raw: &[u8]) -> Result<Clean, Status> {
    if raw
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'f')
    {
        return Err(404);
    }
    let decoded = crate::percent::decode_strict(raw).map_err(|_| 400u16)?;
    if decoded.iter().any(|&c| c == 0 || c == b'\\') {
        return Err(400);
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut dir_form = false;
    for seg in decoded.split(|&c| c == b'/') {
        dir_form = matches!(seg, b"" | b"." | b"..");
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() {
                    return Err(400);
                }
            }
            s => segs.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len());
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(s);
    }
    Ok(Clean { path, dir_form })
}

/// Flags every file is opened with: read-only, close-on-exec, and non-blocking so that a
/// FIFO under the root cannot hang the loop (it is refused once `fstat` tells).
const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Most symlinks followed by the walk for one path (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// How [`open_beneath`] resolves paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `openat2` with `RESOLVE_BENEATH`, falling back to the walk where the kernel lacks it.
    Auto,
    /// Always the `O_NOFOLLOW` walk (tests of the fallback).
    Walk,
}

/// Opens `path` (a [`Clean`] path: "" is the root) under the directory `root`. A symlink
/// leaving the root is `PermissionDenied`-like: the error has `EXDEV` (`openat2`) or
/// `ELOOP` (the walk) as its OS code; both are answered 403 by the handler.
pub(crate) fn open_beneath(root: RawFd, path: &[u8], mode: Mode) -> io::Result<File> {
    let rel: &[u8] = if path.is_empty() { b"." } else { path };
    #[cfg(target_os = "linux")]
    if mode == Mode::Auto && openat2_works() {
        return openat2(root, rel);
    }
    let _ = mode;
    walk(root, rel)
}

#[cfg(target_os = "linux")]
fn openat2_works() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: unknown, 1: yes, 2: no (ENOSYS or blocked by a seccomp filter).
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = match openat2(libc::AT_FDCWD, b".") {
                Ok(_) => true,
                Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
            };
            STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

#[cfg(target_os = "linux")]
fn openat2(dir: RawFd, rel: &[u8]) -> io::Result<File> {
    let c = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; all-zero is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = OPEN_FLAGS as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: openat2(2) with a NUL-terminated path and a live open_how of its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: openat2 returned a new fd that nothing else owns.
            return Ok(unsafe { File::from_raw_fd(fd as RawFd) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a rename raced with RESOLVE_BENEATH's checks; try again.
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(e);
        }
    }
}

fn openat(dir: RawFd, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat(2) with a NUL-terminated name.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn readlinkat(dir: RawFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlinkat(2) writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn escapes() -> io::Error {
    io::Error::from_raw_os_error(libc::ELOOP)
}

/// The fallback: one component at a time from the root, each opened with `O_NOFOLLOW`
/// relative to the directory before it (kept open, so `..` goes back to it and never above
/// the root). A symlink is read and its target's components walked in its place.
fn walk(root: RawFd, rel: &[u8]) -> io::Result<File> {
    // Directories walked so far below the root (the root itself is not owned here).
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut todo: Vec<Vec<u8>> = rel
        .split(|&c| c == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut links = 0;
    let cur = |dirs: &Vec<OwnedFd>| dirs.last().map_or(root, AsRawFd::as_raw_fd);
    while let Some(name) = todo.pop() {
        match &name[..] {
            b"" | b"." if !todo.is_empty() => continue,
            b"" | b"." => return dup_file(cur(&dirs)),
            b".." => {
                if dirs.pop().is_none() {
                    return Err(escapes());
                }
                if todo.is_empty() {
                    return dup_file(cur(&dirs));
                }
                continue;
            }
            _ => {}
        }
        let last = todo.is_empty();
        let flags = if last {
            OPEN_FLAGS | libc::O_NOFOLLOW
        } else {
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_DIRECTORY | libc::O_NOFOLLOW
        };
        match openat(cur(&dirs), &name, flags) {
            Ok(fd) if last => return Ok(File::from(fd)),
            Ok(fd) => dirs.push(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                // ELOOP: the last component is a symlink; ENOTDIR: a middle one may be.
                let target = match readlinkat(cur(&dirs), &name) {
                    Ok(t) => t,
                    Err(_) => return Err(e),
                };
                links += 1;
                if links > MAX_LINKS || target.first() == Some(&b'/') || target.is_empty() {
                    return Err(escapes());
                }
                todo.extend(target.split(|&c| c == b'/').rev().map(<[u8]>::to_vec));
            }
            Err(e) => return Err(e),
        }
    }
    dup_file(cur(&dirs))
}

/// A directory reached by the walk, opened for reading (its fstat tells it is one).
fn dup_file(dir: RawFd) -> io::Result<File> {
    openat(dir, b".", OPEN_FLAGS).map(File::from)
}

#[cfg(test)]
mod tests {
    use super::{normalize, open_beneath, Clean, Mode};
    use std::os::fd::AsRawFd;

    fn ok(raw: &str) -> (String, bool) {
        let Clean { path, dir_form } = normalize(raw.as_bytes()).unwrap();
        (String::from_utf8(path).unwrap(), dir_form)
    }

    #[test]
    fn dot_segments_and_escapes_are_resolved_inside_the_root() {
        assert_eq!(ok("a/b.txt"), ("a/b.txt".into(), false));
        assert_eq!(ok("/a//./b/../c"), ("a/c".into(), false));
        assert_eq!(ok("a/"), ("a".into(), true));
        assert_eq!(ok("a/."), ("a".into(), true));
        assert_eq!(ok(""), ("".into(), true));
        assert_eq!(ok("a/b/.."), ("a".into(), true));
        assert_eq!(ok("caf%C3%A9%20x"), ("café x".into(), false));
        assert_eq!(ok("a/%2e%2e/..x"), ("..x".into(), false));
        assert_eq!(ok(".hidden"), (".hidden".into(), false));
    }

    #[test]
    fn every_traversal_form_is_refused() {
        for (raw, status) in [
            ("..", 400),
            ("../etc/passwd", 400),
            ("a/../../etc/passwd", 400),
            ("%2e%2e/etc/passwd", 400),
            ("%2E%2E%2Fetc%2Fpasswd", 404),
            ("..%2fetc", 404),
            ("a%2Fb", 404),
            ("..\\etc", 400),
            ("a%5c..%5cb", 400),
            ("a%00.txt", 400),
            ("a%zz", 400),
            ("a%2", 400),
            (".%2e/x", 400),
        ] {
            assert_eq!(normalize(raw.as_bytes()), Err(status), "{raw}");
        }
    }

    fn tree() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "myriad-resolve-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/sub")).unwrap();
        std::fs::write(d.join("root/sub/f.txt"), b"inside").unwrap();
        std::fs::write(d.join("secret"), b"outside").unwrap();
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, d.join(at)).unwrap();
        link("sub/f.txt", "root/in");
        link("../secret", "root/out");
        link("/etc/passwd", "root/abs");
        link("sub", "root/subdir");
        link("..", "root/sub/up");
        link("../..", "root/sub/upup");
        link("loop", "root/loop");
        d
    }

    #[test]
    fn symlinks_inside_the_root_are_followed_and_those_leaving_it_are_not() {
        let d = tree();
        let root = std::fs::File::open(d.join("root")).unwrap();
        for mode in [Mode::Auto, Mode::Walk] {
            let read = |p: &str| {
                open_beneath(root.as_raw_fd(), p.as_bytes(), mode)
                    .map(|f| std::io::read_to_string(f).unwrap_or_default())
            };
            assert_eq!(read("sub/f.txt").unwrap(), "inside", "{mode:?}");
            assert_eq!(read("in").unwrap(), "inside", "{mode:?}");
            assert_eq!(read("subdir/f.txt").unwrap(), "inside", "{mode:?}");
            assert_eq!(read("sub/up/in").unwrap(), "inside", "{mode:?}");
            for bad in ["out", "abs", "sub/upup/secret", "loop"] {
                let e = read(bad).unwrap_err();
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EXDEV | libc::ELOOP)),
                    "{mode:?} {bad}: {e}"
                );
            }
            assert_eq!(
                read("nope").unwrap_err().kind(),
                std::io::ErrorKind::NotFound
            );
            assert!(open_beneath(root.as_raw_fd(), b"", mode)
                .unwrap()
                .metadata()
                .unwrap()
                .is_dir());
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
