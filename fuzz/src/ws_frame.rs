//! The WebSocket receiving side (`myriad::ws::reader`, over `frame`'s head parser and
//! `deflate`'s inflater), for the `ws_frame` target and the replay test.
//!
//! Two kinds of input. Raw (`=` then bytes, the seeds): the stream is read whole and cut at
//! arbitrary points, with and without permessage-deflate: no panic, the same events and the
//! same verdict either way, every event within the limits (a message never over the
//! maximum size, text always UTF-8, control payloads at most 125 bytes). Structured: a list
//! of messages (text or binary, split into fragments, pings and pongs between the
//! fragments, some compressed), encoded as a client would, possibly corrupted at one byte:
//! uncorrupted, the reader delivers exactly those messages and control frames, in order.
use arbitrary::{Arbitrary, Unstructured};
use myriad::ws::deflate;
use myriad::ws::frame::{self, apply_mask, write_head, Refused, MAX_HEAD};
use myriad::ws::reader::{Event, Reader};

/// An event copied out of the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    /// A text message.
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame.
    Close(u16, Vec<u8>),
}

/// Reads `pieces` in order as the connection does (unconsumed bytes offered again with
/// the next piece); the events, then the refusal if any.
pub fn read(pieces: &[&[u8]], max: usize, deflate_on: bool) -> (Vec<Ev>, Option<u16>) {
    let mut r = Reader::new(max, deflate_on.then(|| deflate::Inflater::new(false)));
    let mut evs = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    for p in pieces {
        held.extend_from_slice(p);
        let res = r.feed(&held, &mut |e| {
            let ev = match e {
                Event::Text(p) => {
                    assert!(std::str::from_utf8(p).is_ok(), "text is UTF-8");
                    Ev::Text(p.to_vec())
                }
                Event::Binary(p) => Ev::Binary(p.to_vec()),
                Event::Ping(p) => Ev::Ping(p.to_vec()),
                Event::Pong(p) => Ev::Pong(p.to_vec()),
                Event::Close(c, p) => {
                    assert!(frame::valid_close_code(c) || c == frame::CLOSE_NO_STATUS);
                    Ev::Close(c, p.to_vec())
                }
            };
            match &ev {
                Ev::Text(p) | Ev::Binary(p) => assert!(p.len() <= max, "message over the maximum"),
                Ev::Ping(p) | Ev::Pong(p) | Ev::Close(_, p) => assert!(p.len() <= 125),
            }
            evs.push(ev);
            true
        });
        match res {
            Ok(n) => {
                assert!(n <= held.len());
                held.drain(..n);
            }
            Err(Refused(code)) => {
                assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
                return (evs, Some(code));
            }
        }
        if r.is_done() {
            break;
        }
    }
    (evs, None)
}

/// One message of a structured input.
#[derive(Arbitrary, Debug)]
pub struct Msg {
    /// Text (from a string) or binary.
    pub text: Option<String>,
    /// The binary payload.
    pub data: Vec<u8>,
    /// Fragment sizes (empty: one frame).
    pub frags: Vec<u8>,
    /// Control frames after each fragment: ping (true) or pong.
    pub ctl: Vec<(bool, Vec<u8>)>,
    /// Compress it (with deflate on).
    pub compress: bool,
    /// Its masking key.
    pub key: [u8; 4],
}

/// A structured input.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// The messages.
    pub msgs: Vec<Msg>,
    /// End with a close frame of this code.
    pub close: Option<u16>,
    /// permessage-deflate negotiated.
    pub deflate: bool,
    /// The maximum message size (plus 16).
    pub max: u16,
    /// One byte replaced: (position, value).
    pub corrupt: Option<(u16, u8)>,
    /// Where the stream is cut.
    pub cuts: Vec<u16>,
}

fn put(out: &mut Vec<u8>, fin: bool, rsv1: bool, op: u8, payload: &[u8], key: [u8; 4]) {
    let mut h = [0u8; MAX_HEAD];
    let n = write_head(&mut h, fin, rsv1, op, payload.len() as u64, Some(key));
    out.extend_from_slice(&h[..n]);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[at..], key, 0);
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    if let Some(raw) = data.strip_prefix(b"=") {
        for deflate_on in [false, true] {
            let whole = read(&[raw], 4096, deflate_on);
            for step in [1usize, 7, 100] {
                let pieces: Vec<&[u8]> = raw.chunks(step).collect();
                assert_eq!(
                    read(&pieces, 4096, deflate_on),
                    whole,
                    "cut every {step} bytes"
                );
            }
        }
        return;
    }
    let Ok(inp) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let max = inp.max as usize + 16;
    let mut stream = Vec::new();
    let mut want = Vec::new();
    let mut over = false;
    for m in &inp.msgs {
        let (op, body) = match &m.text {
            Some(t) => (frame::OP_TEXT, t.as_bytes().to_vec()),
            None => (frame::OP_BINARY, m.data.clone()),
        };
        over |= body.len() > max;
        let compress = inp.deflate && m.compress;
        let wire = if compress {
            deflate::compress(&body)
        } else {
            body.clone()
        };
        over |= wire.len() > max;
        // Split the wire payload into fragments.
        let mut parts = Vec::new();
        let mut rest = &wire[..];
        for &f in &m.frags {
            let n = (f as usize).min(rest.len());
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        parts.push(rest);
        let mut ctl = m.ctl.iter();
        for (i, p) in parts.iter().enumerate() {
            let first = i == 0;
            let fin = i + 1 == parts.len();
            put(
                &mut stream,
                fin,
                compress && first,
                if first { op } else { frame::OP_CONT },
                p,
                m.key,
            );
            if !fin {
                if let Some((ping, c)) = ctl.next() {
                    let c = &c[..c.len().min(125)];
                    put(
                        &mut stream,
                        true,
                        false,
                        if *ping {
                            frame::OP_PING
                        } else {
                            frame::OP_PONG
                        },
                        c,
                        m.key,
                    );
                    want.push(if *ping {
                        Ev::Ping(c.to_vec())
                    } else {
                        Ev::Pong(c.to_vec())
                    });
                }
            }
        }
        want.push(if op == frame::OP_TEXT {
            Ev::Text(body)
        } else {
            Ev::Binary(body)
        });
    }
    if let Some(code) = inp.close {
        let p = frame::close_payload(code, b"bye");
        put(&mut stream, true, false, frame::OP_CLOSE, &p, [1, 2, 3, 4]);
        if frame::valid_close_code(code) {
            want.push(Ev::Close(code, b"bye".to_vec()));
        }
    }
    let mut pristine = !over && inp.close.is_none_or(frame::valid_close_code);
    if let Some((at, b)) = inp.corrupt {
        if !stream.is_empty() {
            let at = at as usize % stream.len();
            pristine &= stream[at] == b;
            stream[at] = b;
        }
    }
    let whole = read(&[&stream], max, inp.deflate);
    if pristine {
        assert_eq!(whole, (want, None), "the messages as sent");
    }
    let cut = crate::pieces(&stream, &inp.cuts);
    assert_eq!(read(&cut, max, inp.deflate), whole, "the same cut as whole");
}
