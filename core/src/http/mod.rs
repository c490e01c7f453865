//! HTTP/1.1 on the loop: a sans-IO codec (httparse for heads, our own chunked coding) and a
//! connection driver serving [`crate::Request`]/[`crate::Response`] handlers with
//! keep-alive, pipelining, streamed bodies and timeouts.

pub(crate) mod chunked;
mod conn;
pub(crate) mod date;
pub(crate) mod head;
pub(crate) mod parse;

pub(crate) use conn::HttpConn;
pub(crate) use date::format_date;
pub use date::http_date;

/// `v` in decimal, written into the end of `t`.
pub(crate) fn decimal(mut v: u64, t: &mut [u8; 20]) -> &[u8] {
    let mut i = t.len();
    loop {
        i -= 1;
        t[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &t[i..];
        }
    }
}

/// The reason phrase of a status code.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
