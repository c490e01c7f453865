//! The receiving side of a WebSocket connection, sans-IO: bytes from the client in, whole
//! messages and control frames out. It applies the rules that span frames (RFC 6455 5.4
//! fragmentation with control frames interleaved, one message at a time, continuation
//! only inside a message, UTF-8 across fragments, the maximum message size over all
//! fragments, permessage-deflate's RSV1 on a message's first frame only) on top of
//! [`super::frame`]'s single-frame rules.

use std::cell::RefCell;

use super::deflate::Inflater;
use super::frame::{
    self, apply_mask, parse_close, parse_head, Head, Refused, Utf8, CLOSE_PROTOCOL, CLOSE_TOO_BIG,
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
};

/// What the client sent, borrowed for the duration of the callback.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message (valid UTF-8).
    Text(&'a [u8]),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping (its payload, to be echoed in a pong).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A valid close frame: code (1005 when it had none) and reason. Nothing is read
    /// after it.
    Close(u16, &'a [u8]),
}

thread_local! {
    /// Where single-frame messages are unmasked and compressed ones inflated: one buffer
    /// per loop thread, so an idle connection holds no message buffer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer larger than this is not kept after use.
const SCRATCH_KEEP: usize = 256 * 1024;

/// The receiving state of one connection.
pub struct Reader {
    max: usize,
    /// permessage-deflate is in use.
    inflater: Option<Inflater>,
    /// The frame being read (its head consumed) and how much of its payload was read.
    cur: Option<(Head, u64)>,
    /// The message in progress: its opcode (0: none), whether it is compressed.
    msg_op: u8,
    compressed: bool,
    /// Its payload so far (unmasked; still compressed if `compressed`). Freed after each
    /// message.
    buf: Vec<u8>,
    utf8: Utf8,
    /// A close frame was read (or an error found): nothing more is read.
    done: bool,
}

impl Reader {
    /// A reader refusing messages over `max` bytes (after inflating), with
    /// permessage-deflate if `inflater` is given.
    pub fn new(max: usize, inflater: Option<Inflater>) -> Reader {
        Reader {
            max,
            inflater,
            cur: None,
            msg_op: 0,
            compressed: false,
            buf: Vec::new(),
            utf8: Utf8::default(),
            done: false,
        }
    }

    /// Whether reading is over (a close frame was read or the input refused).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads what it can of `input`, calling `f` for each event; `f` returns false to stop
    /// (the application paused reading, or the connection is closing). Returns the bytes
    /// consumed (the rest is to be offered again with more), or the close code to fail
    /// the connection with.
    pub fn feed(
        &mut self,
        input: &[u8],
        f: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<usize, Refused> {
        let r = self.feed_inner(input, f);
        if r.is_err() {
            self.done = true;
            self.buf = Vec::new();
        }
        r
    }

    fn feed_inner(
        &mut self,
        input: &[u8],
        f: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<usize, Refused> {
        let mut at = 0;
        while !self.done {
            let (head, got) = match self.cur {
                Some(c) => c,
                None => {
                    let Some((head, n)) =
                        parse_head(&input[at..], true, self.inflater.is_some(), self.max as u64)?
                    else {
                        return Ok(at);
                    };
                    if head.is_control() {
                        // Control payloads are small (<= 125): wait for all of it.
                        let end = at + n + head.len as usize;
                        if input.len() < end {
                            return Ok(at);
                        }
                        let mut p = [0u8; 125];
                        let p = &mut p[..head.len as usize];
                        p.copy_from_slice(&input[at + n..end]);
                        apply_mask(p, head.mask.unwrap_or_default(), 0);
                        at = end;
                        if !self.control(&head, p, f)? {
                            return Ok(at);
                        }
                        continue;
                    }
                    self.start_frame(&head)?;
                    at += n;
                    // The fast path: a whole unfragmented, uncompressed message in the input
                    // is unmasked into the loop's scratch buffer and delivered from there.
                    if head.fin
                        && head.opcode != OP_CONT
                        && !head.rsv1
                        && input.len() - at >= head.len as usize
                    {
                        let end = at + head.len as usize;
                        let go = with_scratch(|s| {
                            s.extend_from_slice(&input[at..end]);
                            apply_mask(s, head.mask.unwrap_or_default(), 0);
                            deliver(head.opcode, s, f)
                        })?;
                        at = end;
                        self.msg_op = 0;
                        self.utf8 = Utf8::default();
                        if !go {
                            return Ok(at);
                        }
                        continue;
                    }
                    self.cur = Some((head, 0));
                    (head, 0)
                }
            };
            // Part of a data frame: append what is here to the message.
            let want = (head.len - got) as usize;
            let n = want.min(input.len() - at);
            if n == 0 && want > 0 {
                return Ok(at);
            }
            if self.buf.len() + n > self.max {
                return Err(Refused(CLOSE_TOO_BIG));
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(&input[at..at + n]);
            apply_mask(&mut self.buf[start..], head.mask.unwrap_or_default(), got);
            at += n;
            if self.msg_op == OP_TEXT && !self.compressed {
                self.utf8.feed(&self.buf)?;
            }
            if n < want {
                self.cur = Some((head, got + n as u64));
                return Ok(at);
            }
            self.cur = None;
            if head.fin && !self.finish_message(f)? {
                return Ok(at);
            }
        }
        Ok(input.len())
    }

    /// Checks a data frame's place in the message sequence and starts a message.
    fn start_frame(&mut self, head: &Head) -> Result<(), Refused> {
        match (head.opcode, self.msg_op) {
            (OP_CONT, 0) => Err(Refused(CLOSE_PROTOCOL)),
            (OP_CONT, _) if head.rsv1 => Err(Refused(CLOSE_PROTOCOL)),
            (OP_CONT, _) => Ok(()),
            (_, 0) => {
                self.msg_op = head.opcode;
                self.compressed = head.rsv1;
                self.utf8 = Utf8::default();
                Ok(())
            }
            _ => Err(Refused(CLOSE_PROTOCOL)),
        }
    }

    /// The last frame of a message is in: inflate, check and deliver it.
    fn finish_message(&mut self, f: &mut dyn FnMut(Event<'_>) -> bool) -> Result<bool, Refused> {
        let op = std::mem::replace(&mut self.msg_op, 0);
        let buf = std::mem::take(&mut self.buf);
        let go = if self.compressed {
            let inf = self
                .inflater
                .as_mut()
                .expect("RSV1 is refused without deflate");
            with_scratch(|s| {
                inf.inflate(&buf, self.max, s)?;
                deliver(op, s, f)
            })?
        } else {
            if op == OP_TEXT {
                self.utf8.finish(&buf)?;
            }
            let kind = if op == OP_TEXT {
                Event::Text(&buf)
            } else {
                Event::Binary(&buf)
            };
            f(kind)
        };
        self.compressed = false;
        Ok(go)
    }

    fn control(
        &mut self,
        head: &Head,
        p: &[u8],
        f: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<bool, Refused> {
        Ok(match head.opcode {
            OP_PING => f(Event::Ping(p)),
            OP_PONG => f(Event::Pong(p)),
            OP_CLOSE => {
                let (code, reason) = parse_close(p)?;
                self.done = true;
                self.buf = Vec::new();
                f(Event::Close(code, reason));
                false
            }
            _ => unreachable!("parse_head refuses other opcodes"),
        })
    }
}

/// Checks (text) and delivers a whole message held in `s`.
fn deliver(op: u8, s: &[u8], f: &mut dyn FnMut(Event<'_>) -> bool) -> Result<bool, Refused> {
    if op == OP_TEXT {
        if std::str::from_utf8(s).is_err() {
            return Err(Refused(frame::CLOSE_INVALID_DATA));
        }
        Ok(f(Event::Text(s)))
    } else {
        debug_assert_eq!(op, OP_BINARY);
        Ok(f(Event::Binary(s)))
    }
}

/// Runs `g` with the loop's scratch buffer (empty), taken out of its cell for the call so
/// that a nested use (a handler feeding another connection) gets a fresh one.
fn with_scratch<R>(g: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut s = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    s.clear();
    let r = g(&mut s);
    if s.capacity() <= SCRATCH_KEEP {
        s.clear();
        SCRATCH.with(|c| *c.borrow_mut() = s);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::compress;
    use crate::ws::frame::{write_head, MAX_HEAD};

    fn frame(fin: bool, rsv1: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let key = [9, 8, 7, 6];
        let mut h = [0u8; MAX_HEAD];
        let n = write_head(&mut h, fin, rsv1, op, payload.len() as u64, Some(key));
        let mut v = h[..n].to_vec();
        let mut p = payload.to_vec();
        apply_mask(&mut p, key, 0);
        v.extend(p);
        v
    }

    #[derive(Debug, PartialEq)]
    enum Ev {
        Text(Vec<u8>),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(u16, Vec<u8>),
    }

    /// Feeds `input` in pieces of `step` bytes (keeping what was not consumed, as the
    /// connection does); returns the events and the error, if any.
    fn run(r: &mut Reader, input: &[u8], step: usize) -> (Vec<Ev>, Option<u16>) {
        let mut evs = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        for piece in input.chunks(step.max(1)) {
            held.extend_from_slice(piece);
            let res = r.feed(&held, &mut |e| {
                evs.push(match e {
                    Event::Text(p) => Ev::Text(p.to_vec()),
                    Event::Binary(p) => Ev::Binary(p.to_vec()),
                    Event::Ping(p) => Ev::Ping(p.to_vec()),
                    Event::Pong(p) => Ev::Pong(p.to_vec()),
                    Event::Close(c, p) => Ev::Close(c, p.to_vec()),
                });
                true
            });
            match res {
                Ok(n) => {
                    held.drain(..n);
                }
                Err(Refused(code)) => return (evs, Some(code)),
            }
        }
        (evs, None)
    }

    fn every_split(input: &[u8], max: usize, deflate: bool) -> (Vec<Ev>, Option<u16>) {
        let mk = || Reader::new(max, deflate.then(Inflater::default));
        let want = run(&mut mk(), input, input.len());
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(run(&mut mk(), input, step), want, "step {step}");
        }
        want
    }

    #[test]
    fn whole_and_fragmented_messages_with_control_frames_between() {
        let mut input = frame(true, false, OP_TEXT, b"hello");
        input.extend(frame(false, false, OP_BINARY, b"ab"));
        input.extend(frame(true, false, OP_PING, b"p"));
        input.extend(frame(false, false, OP_CONT, b"cd"));
        input.extend(frame(true, false, OP_PONG, b""));
        input.extend(frame(true, false, OP_CONT, b"ef"));
        input.extend(frame(true, false, OP_BINARY, &vec![5u8; 70000]));
        input.extend(frame(true, false, OP_CLOSE, &[0x03, 0xE8, b'o', b'k']));
        input.extend(frame(true, false, OP_TEXT, b"after close: ignored"));
        let (evs, err) = every_split(&input, 1 << 20, false);
        assert_eq!(err, None);
        assert_eq!(
            evs,
            [
                Ev::Text(b"hello".to_vec()),
                Ev::Ping(b"p".to_vec()),
                Ev::Pong(vec![]),
                Ev::Binary(b"abcdef".to_vec()),
                Ev::Binary(vec![5u8; 70000]),
                Ev::Close(1000, b"ok".to_vec()),
            ]
        );
    }

    #[test]
    fn sequence_errors_are_1002() {
        for input in [
            // A continuation with no message.
            frame(true, false, OP_CONT, b"x"),
            // A new message inside a fragmented one.
            [
                frame(false, false, OP_TEXT, b"a"),
                frame(true, false, OP_TEXT, b"b"),
            ]
            .concat(),
            // RSV1 without deflate.
            frame(true, true, OP_TEXT, b"a"),
            // A bad close code.
            frame(true, false, OP_CLOSE, &1004u16.to_be_bytes()),
            frame(true, false, OP_CLOSE, &[3]),
        ] {
            assert_eq!(
                every_split(&input, 1 << 20, false).1,
                Some(1002),
                "{input:x?}"
            );
        }
        // RSV1 on a continuation, with deflate.
        let input = [
            frame(false, true, OP_TEXT, b"a"),
            frame(true, true, OP_CONT, b"b"),
        ]
        .concat();
        assert_eq!(every_split(&input, 1 << 20, true).1, Some(1002));
    }

    #[test]
    fn utf8_is_checked_across_fragments_and_fails_fast() {
        let s = "κόσμε".as_bytes();
        let input = [
            frame(false, false, OP_TEXT, &s[..1]),
            frame(false, false, OP_CONT, &s[1..4]),
            frame(true, false, OP_CONT, &s[4..]),
        ]
        .concat();
        assert_eq!(
            every_split(&input, 100, false),
            (vec![Ev::Text(s.to_vec())], None)
        );
        // Invalid in the first fragment: found before the message ends.
        let bad = [
            frame(false, false, OP_TEXT, &[0xCE, 0xBA, 0xFF]),
            frame(false, false, OP_CONT, b"x"),
        ]
        .concat();
        assert_eq!(every_split(&bad, 100, false).1, Some(1007));
        // A message ending inside a character, and invalid single frames and reasons.
        assert_eq!(
            every_split(&frame(true, false, OP_TEXT, &s[..3]), 100, false).1,
            Some(1007)
        );
        let cut = [
            frame(false, false, OP_TEXT, &s[..3]),
            frame(true, false, OP_CONT, b""),
        ]
        .concat();
        assert_eq!(every_split(&cut, 100, false).1, Some(1007));
        assert_eq!(
            every_split(&frame(true, false, OP_CLOSE, &[3, 0xE8, 0xFF]), 100, false).1,
            Some(1007)
        );
        // Binary is not checked.
        assert_eq!(
            every_split(&frame(true, false, OP_BINARY, &[0xFF]), 100, false).0,
            [Ev::Binary(vec![0xFF])]
        );
    }

    #[test]
    fn the_maximum_message_size_covers_all_fragments() {
        assert_eq!(
            every_split(&frame(true, false, OP_BINARY, &[0; 101]), 100, false).1,
            Some(1009)
        );
        assert!(
            every_split(&frame(true, false, OP_BINARY, &[0; 100]), 100, false)
                .1
                .is_none()
        );
        let two = [
            frame(false, false, OP_BINARY, &[0; 60]),
            frame(true, false, OP_CONT, &[0; 60]),
        ]
        .concat();
        assert_eq!(every_split(&two, 100, false).1, Some(1009));
    }

    #[test]
    fn compressed_messages_and_bombs() {
        let msg = "compress me ".repeat(100);
        let c = compress(msg.as_bytes());
        // Whole, and split into two frames (RSV1 on the first only).
        let mut input = frame(true, true, OP_TEXT, &c);
        input.extend(frame(false, true, OP_BINARY, &c[..5]));
        input.extend(frame(true, false, OP_CONT, &c[5..]));
        let (evs, err) = every_split(&input, 1 << 20, true);
        assert_eq!(err, None);
        assert_eq!(
            evs,
            [
                Ev::Text(msg.as_bytes().to_vec()),
                Ev::Binary(msg.as_bytes().to_vec())
            ]
        );
        // A small frame inflating past the limit: 1009.
        let bomb = compress(&vec![b'a'; 1 << 20]);
        assert!(bomb.len() < 5000);
        assert_eq!(
            every_split(&frame(true, true, OP_BINARY, &bomb), 65536, true).1,
            Some(1009)
        );
        // Invalid UTF-8 inside a compressed text message: 1007.
        let bad = compress(&[0xFF, 0xFE]);
        assert_eq!(
            every_split(&frame(true, true, OP_TEXT, &bad), 100, true).1,
            Some(1007)
        );
    }

    #[test]
    fn stopping_leaves_the_rest_unconsumed() {
        let a = frame(true, false, OP_TEXT, b"a");
        let input = [a.clone(), frame(true, false, OP_TEXT, b"b")].concat();
        let mut r = Reader::new(100, None);
        let mut n = 0;
        let used = r
            .feed(&input, &mut |_| {
                n += 1;
                false
            })
            .unwrap();
        assert_eq!((n, used), (1, a.len()));
    }
}
