//! The crate-private codecs behind a small public surface, for the fuzz targets in `fuzz/`
//! and the differential test. Compiled only with the `fuzzing` feature; not a stable API.
//!
//! Each entry point also checks the invariants that need the private state (a parsed
//! request's spans lie inside its storage and are UTF-8 where the request reads them
//! unchecked) and panics when one is broken, so that a fuzzer reports it.

use crate::app::Request;
use crate::fcgi::record;
use crate::http::{chunked, parse};

/// How a parsed head frames its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
}

/// A request head the parser accepted, copied out of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of input the head took.
    pub consumed: usize,
    /// The method.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The path of the target.
    pub path: String,
    /// The query of the target (without '?').
    pub query: String,
    /// The minor version (HTTP/1.x).
    pub minor: u8,
    /// The header fields in order, names and values as the request reports them.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body framing.
    pub body: BodyFraming,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    /// Whether the method is HEAD.
    pub is_head: bool,
    /// Whether a 100 Continue is owed.
    pub expect_continue: bool,
    /// The Content-Length the request reports.
    pub content_length: Option<u64>,
}

/// What the head parser made of some bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadOutcome {
    /// Incomplete: more bytes are needed.
    Partial,
    /// Rejected with this status (the connection answers it and closes).
    Reject(u16),
    /// A complete head.
    Complete(Head),
}

/// Parses the request head at the start of `buf` with these limits, checking the parsed
/// request's spans (panics if one is out of its storage or not UTF-8 where it must be).
pub fn parse_head(buf: &[u8], max_head: usize, max_line: usize) -> HeadOutcome {
    let limits = parse::Limits { max_head, max_line };
    let mut req = Request::new();
    match parse::parse_head(buf, &limits, &mut req) {
        Ok(None) => HeadOutcome::Partial,
        Err(s) => HeadOutcome::Reject(s),
        Ok(Some((n, f))) => {
            assert!(n <= buf.len(), "consumed {n} of {} bytes", buf.len());
            assert!(
                req.buf.starts_with(&buf[..n]),
                "the request stores its head"
            );
            let len = req.buf.len() as u32;
            let inside = |s: crate::app::Span| s.0 <= s.1 && s.1 <= len;
            for (what, s) in [
                ("method", req.method),
                ("target", req.target),
                ("path", req.path),
                ("query", req.query),
            ] {
                assert!(inside(s), "{what} span {s:?} outside {len} bytes");
                if req.str_spans {
                    assert!(
                        std::str::from_utf8(req.span(s)).is_ok(),
                        "{what} read unchecked but not UTF-8"
                    );
                }
            }
            for &(name, value) in &req.headers {
                assert!(inside(name) && inside(value), "header span outside");
                // Header spans are views of the head itself.
                assert!(name.1 as usize <= n && value.1 as usize <= n);
            }
            let body = match f.body {
                parse::BodyKind::None => BodyFraming::None,
                parse::BodyKind::Length(v) => BodyFraming::Length(v),
                parse::BodyKind::Chunked => BodyFraming::Chunked,
            };
            HeadOutcome::Complete(Head {
                consumed: n,
                method: req.method().to_owned(),
                target: req.target().to_owned(),
                path: req.path().to_owned(),
                query: req.query().to_owned(),
                minor: req.minor,
                headers: req
                    .headers()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect(),
                body,
                keep_alive: f.keep_alive,
                is_head: f.is_head,
                expect_continue: req.expect_continue,
                content_length: req.content_length(),
            })
        }
    }
}

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Malformed size, extension, CRLF or trailer.
    Syntax,
    /// A size or metadata over the limits.
    TooLarge,
}

/// The streaming chunked decoder.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder(chunked::Decoder);

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder(chunked::Decoder::new())
    }
}

impl ChunkedDecoder {
    /// Decodes from `input`, passing data to `data`; returns the bytes consumed (it stops
    /// at the end of the body).
    pub fn decode(&mut self, input: &[u8], data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        self.0.decode(input, data).map_err(|e| match e {
            chunked::ChunkError::Syntax => ChunkError::Syntax,
            chunked::ChunkError::TooLarge => ChunkError::TooLarge,
        })
    }

    /// Whether the whole body (last chunk and trailers) was read.
    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// Appends the size line of an `n`-byte chunk, as the server writes it.
pub fn chunk_size_line(n: usize, out: &mut Vec<u8>) {
    chunked::size_line(n, out)
}

/// A FastCGI input event, copied out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordEvent {
    /// BEGIN_REQUEST.
    Begin {
        /// Request id.
        id: u16,
        /// Role.
        role: u16,
        /// Flags.
        flags: u8,
    },
    /// ABORT_REQUEST.
    Abort {
        /// Request id.
        id: u16,
    },
    /// A piece of a stream (PARAMS, STDIN, DATA); `end` for the empty record ending it.
    Stream {
        /// Request id.
        id: u16,
        /// Record type.
        kind: u8,
        /// The piece.
        data: Vec<u8>,
        /// Whether this is the stream's end.
        end: bool,
    },
    /// A whole management or unknown record.
    Other {
        /// Request id (0 for management records).
        id: u16,
        /// Record type.
        kind: u8,
        /// Content.
        content: Vec<u8>,
    },
}

/// Why input is not FastCGI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// A version other than 1.
    Version,
    /// A BEGIN_REQUEST whose content is not 8 bytes.
    BadBegin,
}

/// The incremental FastCGI record decoder.
#[derive(Debug)]
pub struct RecordDecoder(record::Decoder);

impl Default for RecordDecoder {
    fn default() -> Self {
        RecordDecoder(record::Decoder::new())
    }
}

impl RecordDecoder {
    /// The next event from `input`: bytes consumed and the event; `(0, None)` when more
    /// input is needed.
    pub fn next(&mut self, input: &[u8]) -> Result<(usize, Option<RecordEvent>), RecordError> {
        let (n, ev) = self.0.next(input).map_err(|e| match e {
            record::RecordError::Version => RecordError::Version,
            record::RecordError::BadBegin => RecordError::BadBegin,
        })?;
        assert!(n <= input.len(), "consumed {n} of {}", input.len());
        let ev = ev.map(|e| match e {
            record::Event::Begin { id, role, flags } => RecordEvent::Begin { id, role, flags },
            record::Event::Abort { id } => RecordEvent::Abort { id },
            record::Event::Stream {
                id,
                kind,
                data,
                end,
            } => RecordEvent::Stream {
                id,
                kind,
                data: data.to_vec(),
                end,
            },
            record::Event::Other { id, kind, content } => RecordEvent::Other {
                id,
                kind,
                content: content.to_vec(),
            },
        });
        Ok((n, ev))
    }
}

/// Parses every name-value pair of a complete params stream; `None` if malformed.
pub fn nv_pairs(input: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    record::nv_pairs(input).map(|v| {
        v.into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    })
}

/// Appends a name-value pair as the encoder writes it.
pub fn put_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    record::put_pair(out, name, value)
}

/// Appends a whole record (split at 65535 bytes, padded to 8).
pub fn put_record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    record::put_record(out, kind, id, content)
}
