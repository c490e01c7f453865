//! File output: a range of a file queued in a connection's output like any other piece,
//! sent from the page cache to the socket by `sendfile(2)` (no byte of it passes through
//! user space) on a plain socket, on both backends. Where bytes must pass through user
//! space (a transport layer that encrypts them, or FastCGI, whose STDOUT records frame
//! them), the range is read a pool block at a time, only once everything queued before it
//! has been written: one block per connection in memory, however large the file and
//! however slowly the peer reads.
//!
//! The file is shared (`Rc<File>`: the static handler's open-file cache keeps the same
//! descriptor for many responses); every read and send names its offset, so the file
//! position is never used. The descriptor is closed when its last holder lets go: the
//! response is written, or the connection is gone.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use crate::reactor::Stats;

/// Largest `sendfile` asked for at once (Linux sends at most 0x7ffff000 bytes a call; a
/// smaller ask lets other connections run between calls to a fast reader).
pub(crate) const MAX_SEND: u64 = 1 << 20;

/// Whether raw file ranges go by `sendfile(2)` (Linux); elsewhere they are read a block at
/// a time like FastCGI's.
pub(crate) const SENDFILE: bool = cfg!(target_os = "linux");

/// FastCGI's STDOUT record type (see `fcgi::record`).
const FCGI_STDOUT: u8 = 6;

/// A range of a file queued for output.
pub(crate) struct FileRange {
    pub(crate) file: Rc<File>,
    /// Where the next byte comes from.
    pub(crate) off: u64,
    /// Bytes of the range not yet sent (or read).
    pub(crate) left: u64,
    /// The FastCGI request id whose STDOUT records frame the bytes; 0: raw bytes.
    pub(crate) records: u16,
}

impl FileRange {
    /// Sends from the range to socket `sock` with one `sendfile`; returns the bytes sent.
    /// `WouldBlock` when the socket is full. A file that ended before the range did (it
    /// was truncated after its size was taken) is `UnexpectedEof`: the response it was
    /// promised to cannot be completed.
    pub(crate) fn send(&mut self, sock: RawFd, stats: &mut Stats) -> io::Result<usize> {
        let mut off = self.off as libc::off_t;
        let want = self.left.min(MAX_SEND) as usize;
        block_sigpipe(stats);
        stats.sendfile += 1;
        let n = match sendfile(sock, self.file.as_raw_fd(), &mut off, want) {
            Ok(n) => n,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EPIPE) {
                    take_sigpipe(stats);
                }
                return Err(e);
            }
        };
        if n == 0 {
            return Err(eof());
        }
        stats.file_sent += n as u64;
        self.off += n as u64;
        self.left -= n as u64;
        Ok(n)
    }

    /// Reads the next bytes of the range into `buf` (framed as one STDOUT record if
    /// `records` is set); returns `(bytes of buf filled, bytes of the range taken)`.
    pub(crate) fn fill(&mut self, buf: &mut [u8], stats: &mut Stats) -> io::Result<(usize, u64)> {
        let framed = self.records != 0;
        // A record's content is at most 65535 bytes and padded to a multiple of 8.
        let (head, room) = if framed {
            (8, buf.len().saturating_sub(15).min(65528) & !7)
        } else {
            (0, buf.len())
        };
        let mut want = self.left.min(room as u64) as usize;
        if framed && (want as u64) < self.left {
            // Not the last record: whole multiples of 8, no padding.
            want &= !7;
        }
        if want == 0 {
            return Ok((0, 0));
        }
        let mut got = 0;
        while got < want {
            let dst = &mut buf[head + got..head + want];
            stats.file_reads += 1;
            // SAFETY: pread(2) writes at most `dst.len()` bytes into the live slice `dst`.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    dst.as_mut_ptr().cast(),
                    dst.len(),
                    (self.off + got as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(eof());
            }
            got += n as usize;
        }
        stats.file_copied += got as u64;
        let mut pad = 0;
        if framed {
            pad = (8 - got % 8) % 8;
            let id = self.records.to_be_bytes();
            let len = (got as u16).to_be_bytes();
            buf[..8].copy_from_slice(&[1, FCGI_STDOUT, id[0], id[1], len[0], len[1], pad as u8, 0]);
            buf[8 + got..8 + got + pad].fill(0);
        }
        self.off += got as u64;
        self.left -= got as u64;
        Ok((head + got + pad, got as u64))
    }
}

thread_local! {
    /// Whether this thread blocks SIGPIPE (see [`block_sigpipe`]).
    static PIPE_BLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// sendfile(2) has no `MSG_NOSIGNAL`: a peer that closed raises SIGPIPE, whose default
/// action ends the process. Before this thread's first sendfile, SIGPIPE is blocked in
/// this thread (one `pthread_sigmask` per thread; the process's disposition is left as it
/// is, and children the library starts reset their mask); the EPIPE is the error, and the
/// signal left pending is taken by [`take_sigpipe`].
fn block_sigpipe(stats: &mut Stats) {
    if PIPE_BLOCKED.get() {
        return;
    }
    PIPE_BLOCKED.set(true);
    stats.other += 1;
    // SAFETY: a zeroed sigset is emptied, then holds SIGPIPE; pthread_sigmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Takes the SIGPIPE a failed sendfile left pending on this thread (none if SIGPIPE is
/// ignored), so that it is not delivered when the thread unblocks it.
fn take_sigpipe(stats: &mut Stats) {
    stats.other += 1;
    #[cfg(target_os = "linux")]
    // SAFETY: the set holds SIGPIPE; a zero timeout polls; the siginfo is not wanted.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
    }
}

#[cfg(target_os = "linux")]
fn sendfile(sock: RawFd, file: RawFd, off: &mut libc::off_t, want: usize) -> io::Result<usize> {
    // SAFETY: sendfile(2) reads from the file and writes to the socket, both fds live (the
    // caller holds them); `off` is a live off_t it updates.
    let n = unsafe { libc::sendfile(sock, file, off, want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// (Not used where [`SENDFILE`] is false: ranges are read a block at a time there.)
#[cfg(not(target_os = "linux"))]
fn sendfile(sock: RawFd, file: RawFd, off: &mut libc::off_t, want: usize) -> io::Result<usize> {
    let _ = (sock, file, off, want);
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended before its response did (truncated while being sent)",
    )
}

#[cfg(test)]
mod tests {
    use super::FileRange;
    use crate::reactor::Stats;
    use std::io::Write;
    use std::rc::Rc;

    fn temp(bytes: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "myriad-file-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn fill_frames_fastcgi_records_and_counts_the_copy() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut r = FileRange {
            file: Rc::new(temp(&data)),
            off: 10,
            left: 50,
            records: 0x0102,
        };
        let mut st = Stats::default();
        let mut buf = [0u8; 48];
        let (n, took) = r.fill(&mut buf, &mut st).unwrap();
        // 48 - 8 (header) - 7 (room for padding) = 33, down to a multiple of 8.
        assert_eq!((n, took), (40, 32));
        assert_eq!(&buf[..8], &[1, 6, 1, 2, 0, 32, 0, 0]);
        assert_eq!(&buf[8..40], &data[10..42]);
        let (n, took) = r.fill(&mut buf, &mut st).unwrap();
        // The last record: 18 bytes padded with 6.
        assert_eq!((n, took), (32, 18));
        assert_eq!(&buf[..8], &[1, 6, 1, 2, 0, 18, 6, 0]);
        assert_eq!(&buf[8..26], &data[42..60]);
        assert_eq!(r.left, 0);
        assert_eq!(r.fill(&mut buf, &mut st).unwrap(), (0, 0));
        assert_eq!(st.file_copied, 50);
    }

    #[test]
    fn a_file_shorter_than_its_range_is_an_error() {
        let mut r = FileRange {
            file: Rc::new(temp(b"abc")),
            off: 0,
            left: 10,
            records: 0,
        };
        let mut buf = [0u8; 16];
        let e = r.fill(&mut buf, &mut Stats::default()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
