//! permessage-deflate (RFC 7692) on flate2's pure-Rust miniz_oxide backend.
//!
//! The server always negotiates `server_no_context_takeover` (see
//! [`super::handshake::negotiate_deflate`]), so its compressor keeps nothing between
//! messages: one compressor per loop thread serves every connection (a miniz compressor is
//! a few hundred KiB: one per connection would cost that per idle socket), and a published
//! message is compressed once for all its subscribers. A client that keeps its context
//! (the default of browsers, `ws` and `websockets`) needs a decompressor of its own (about
//! 43 KiB, made on its first compressed message); one that negotiated
//! `client_no_context_takeover` uses the loop's shared one. Inflating stops at the maximum
//! message size: a small frame that inflates past it is refused with 1009 and never takes
//! more memory than the limit.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::{Refused, CLOSE_INVALID_DATA, CLOSE_TOO_BIG};

/// The empty stored block a sync flush ends with, which RFC 7692 7.2.1 strips from a
/// message and 7.2.2 appends again before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

thread_local! {
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static SHARED_INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one whole message (raw deflate, sync flush, tail stripped) with the loop's
/// compressor, which starts from nothing each time.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = c.get_or_insert_with(|| Compress::new(Compression::fast(), false));
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = c.total_in();
            c.compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate cannot fail on memory input");
            input = &input[(c.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.is_empty() {
            // An empty message compresses to one empty stored block's header byte.
            out.push(0x00);
        }
        out
    })
}

/// A connection's decompression side.
#[derive(Default)]
pub struct Inflater {
    /// Its own context (the client keeps its window between messages); `None` until the
    /// first compressed message, or always when the client resets its context.
    own: Option<Box<Decompress>>,
    /// The client resets its context after each message: the loop's shared one serves.
    pub(crate) no_context: bool,
}

impl Inflater {
    /// A decompressor for a client that keeps its context between messages
    /// (`no_context` false) or resets it after each (`client_no_context_takeover`).
    pub fn new(no_context: bool) -> Inflater {
        Inflater {
            own: None,
            no_context,
        }
    }

    /// Inflates one whole message (`data`: the frames' payloads joined) and appends the
    /// result to `out`, which may not grow past `max` bytes: 1009 if it would, 1007 for
    /// data that is not deflate.
    pub fn inflate(&mut self, data: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), Refused> {
        if self.no_context {
            SHARED_INFLATER.with(|s| {
                let mut s = s.borrow_mut();
                let d = s.get_or_insert_with(|| Decompress::new(false));
                d.reset(false);
                let r = run(d, data, max, out);
                d.reset(false);
                r
            })
        } else {
            let d = self
                .own
                .get_or_insert_with(|| Box::new(Decompress::new(false)));
            let r = run(d, data, max, out);
            if r.is_err() {
                // The context is undefined after an error; the connection closes anyway.
                self.own = None;
            }
            r
        }
    }
}

fn run(d: &mut Decompress, data: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), Refused> {
    let start = out.len();
    for mut input in [data, &TAIL[..]] {
        loop {
            if out.len() - start > max {
                return Err(Refused(CLOSE_TOO_BIG));
            }
            if out.capacity() == out.len() {
                // Grow in steps, never past the limit (plus one byte to see it passed).
                let room = (max + 1 - (out.len() - start)).min(out.capacity().max(4096));
                out.reserve_exact(room);
            }
            let before_in = d.total_in();
            let before_out = d.total_out();
            let st = d
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| Refused(CLOSE_INVALID_DATA))?;
            let took = (d.total_in() - before_in) as usize;
            input = &input[took..];
            let made = d.total_out() - before_out;
            if out.len() - start > max {
                return Err(Refused(CLOSE_TOO_BIG));
            }
            if st == Status::StreamEnd {
                // A final block (BFINAL) ends the message early: take no more.
                return Ok(());
            }
            if input.is_empty() && (out.len() < out.capacity() || made == 0) {
                break;
            }
            if took == 0 && made == 0 && out.len() < out.capacity() {
                return Err(Refused(CLOSE_INVALID_DATA));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_context() {
        let msg = b"Hello, hello, hello, hello WebSocket world! ".repeat(50);
        let c = compress(&msg);
        assert!(c.len() < msg.len() / 5, "{} of {}", c.len(), msg.len());
        assert!(!c.ends_with(&TAIL));
        for no_context in [false, true] {
            let mut inf = Inflater::new(no_context);
            for _ in 0..3 {
                let mut out = Vec::new();
                inf.inflate(&c, 1 << 20, &mut out).unwrap();
                assert_eq!(out, msg);
            }
        }
        let mut out = Vec::new();
        Inflater::default()
            .inflate(&compress(b""), 10, &mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn the_rfc_7692_example() {
        // 7.2.3.1: "Hello" compressed; 7.2.3.2: the same again with context takeover.
        let mut inf = Inflater::default();
        let mut out = Vec::new();
        inf.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out)
            .unwrap();
        assert_eq!(out, b"Hello");
        out.clear();
        inf.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100, &mut out)
            .unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 16 MiB of zeros compress to a few KiB; inflating is refused at 64 KiB, and the
        // buffer never grew much past the limit.
        let zeros = vec![0u8; 16 << 20];
        let c = compress(&zeros);
        assert!(c.len() < 100_000, "{}", c.len());
        let mut out = Vec::new();
        assert_eq!(
            Inflater::default().inflate(&c, 65536, &mut out),
            Err(Refused(1009))
        );
        assert!(out.capacity() <= 2 * 65536 + 4096, "{}", out.capacity());
        // Garbage is 1007.
        let mut out = Vec::new();
        assert_eq!(
            Inflater::default().inflate(&[0xff, 0xff, 0xff, 0xff], 1000, &mut out),
            Err(Refused(1007))
        );
    }
}
