//! Shared code of the fuzz targets: structure-aware input types, and harnesses that run a
//! real myriad [`myriad::Server`] on a [`myriad::Loop`] in-process over a unix socket and
//! check what it answers to an arbitrary byte stream.
//!
//! The connection drivers (core/src/http/conn.rs, core/src/fcgi/conn.rs) hold the protocol
//! state machines today; the sans-IO machines of issue 26 would let these harnesses drive
//! the machines directly, without a loop or a socket.

pub mod fcgi_conn;
pub mod http_conn;
pub mod wire;
pub mod ws_frame;

/// Cuts `data` into pieces at the offsets `cuts` picks (each taken modulo what is left).
pub fn pieces<'a>(data: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for &c in cuts {
        if rest.is_empty() {
            break;
        }
        let n = (c as usize % rest.len()) + 1;
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}
