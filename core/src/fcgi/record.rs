//! The FastCGI 1.0 record layer, sans-IO. Record headers are parsed with nom's streaming
//! combinators (a record may be split across reads at any byte); stream contents (PARAMS,
//! STDIN, DATA) are passed on as they arrive, without waiting for whole records; input
//! padding is skipped. Name-value pairs use checked lengths (fcgi2's CVE-2025-23016 was an
//! overflow there).

use nom::number::streaming::{be_u16, be_u8};
use nom::IResult;

/// Record types (FastCGI 1.0 §8).
pub(crate) mod kind {
    pub const BEGIN_REQUEST: u8 = 1;
    pub const ABORT_REQUEST: u8 = 2;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const DATA: u8 = 8;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;
}

/// Roles.
pub(crate) const RESPONDER: u16 = 1;
pub(crate) const AUTHORIZER: u16 = 2;
/// protocolStatus values of END_REQUEST.
pub(crate) const REQUEST_COMPLETE: u8 = 0;
/// Refusing a second request on a connection (an application serving one at a time).
pub(crate) const CANT_MPX_CONN: u8 = 1;
/// Refusing a new request for want of resources (here: the connection's request cap).
pub(crate) const OVERLOADED: u8 = 2;
pub(crate) const UNKNOWN_ROLE: u8 = 3;
/// BEGIN_REQUEST flag: keep the connection open after this request.
pub(crate) const KEEP_CONN: u8 = 1;

/// A record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u8,
    pub kind: u8,
    pub id: u16,
    pub len: u16,
    pub pad: u8,
}

/// Parses an 8-byte record header (streaming: `Incomplete` until 8 bytes are there).
pub(crate) fn header(i: &[u8]) -> IResult<&[u8], Header> {
    let (i, version) = be_u8(i)?;
    let (i, kind) = be_u8(i)?;
    let (i, id) = be_u16(i)?;
    let (i, len) = be_u16(i)?;
    let (i, pad) = be_u8(i)?;
    let (i, _reserved) = be_u8(i)?;
    Ok((
        i,
        Header {
            version,
            kind,
            id,
            len,
            pad,
        },
    ))
}

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// BEGIN_REQUEST: role and flags.
    Begin { id: u16, role: u16, flags: u8 },
    /// ABORT_REQUEST.
    Abort { id: u16 },
    /// Part of a stream record's content (PARAMS, STDIN, DATA); `data` may be empty only
    /// for the record that ends the stream.
    Stream {
        id: u16,
        kind: u8,
        data: &'a [u8],
        end: bool,
    },
    /// A whole management or unknown record (content included).
    Other {
        id: u16,
        kind: u8,
        content: &'a [u8],
    },
}

/// Why the input is not FastCGI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Version other than 1.
    Version,
    /// A BEGIN_REQUEST whose content is not 8 bytes.
    BadBegin,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header,
    /// Inside a stream record's content.
    Content {
        id: u16,
        kind: u8,
        left: u16,
        pad: u8,
    },
    /// Skipping padding.
    Padding(u8),
}

/// An incremental record decoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder {
            state: State::Header,
        }
    }

    /// Decodes the next event from `input`. Returns bytes consumed and the event, if any;
    /// `(0, None)` means more input is needed.
    pub(crate) fn next<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), RecordError> {
        match self.state {
            State::Padding(left) => {
                let n = (left as usize).min(input.len());
                let left = left - n as u8;
                self.state = if left == 0 {
                    State::Header
                } else {
                    State::Padding(left)
                };
                Ok((n, None))
            }
            State::Content {
                id,
                kind,
                left,
                pad,
            } => {
                let n = (left as usize).min(input.len());
                if n == 0 {
                    return Ok((0, None));
                }
                let left = left - n as u16;
                self.state = if left > 0 {
                    State::Content {
                        id,
                        kind,
                        left,
                        pad,
                    }
                } else if pad > 0 {
                    State::Padding(pad)
                } else {
                    State::Header
                };
                Ok((
                    n,
                    Some(Event::Stream {
                        id,
                        kind,
                        data: &input[..n],
                        end: false,
                    }),
                ))
            }
            State::Header => {
                let h = match header(input) {
                    Ok((_, h)) => h,
                    Err(nom::Err::Incomplete(_)) => return Ok((0, None)),
                    Err(_) => unreachable!("header parsing cannot fail otherwise"),
                };
                if h.version != 1 {
                    return Err(RecordError::Version);
                }
                let stream = matches!(h.kind, kind::PARAMS | kind::STDIN | kind::DATA) && h.id != 0;
                if stream {
                    if h.len == 0 {
                        self.state = if h.pad > 0 {
                            State::Padding(h.pad)
                        } else {
                            State::Header
                        };
                        return Ok((
                            8,
                            Some(Event::Stream {
                                id: h.id,
                                kind: h.kind,
                                data: &[],
                                end: true,
                            }),
                        ));
                    }
                    self.state = State::Content {
                        id: h.id,
                        kind: h.kind,
                        left: h.len,
                        pad: h.pad,
                    };
                    return Ok((8, None));
                }
                // Whole records: wait for content (padding is skipped afterwards).
                let total = 8 + h.len as usize;
                if input.len() < total {
                    return Ok((0, None));
                }
                let content = &input[8..total];
                if h.pad > 0 {
                    self.state = State::Padding(h.pad);
                }
                let ev = match h.kind {
                    kind::BEGIN_REQUEST if h.id != 0 => {
                        if content.len() != 8 {
                            return Err(RecordError::BadBegin);
                        }
                        Event::Begin {
                            id: h.id,
                            role: u16::from_be_bytes([content[0], content[1]]),
                            flags: content[2],
                        }
                    }
                    kind::ABORT_REQUEST if h.id != 0 => Event::Abort { id: h.id },
                    k => Event::Other {
                        id: h.id,
                        kind: k,
                        content,
                    },
                };
                Ok((total, Some(ev)))
            }
        }
    }
}

/// One name-value length: 1 byte (< 128) or 4 bytes with the top bit set. The 4-byte
/// form is accepted for short lengths too.
fn nv_length(i: &[u8]) -> IResult<&[u8], u32> {
    let (i, b0) = nom::number::complete::be_u8(i)?;
    if b0 & 0x80 == 0 {
        return Ok((i, u32::from(b0)));
    }
    let (i, rest) = nom::bytes::complete::take(3usize)(i)?;
    Ok((
        i,
        (u32::from(b0 & 0x7f) << 24)
            | (u32::from(rest[0]) << 16)
            | (u32::from(rest[1]) << 8)
            | u32::from(rest[2]),
    ))
}

/// One name-value pair from a complete params stream.
pub(crate) fn nv_pair(i: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    let (i, nl) = nv_length(i)?;
    let (i, vl) = nv_length(i)?;
    // `take` checks the lengths against the input: no arithmetic can overflow here.
    let (i, name) = nom::bytes::complete::take(nl as usize)(i)?;
    let (i, value) = nom::bytes::complete::take(vl as usize)(i)?;
    Ok((i, (name, value)))
}

/// Parses every pair of a params stream; `None` if it is malformed.
pub(crate) fn nv_pairs(mut i: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut v = Vec::new();
    while !i.is_empty() {
        let (rest, p) = nv_pair(i).ok()?;
        v.push(p);
        i = rest;
    }
    Some(v)
}

/// Appends a name-value pair.
pub(crate) fn put_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Appends a record header for `len` content bytes, returning the padding to add after.
pub(crate) fn put_header(out: &mut Vec<u8>, kind: u8, id: u16, len: usize) -> usize {
    let (h, pad) = encode_header(kind, id, len);
    out.extend_from_slice(&h);
    pad
}

/// A record header for `len` content bytes, and the padding that follows the content.
fn encode_header(kind: u8, id: u16, len: usize) -> ([u8; 8], usize) {
    debug_assert!(len <= 65535);
    let pad = (8 - len % 8) % 8;
    let id = id.to_be_bytes();
    let l = (len as u16).to_be_bytes();
    ([1, kind, id[0], id[1], l[0], l[1], pad as u8, 0], pad)
}

/// Appends a whole record (content split into records of at most 65535 bytes; an empty
/// `content` gives one empty record, which ends a stream).
pub(crate) fn put_record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    if content.is_empty() {
        put_header(out, kind, id, 0);
        return;
    }
    for piece in content.chunks(65535) {
        let pad = put_header(out, kind, id, piece.len());
        out.extend_from_slice(piece);
        out.extend_from_slice(&[0u8; 8][..pad]);
    }
}

/// Appends one record whose content `fill` appends to `out` (no staging copy); content
/// over 65535 bytes is split like [`put_record`]'s.
pub(crate) fn put_record_with(
    out: &mut Vec<u8>,
    kind: u8,
    id: u16,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    fill(out);
    let len = out.len() - start - 8;
    if len == 0 || len > 65535 {
        let content = out.split_off(start + 8);
        out.truncate(start);
        put_record(out, kind, id, &content);
        return;
    }
    let (h, pad) = encode_header(kind, id, len);
    out[start..start + 8].copy_from_slice(&h);
    out.extend_from_slice(&[0u8; 8][..pad]);
}

/// Appends an END_REQUEST record.
pub(crate) fn put_end(out: &mut Vec<u8>, id: u16, app_status: u32, protocol_status: u8) {
    let a = app_status.to_be_bytes();
    put_record(
        out,
        kind::END_REQUEST,
        id,
        &[a[0], a[1], a[2], a[3], protocol_status, 0, 0, 0],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8]) -> Vec<String> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let (n, ev) = d.next(&input[i..]).unwrap();
            if let Some(ev) = ev {
                out.push(format!("{ev:?}"));
            } else if n == 0 {
                break;
            }
            i += n;
        }
        out
    }

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        put_record(
            &mut v,
            kind::BEGIN_REQUEST,
            1,
            &[0, 1, KEEP_CONN, 0, 0, 0, 0, 0],
        );
        let mut params = Vec::new();
        put_pair(&mut params, b"REQUEST_METHOD", b"GET");
        put_pair(&mut params, b"X", &[b'v'; 200]);
        // A pair straddling two PARAMS records.
        put_record(&mut v, kind::PARAMS, 1, &params[..7]);
        put_record(&mut v, kind::PARAMS, 1, &params[7..]);
        put_record(&mut v, kind::PARAMS, 1, b"");
        put_record(&mut v, kind::STDIN, 1, b"hello");
        put_record(&mut v, kind::STDIN, 1, b"");
        v
    }

    #[test]
    fn decodes_records_and_skips_padding() {
        let ev = events(&sample());
        assert_eq!(ev[0], "Begin { id: 1, role: 1, flags: 1 }");
        assert!(ev
            .iter()
            .any(|e| e.contains("data: [104, 101, 108, 108, 111]")));
        assert_eq!(ev.iter().filter(|e| e.contains("end: true")).count(), 2);
    }

    #[test]
    fn split_at_every_byte_gives_the_same_stream() {
        let all = sample();
        let whole = collect_streams(&[&all]);
        for cut in 0..all.len() {
            assert_eq!(
                collect_streams(&[&all[..cut], &all[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
    }

    /// Feeds pieces as a connection would (unconsumed bytes carried over); returns the
    /// concatenated stream bytes per kind and the non-stream events.
    fn collect_streams(pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>, Vec<String>) {
        let mut d = Decoder::new();
        let (mut params, mut stdin, mut other) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf: Vec<u8> = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            let mut i = 0;
            loop {
                let (n, ev) = d.next(&buf[i..]).unwrap();
                match ev {
                    Some(Event::Stream {
                        kind: kind::PARAMS,
                        data,
                        ..
                    }) => params.extend_from_slice(data),
                    Some(Event::Stream {
                        kind: kind::STDIN,
                        data,
                        end,
                        ..
                    }) => {
                        stdin.extend_from_slice(data);
                        if end {
                            other.push("stdin end".into());
                        }
                    }
                    Some(e) => other.push(format!("{e:?}")),
                    None if n == 0 => break,
                    None => {}
                }
                i += n;
            }
            buf.drain(..i);
        }
        (params, stdin, other)
    }

    #[test]
    fn name_value_sizes() {
        for size in [0usize, 127, 128, 1000, 33_554_431] {
            let value = vec![b'x'; size];
            let mut v = Vec::new();
            put_pair(&mut v, b"N", &value);
            let pairs = nv_pairs(&v).unwrap();
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].1.len(), size);
        }
        // The 4-byte form for a short length is accepted.
        let v = [0x80, 0, 0, 1, 0x80, 0, 0, 2, b'a', b'b', b'c'];
        assert_eq!(nv_pairs(&v).unwrap(), vec![(&b"a"[..], &b"bc"[..])]);
        // Lengths beyond the data (including 2^31-1) are rejected, never an overflow.
        assert!(nv_pairs(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(nv_pairs(&[5, 0, b'a']).is_none());
        assert!(nv_pairs(&[0x80, 0]).is_none());
    }

    #[test]
    fn management_and_errors() {
        let mut v = Vec::new();
        let mut q = Vec::new();
        put_pair(&mut q, b"FCGI_MPXS_CONNS", b"");
        put_record(&mut v, kind::GET_VALUES, 0, &q);
        put_record(&mut v, 42, 0, b"??");
        let ev = events(&v);
        assert!(ev[0].starts_with("Other { id: 0, kind: 9"));
        assert!(ev[1].starts_with("Other { id: 0, kind: 42"));
        let mut d = Decoder::new();
        assert_eq!(d.next(&[2, 1, 0, 1, 0, 0, 0, 0]), Err(RecordError::Version));
        let mut bad = Vec::new();
        put_record(&mut bad, kind::BEGIN_REQUEST, 1, &[0, 1, 0]);
        assert_eq!(Decoder::new().next(&bad), Err(RecordError::BadBegin));
    }

    #[test]
    fn output_records_are_padded_and_bounded() {
        let mut v = Vec::new();
        put_record(&mut v, kind::STDOUT, 3, &vec![b'z'; 70_000]);
        let (_, h1) = header(&v).unwrap();
        assert_eq!((h1.len, h1.pad), (65535, 1));
        let second = 8 + 65535 + 1;
        let (_, h2) = header(&v[second..]).unwrap();
        assert_eq!((h2.len, h2.pad), (4465, 7));
        assert_eq!(v.len() % 8, 0);
    }

    #[test]
    fn records_filled_in_place_match_staged_ones() {
        for content in [
            &b""[..],
            b"Status: 200 OK\r\n\r\n",
            &[b'q'; 65535],
            &[b'z'; 70_000],
        ] {
            let (mut staged, mut filled) = (vec![7u8], vec![7u8]);
            put_record(&mut staged, kind::STDOUT, 9, content);
            put_record_with(&mut filled, kind::STDOUT, 9, |o| {
                o.extend_from_slice(content)
            });
            assert_eq!(filled, staged, "{} bytes", content.len());
        }
    }
}
