//! The `Date` header value (IMF-fixdate), formatted at most once per second per thread.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

thread_local! {
    /// The formatted date and the instant until which it stays right.
    static CACHE: Cell<(Option<Instant>, [u8; 29])> = const { Cell::new((None, [0; 29])) };
}

/// The current time as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT"), cached per second.
pub fn http_date() -> [u8; 29] {
    http_date_until(Instant::now()).0
}

/// The date at `now` (the loop's cached time, for responses) and the instant it goes
/// stale: the wall clock is read and formatted once per second, not per response.
pub(crate) fn http_date_until(now: Instant) -> ([u8; 29], Instant) {
    CACHE.with(|c| {
        let (until, buf) = c.get();
        if let Some(u) = until.filter(|u| now < *u) {
            return (buf, u);
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let buf = format_date(wall.as_secs());
        // Valid until the wall clock's next second starts.
        let left = Duration::from_nanos(u64::from(1_000_000_000 - wall.subsec_nanos()));
        let u = Instant::now() + left;
        c.set((Some(u), buf));
        (buf, u)
    })
}

pub(crate) fn format_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86400;
    let rem = secs % 86400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let mut out = [0u8; 29];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    out[5..7].copy_from_slice(&two(d as u64));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(mo - 1) as usize]);
    out[11] = b' ';
    let y = y as u64;
    out[12..16].copy_from_slice(&[
        b'0' + (y / 1000 % 10) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(h));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(m));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(s));
    out[25..29].copy_from_slice(b" GMT");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(&format_date(784111777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_date(951782400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_date(1795392000), b"Mon, 23 Nov 2026 00:00:00 GMT");
    }
}
