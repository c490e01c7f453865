//! The WebSocket frame codec (RFC 6455 section 5), sans-IO: frame heads parsed from and
//! written to byte slices, masking, close payloads, and the incremental UTF-8 check of
//! text messages. Protocol rules that need more than one frame (fragmentation, the close
//! handshake) are in `conn.rs`'s [`super::conn::Reader`]; this file knows one frame.

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: going away (server shutdown, idle timeout).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a close frame without a code (never sent on the wire).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Close code: the connection ended without a close frame (never sent on the wire).
pub const CLOSE_ABNORMAL: u16 = 1006;
/// Close code: a text message (or close reason) was not valid UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: policy violation (backpressure limit).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a message larger than the maximum message size.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: internal error.
pub const CLOSE_INTERNAL: u16 = 1011;

/// The largest frame head: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEAD: usize = 14;

/// One frame's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Last frame of its message.
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate; first frame only).
    pub rsv1: bool,
    /// The opcode (`OP_*`).
    pub opcode: u8,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

impl Head {
    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a frame head was refused: the close code to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub u16);

/// Parses a frame head from the start of `buf`. `Ok(None)`: not all of it is there yet;
/// `Ok(Some((head, n)))`: the head and its length in bytes. A server (`need_mask`) refuses
/// unmasked frames; `rsv1_ok` says whether RSV1 may be set (deflate negotiated). Refused
/// (1002): reserved bits, unknown opcodes, fragmented or long (> 125) control frames, RSV1
/// on a control frame, a 64-bit length with its top bit set. A data frame longer than
/// `max` is refused with 1009 (without waiting for the payload); control frames are held
/// to their 125 bytes only.
pub fn parse_head(
    buf: &[u8],
    need_mask: bool,
    rsv1_ok: bool,
    max: u64,
) -> Result<Option<(Head, usize)>, Refused> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x30 != 0 || (rsv1 && !rsv1_ok) {
        return Err(Refused(CLOSE_PROTOCOL));
    }
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || rsv1 || b1 & 0x7F > 125 {
                return Err(Refused(CLOSE_PROTOCOL));
            }
        }
        _ => return Err(Refused(CLOSE_PROTOCOL)),
    }
    let masked = b1 & 0x80 != 0;
    if masked != need_mask {
        return Err(Refused(CLOSE_PROTOCOL));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let v = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if v >> 63 != 0 {
                return Err(Refused(CLOSE_PROTOCOL));
            }
            (v, 10)
        }
        n => (u64::from(n), 2),
    };
    if len > max && opcode & 0x8 == 0 {
        return Err(Refused(CLOSE_TOO_BIG));
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some((
        Head {
            fin,
            rsv1,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Writes a frame head into `out` and returns its length (2 to 14 bytes). Server frames
/// are unmasked (`mask: None`); a client's carry a key (the payload is then to be masked
/// with [`apply_mask`] by the caller).
pub fn write_head(
    out: &mut [u8; MAX_HEAD],
    fin: bool,
    rsv1: bool,
    opcode: u8,
    len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode & 0x0F);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if len < 126 {
        out[1] = m | len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        out[1] = m | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = m | 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(k) = mask {
        out[at..at + 4].copy_from_slice(&k);
        at += 4;
    }
    at
}

/// A whole unmasked frame (head and payload) in a new buffer: what a server sends.
pub fn encode(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; MAX_HEAD];
    let n = write_head(&mut head, fin, rsv1, opcode, payload.len() as u64, None);
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&head[..n]);
    v.extend_from_slice(payload);
    v
}

/// XORs `data` with the masking key, `data[0]` being byte `offset` of the payload (so a
/// payload unmasked in pieces gives the same bytes as at once).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let mut key = mask;
    key.rotate_left((offset % 4) as usize);
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// Whether `code` may be sent in (and received in) a close frame: 1000-1003, 1007-1014,
/// 3000-4999 (as the `ws` package and the Autobahn testsuite have it).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses a close frame's payload: `(code, reason)`. An empty payload is 1005 (no status);
/// a one-byte payload or an invalid code is refused with 1002, a reason that is not UTF-8
/// with 1007.
pub fn parse_close(payload: &[u8]) -> Result<(u16, &[u8]), Refused> {
    match payload {
        [] => Ok((CLOSE_NO_STATUS, &[])),
        [_] => Err(Refused(CLOSE_PROTOCOL)),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(Refused(CLOSE_PROTOCOL));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Refused(CLOSE_INVALID_DATA));
            }
            Ok((code, reason))
        }
    }
}

/// The payload of a close frame with `code` and `reason` (cut to 123 bytes at a
/// character boundary, since a control frame holds 125). 1005 and 1006 give an empty one.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    if code == CLOSE_NO_STATUS || code == CLOSE_ABNORMAL || code == 0 {
        return Vec::new();
    }
    let mut r = &reason[..reason.len().min(123)];
    while std::str::from_utf8(r).is_err() && !r.is_empty() {
        r = &r[..r.len() - 1];
    }
    let mut v = Vec::with_capacity(2 + r.len());
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(r);
    v
}

/// Incremental UTF-8 validation of a message arriving in pieces: each call checks the
/// bytes after the last complete character seen, so a character split across fragments is
/// checked once all of it is there, and an invalid sequence is found as soon as its bytes
/// arrive (fail fast).
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8 {
    /// Bytes of the message checked so far (ends at a character boundary).
    done: usize,
}

impl Utf8 {
    /// Checks `msg[self.done..]` (the message so far). `Err` for invalid bytes; `Ok` if
    /// what is there is valid or the valid start of a character.
    pub fn feed(&mut self, msg: &[u8]) -> Result<(), Refused> {
        match std::str::from_utf8(&msg[self.done..]) {
            Ok(_) => {
                self.done = msg.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() => {
                self.done += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(Refused(CLOSE_INVALID_DATA)),
        }
    }

    /// The message ended: all of it must have been complete characters.
    pub fn finish(&self, msg: &[u8]) -> Result<(), Refused> {
        if self.done == msg.len() || std::str::from_utf8(&msg[self.done..]).is_ok() {
            Ok(())
        } else {
            Err(Refused(CLOSE_INVALID_DATA))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut h = [0u8; MAX_HEAD];
        let n = write_head(&mut h, fin, false, op, payload.len() as u64, Some(key));
        let mut v = h[..n].to_vec();
        let mut p = payload.to_vec();
        apply_mask(&mut p, key, 0);
        v.extend(p);
        v
    }

    #[test]
    fn rfc_examples_parse() {
        // RFC 6455 5.7: a single-frame masked text message "Hello".
        let f = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = parse_head(&f, true, false, MAX).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!((h.fin, h.opcode, h.len), (true, OP_TEXT, 5));
        let mut p = f[n..].to_vec();
        apply_mask(&mut p, h.mask.unwrap(), 0);
        assert_eq!(p, b"Hello");
        assert_eq!(client_frame(true, OP_TEXT, b"Hello"), f);
        // The unmasked server frame of the same message.
        assert_eq!(
            encode(true, false, OP_TEXT, b"Hello"),
            [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']
        );
    }

    #[test]
    fn lengths_of_7_16_and_64_bits() {
        for (len, head_len) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 40, 10),
        ] {
            let mut h = [0u8; MAX_HEAD];
            let n = write_head(&mut h, true, false, OP_BINARY, len, None);
            assert_eq!(n, head_len, "{len}");
            let (got, m) = parse_head(&h[..n], false, false, u64::MAX >> 1)
                .unwrap()
                .unwrap();
            assert_eq!((got.len, m), (len, n));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..n {
                assert_eq!(parse_head(&h[..cut], false, false, u64::MAX >> 1), Ok(None));
            }
        }
        // 64-bit length with the top bit set.
        let f = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(parse_head(&f, true, false, u64::MAX), Err(Refused(1002)));
        // Past the maximum: 1009 from the head alone.
        let f = [0x82, 0xFF, 0, 0, 0, 0, 0, 0x20, 0, 0];
        assert_eq!(parse_head(&f, true, false, MAX), Err(Refused(1009)));
        // A ping longer than a (tiny) maximum message size is still a ping. (Found by the
        // ws_frame fuzz target: a max_message below 125 refused pings with 1009.)
        let ping = [0x89, 0x99, 0, 0, 0, 0];
        assert!(parse_head(&ping, true, false, 16).unwrap().is_some());
    }

    #[test]
    fn masking_rules_and_reserved_bits() {
        // A server refuses an unmasked client frame; a client an unmasked... masked one.
        assert_eq!(
            parse_head(&[0x81, 0x01, b'a'], true, false, MAX),
            Err(Refused(1002))
        );
        assert_eq!(
            parse_head(&client_frame(true, OP_TEXT, b"a"), false, false, MAX),
            Err(Refused(1002))
        );
        // RSV2, RSV3 always; RSV1 unless negotiated, and never on control frames.
        for b0 in [0xA1u8, 0x91, 0xC1] {
            assert_eq!(
                parse_head(&[b0, 0x80, 0, 0, 0, 0], true, false, MAX),
                Err(Refused(1002)),
                "{b0:x}"
            );
        }
        assert!(parse_head(&[0xC1, 0x80, 0, 0, 0, 0], true, true, MAX)
            .unwrap()
            .is_some());
        assert_eq!(
            parse_head(&[0xC9, 0x80, 0, 0, 0, 0], true, true, MAX),
            Err(Refused(1002))
        );
    }

    #[test]
    fn opcodes_and_control_frames() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                parse_head(&[0x80 | op, 0x80, 0, 0, 0, 0], true, false, MAX),
                Err(Refused(1002)),
                "{op}"
            );
        }
        // A fragmented ping, and a ping of 126 bytes.
        assert_eq!(
            parse_head(&[0x09, 0x80, 0, 0, 0, 0], true, false, MAX),
            Err(Refused(1002))
        );
        assert_eq!(
            parse_head(&[0x89, 0xFE, 0, 126, 0, 0, 0, 0], true, false, MAX),
            Err(Refused(1002))
        );
        let (h, _) = parse_head(&client_frame(true, OP_PING, &[7; 125]), true, false, MAX)
            .unwrap()
            .unwrap();
        assert!(h.is_control() && h.len == 125);
    }

    #[test]
    fn masking_in_pieces_equals_at_once() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let key = [1, 2, 3, 250];
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let mut off = 0;
        for size in [1, 3, 7, 100, 889] {
            apply_mask(&mut pieces[off..off + size], key, off as u64);
            off += size;
        }
        assert_eq!(whole, pieces);
        apply_mask(&mut whole, key, 0);
        assert_eq!(whole, data);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]), Ok((1005, &[][..])));
        assert_eq!(parse_close(&[3]), Err(Refused(1002)));
        assert_eq!(
            parse_close(&[0x03, 0xE8, b'o', b'k']),
            Ok((1000, &b"ok"[..]))
        );
        for bad in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(parse_close(&bad.to_be_bytes()), Err(Refused(1002)), "{bad}");
        }
        for good in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(parse_close(&good.to_be_bytes()).is_ok(), "{good}");
        }
        assert_eq!(
            parse_close(&[0x03, 0xE8, 0xCE, 0xBA, 0xE1]),
            Err(Refused(1007))
        );
        assert_eq!(close_payload(1000, b"bye"), [0x03, 0xE8, b'b', b'y', b'e']);
        assert!(close_payload(1005, b"x").is_empty());
        // A long reason is cut at a character boundary within 125 bytes.
        let long = "é".repeat(100);
        let p = close_payload(4000, long.as_bytes());
        assert!(p.len() <= 125 && std::str::from_utf8(&p[2..]).is_ok());
    }

    #[test]
    fn utf8_across_fragments() {
        // "κόσμε" split inside characters, and a valid message checked byte by byte.
        let s = "κόσμε-€-𝄞".as_bytes();
        let mut v = Utf8::default();
        for end in 1..=s.len() {
            v.feed(&s[..end]).unwrap();
        }
        v.finish(s).unwrap();
        // A message ending inside a character.
        let mut v = Utf8::default();
        v.feed(&s[..2]).unwrap();
        v.feed(&s[..3]).unwrap();
        assert_eq!(v.finish(&s[..3]), Err(Refused(1007)));
        // Invalid bytes are found as soon as they arrive (fail fast).
        let bad = [
            0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
        ];
        let mut v = Utf8::default();
        v.feed(&bad[..11]).unwrap();
        assert_eq!(v.feed(&bad[..13]), Err(Refused(1007)));
        assert_eq!(Utf8::default().feed(&[0xFF]), Err(Refused(1007)));
        assert_eq!(Utf8::default().feed(&[0xF4, 0x90]), Err(Refused(1007)));
    }
}
