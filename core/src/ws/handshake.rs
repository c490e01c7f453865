//! The opening handshake (RFC 6455 section 4.2, RFC 7692 section 7): checking an upgrade
//! request, the `Sec-WebSocket-Accept` key, the subprotocol choice and the
//! permessage-deflate negotiation. Sans-IO: header values in, decisions out.

use base64::Engine as _;

/// The GUID of RFC 6455 section 1.3, appended to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// Why an upgrade request was refused, with the status to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not `GET` (405).
    Method,
    /// No `Upgrade: websocket` or no `Connection: upgrade` (426: the client may retry with
    /// an upgrade; a plain request to a WebSocket URL gets this).
    NotUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (426 with `Sec-WebSocket-Version: 13`).
    Version,
    /// `Sec-WebSocket-Key` missing or not the base64 of 16 bytes (400).
    Key,
    /// HTTP/1.0, or over FastCGI (400).
    Protocol,
}

impl Reject {
    /// The HTTP status to answer.
    pub fn status(self) -> u16 {
        match self {
            Reject::Method => 405,
            Reject::NotUpgrade | Reject::Version => 426,
            Reject::Key | Reject::Protocol => 400,
        }
    }

    /// A short text for the body.
    pub fn text(self) -> &'static str {
        match self {
            Reject::Method => "a WebSocket upgrade must be a GET\n",
            Reject::NotUpgrade => "this resource needs a WebSocket upgrade\n",
            Reject::Version => "unsupported Sec-WebSocket-Version (13 is supported)\n",
            Reject::Key => "missing or malformed Sec-WebSocket-Key\n",
            Reject::Protocol => "a WebSocket upgrade needs HTTP/1.1\n",
        }
    }
}

/// Whether the comma-separated header `value` lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The request headers an upgrade is decided on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offer<'a> {
    /// The request method.
    pub method: &'a str,
    /// `HTTP/1.1` (or another version).
    pub version: &'a str,
    /// `Upgrade` (all of its values joined by commas).
    pub upgrade: Option<&'a [u8]>,
    /// `Connection`.
    pub connection: Option<&'a [u8]>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<&'a [u8]>,
    /// `Sec-WebSocket-Key`.
    pub key: Option<&'a [u8]>,
}

/// Checks an upgrade request; on success returns the `Sec-WebSocket-Accept` value.
pub fn check(o: &Offer<'_>) -> Result<String, Reject> {
    if o.version != "HTTP/1.1" {
        return Err(Reject::Protocol);
    }
    if o.method != "GET" {
        return Err(Reject::Method);
    }
    let upgrade = o.upgrade.is_some_and(|v| has_token(v, "websocket"));
    let connection = o.connection.is_some_and(|v| has_token(v, "upgrade"));
    if !upgrade || !connection {
        return Err(Reject::NotUpgrade);
    }
    if o.ws_version.map(|v| v.trim_ascii()) != Some(b"13") {
        return Err(Reject::Version);
    }
    let key = o.key.map(|k| k.trim_ascii()).ok_or(Reject::Key)?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(Reject::Key),
    }
}

/// The first of the client's `Sec-WebSocket-Protocol` offers (a comma-separated list, in
/// its order of preference) that the server supports.
pub fn choose_protocol<'a>(offered: Option<&'a [u8]>, supported: &[String]) -> Option<&'a str> {
    let offered = offered?;
    offered
        .split(|&b| b == b',')
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .find(|t| !t.is_empty() && supported.iter().any(|s| s == t))
}

/// The permessage-deflate parameters in use on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    /// The client resets its compression context after each message, so the server's
    /// decompressor can too (and need not be kept between messages).
    pub client_no_context_takeover: bool,
}

/// Chooses from the client's `Sec-WebSocket-Extensions` offers (in order) the first
/// permessage-deflate offer the server can accept; returns the parameters and the
/// response header's value. The server always answers with `server_no_context_takeover`
/// (RFC 7692 7.1.1.1 lets it): its compressor keeps nothing between messages, so one
/// compressor per loop serves every connection and a published message is compressed
/// once for every subscriber. An offer with `server_max_window_bits` below 15 is declined
/// (the pure-Rust deflate backend compresses with a 32 KiB window only); the client's
/// window needs no limit (the decompressor takes any). An offer with unknown or repeated
/// parameters, or invalid values, is declined (RFC 7692 5).
pub fn negotiate_deflate(offers: Option<&[u8]>) -> Option<(Deflate, String)> {
    let offers = std::str::from_utf8(offers?).ok()?;
    'offer: for offer in offers.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
            continue;
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut client_nct = false;
        let mut client_bits = false;
        for p in parts {
            if p.is_empty() {
                continue 'offer;
            }
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (p, None),
            };
            if seen.contains(&name) {
                continue 'offer;
            }
            seen.push(name);
            let bits = |v: Option<&str>| {
                v.and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
            };
            match name {
                "server_no_context_takeover" if value.is_none() => {}
                "client_no_context_takeover" if value.is_none() => client_nct = true,
                "server_max_window_bits" => match bits(value) {
                    Some(15) => {}
                    _ => continue 'offer,
                },
                "client_max_window_bits" => {
                    if value.is_some() && bits(value).is_none() {
                        continue 'offer;
                    }
                    client_bits = true;
                }
                _ => continue 'offer,
            }
        }
        let _ = client_bits;
        let mut resp = String::from("permessage-deflate; server_no_context_takeover");
        if client_nct {
            resp.push_str("; client_no_context_takeover");
        }
        return Some((
            Deflate {
                client_no_context_takeover: client_nct,
            },
            resp,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer<'a>(key: &'a [u8]) -> Offer<'a> {
        Offer {
            method: "GET",
            version: "HTTP/1.1",
            upgrade: Some(b"websocket"),
            connection: Some(b"Upgrade"),
            ws_version: Some(b"13"),
            key: Some(key),
        }
    }

    #[test]
    fn the_rfc_accept_key() {
        // RFC 6455 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            check(&offer(b"dGhlIHNhbXBsZSBub25jZQ==")).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_are_lists_and_case_insensitive() {
        let mut o = offer(b"dGhlIHNhbXBsZSBub25jZQ==");
        o.connection = Some(b"keep-alive, UPGRADE");
        o.upgrade = Some(b"h2c, WebSocket");
        assert!(check(&o).is_ok());
        o.connection = Some(b"keep-alive, upgraded");
        assert_eq!(check(&o), Err(Reject::NotUpgrade));
    }

    #[test]
    fn refusals() {
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        let mut o = offer(key);
        o.method = "POST";
        assert_eq!(check(&o).unwrap_err().status(), 405);
        let mut o = offer(key);
        o.upgrade = None;
        assert_eq!(check(&o).unwrap_err().status(), 426);
        let mut o = offer(key);
        o.ws_version = Some(b"8");
        assert_eq!(check(&o), Err(Reject::Version));
        o.ws_version = None;
        assert_eq!(check(&o), Err(Reject::Version));
        // Keys: not base64, or not 16 bytes.
        for bad in [&b"not base64!"[..], b"AAAA", b""] {
            assert_eq!(check(&offer(bad)), Err(Reject::Key), "{bad:?}");
        }
        let mut o = offer(key);
        o.key = None;
        assert_eq!(check(&o), Err(Reject::Key));
        let mut o = offer(key);
        o.version = "HTTP/1.0";
        assert_eq!(check(&o), Err(Reject::Protocol));
    }

    #[test]
    fn subprotocols_in_the_clients_order() {
        let sup = vec!["chat".to_string(), "echo".to_string()];
        assert_eq!(
            choose_protocol(Some(b"superchat, echo, chat"), &sup),
            Some("echo")
        );
        assert_eq!(choose_protocol(Some(b"nope"), &sup), None);
        assert_eq!(choose_protocol(None, &sup), None);
    }

    #[test]
    fn deflate_offers() {
        let n = |s: &str| negotiate_deflate(Some(s.as_bytes()));
        // The offers of browsers, `ws` and `websockets`.
        let (d, r) = n("permessage-deflate; client_max_window_bits").unwrap();
        assert!(!d.client_no_context_takeover);
        assert_eq!(r, "permessage-deflate; server_no_context_takeover");
        let (d, r) =
            n("permessage-deflate; client_no_context_takeover; server_no_context_takeover")
                .unwrap();
        assert!(d.client_no_context_takeover);
        assert!(r.ends_with("; client_no_context_takeover"));
        // A small server window is declined; a later offer is taken.
        assert!(n("permessage-deflate; server_max_window_bits=10").is_none());
        assert!(n("permessage-deflate; server_max_window_bits=10, permessage-deflate").is_some());
        assert!(n("permessage-deflate; server_max_window_bits=15").is_some());
        // Unknown, repeated, bad-valued parameters; other extensions.
        assert!(n("permessage-deflate; foo").is_none());
        assert!(
            n("permessage-deflate; client_no_context_takeover; client_no_context_takeover")
                .is_none()
        );
        assert!(n("permessage-deflate; client_max_window_bits=16").is_none());
        assert!(n("permessage-deflate; server_no_context_takeover=1").is_none());
        assert!(n("x-webkit-deflate-frame").is_none());
        assert!(negotiate_deflate(None).is_none());
    }
}
