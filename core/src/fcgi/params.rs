//! A request's PARAMS stream turned into the request model: the parameters as spans into
//! the request's buffer, `HTTP_*` names turned back into header names, and the few
//! parameters the model is built from.

use super::record;
use crate::app::{Request, Span};

fn span_in(base: &[u8], part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// The parameters the request model is built from.
#[derive(Clone, Copy)]
pub(crate) enum Known {
    Method,
    Uri,
    DocumentUri,
    ScriptName,
    Query,
    Protocol,
    ContentLength,
    RemoteAddr,
    RemotePort,
    ServerAddr,
    ServerPort,
}

pub(crate) const KNOWN: [(&[u8], Known); 11] = [
    (b"REQUEST_METHOD", Known::Method),
    (b"REQUEST_URI", Known::Uri),
    (b"DOCUMENT_URI", Known::DocumentUri),
    (b"SCRIPT_NAME", Known::ScriptName),
    (b"QUERY_STRING", Known::Query),
    (b"SERVER_PROTOCOL", Known::Protocol),
    (b"CONTENT_LENGTH", Known::ContentLength),
    (b"REMOTE_ADDR", Known::RemoteAddr),
    (b"REMOTE_PORT", Known::RemotePort),
    (b"SERVER_ADDR", Known::ServerAddr),
    (b"SERVER_PORT", Known::ServerPort),
];

/// One pass over the params stream in `req.buf`: fills `req.params` (spans into the
/// buffer) and `req.headers` (HTTP_* names turned back into lower-case header names,
/// stored after the params; CONTENT_TYPE and CONTENT_LENGTH when not empty), and returns
/// the last value of each [`Known`] parameter. `None`: the stream is malformed.
pub(crate) fn index_params(req: &mut Request) -> Option<[Option<Span>; KNOWN.len()]> {
    let mut known = [None; KNOWN.len()];
    let end = req.buf.len();
    req.params.clear();
    req.headers.clear();
    let mut at = 0;
    while at < end {
        let (left, (name, value)) = record::nv_pair(&req.buf[at..end]).ok()?;
        let (n, v) = (span_in(&req.buf, name), span_in(&req.buf, value));
        let http = name.starts_with(b"HTTP_");
        let header: Option<&'static [u8]> = match name {
            b"CONTENT_TYPE" if v.0 != v.1 => Some(b"content-type"),
            b"CONTENT_LENGTH" if v.0 != v.1 => Some(b"content-length"),
            _ => None,
        };
        if let Some(&(_, k)) = KNOWN.iter().find(|(kn, _)| *kn == name) {
            known[k as usize] = Some(v);
        }
        at = end - left.len();
        req.params.push((n, v));
        if http {
            let start = req.buf.len();
            for k in n.0 as usize + 5..n.1 as usize {
                let c = req.buf[k];
                req.buf.push(if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                });
            }
            req.headers.push(((start as u32, req.buf.len() as u32), v));
        } else if let Some(h) = header {
            let hn = req.store(h);
            req.headers.push((hn, v));
        }
    }
    Some(known)
}
