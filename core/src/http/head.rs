//! Response heads. The status line and the Date header change at most once a second, so
//! each server keeps them formatted; a head is then three copies (that prefix, the user's
//! headers, the framing) into the connection's output.

use std::time::Instant;

use super::{date, decimal, reason};

/// "HTTP/1.x NNN Reason\r\nDate: <date>\r\n", formatted for one status and one second.
pub(crate) struct HeadCache {
    /// When the date in `line` goes stale.
    until: Option<Instant>,
    status: u16,
    minor: u8,
    /// The longest reason phrase (31 bytes) gives 83 bytes.
    line: Fixed<96>,
}

impl HeadCache {
    pub(crate) fn new() -> HeadCache {
        HeadCache {
            until: None,
            status: 0,
            minor: 0,
            line: Fixed::new(),
        }
    }

    /// The status line and Date header for a response sent at `now`.
    pub(crate) fn prefix(&mut self, now: Instant, minor: u8, status: u16) -> &[u8] {
        let stale = self.until.is_none_or(|u| now >= u);
        if stale || self.status != status || self.minor != minor {
            let (d, until) = date::http_date_until(now);
            let w = &mut self.line;
            *w = Fixed::new();
            w.put(if minor == 0 {
                b"HTTP/1.0 "
            } else {
                b"HTTP/1.1 "
            });
            w.put(decimal(u64::from(status), &mut [0; 20]));
            w.put(b" ");
            w.put(reason(status).as_bytes());
            w.put(b"\r\nDate: ");
            w.put(&d);
            w.put(b"\r\n");
            self.until = Some(until);
            self.status = status;
            self.minor = minor;
        }
        self.line.bytes()
    }
}

/// A fixed-size buffer for short, bounded pieces of a head.
pub(crate) struct Fixed<const N: usize> {
    buf: [u8; N],
    n: usize,
}

impl<const N: usize> Fixed<N> {
    pub(crate) fn new() -> Self {
        Fixed { buf: [0; N], n: 0 }
    }

    /// Appends `b`; the caller sizes `N` for the longest content (panics past it).
    pub(crate) fn put(&mut self, b: &[u8]) {
        self.buf[self.n..self.n + b.len()].copy_from_slice(b);
        self.n += b.len();
    }

    /// What was appended.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_follows_status_and_version() {
        let mut c = HeadCache::new();
        let now = Instant::now();
        let a = c.prefix(now, 1, 200).to_vec();
        assert!(a.starts_with(b"HTTP/1.1 200 OK\r\nDate: "), "{a:?}");
        assert!(a.ends_with(b" GMT\r\n"));
        let b = c.prefix(now, 0, 431).to_vec();
        assert!(b.starts_with(b"HTTP/1.0 431 Request Header Fields Too Large\r\nDate: "));
        assert_eq!(&a[a.len() - 31..], &b[b.len() - 31..], "same date");
        assert_eq!(c.prefix(now, 1, 200), &a[..]);
    }
}
