//! The chunked transfer coding (RFC 9112 §7.1), sans-IO.
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! Strict where parsers disagree: hex digits only (no `0x`, no sign, no spaces inside),
//! overflow-checked sizes, CRLF only (a bare LF or CR is an error), bounded extensions and
//! trailers. Extensions are ignored; trailer lines are checked for syntax and skipped.

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// Malformed size, extension, CRLF or trailer.
    Syntax,
    /// A chunk size larger than the decoder accepts (u64 overflow or over the limit).
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// After the size: optional whitespace then ';' (extension) or CR.
    AfterSize,
    /// Inside an extension, until CR.
    Ext,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    /// Expecting LF ending a trailer line.
    TrailerLf,
    /// Expecting LF of the final empty line.
    EndLf,
    Done,
}

/// Most bytes of extensions plus trailers accepted per body.
const MAX_META: u32 = 16 * 1024;

/// A streaming chunked decoder.
#[derive(Clone, Debug)]
pub(crate) struct Decoder {
    state: State,
    /// Size being read, then data bytes left in the current chunk.
    size: u64,
    /// Extension and trailer bytes seen (bounded).
    meta: u32,
    /// Whether the current trailer line has a colon (a field line must).
    colon: bool,
    /// Bytes in the current trailer line.
    line_len: u32,
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder {
            state: State::Size { digits: 0 },
            size: 0,
            meta: 0,
            colon: false,
            line_len: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, passing data pieces to `data` (borrowed from `input`).
    /// Returns the bytes consumed; stops at the end of the body.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(v) = hex(c) {
                        if digits >= 16 {
                            return Err(ChunkError::TooLarge);
                        }
                        self.size = self.size.checked_mul(16).ok_or(ChunkError::TooLarge)? + v;
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError::Syntax);
                    } else {
                        self.state = State::AfterSize;
                        continue; // re-examine c
                    }
                }
                State::AfterSize => match c {
                    b' ' | b'\t' => self.bump_meta()?,
                    b';' => {
                        self.bump_meta()?;
                        self.state = State::Ext;
                    }
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Syntax),
                },
                State::Ext => match c {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' | 0 => return Err(ChunkError::Syntax),
                    _ => self.bump_meta()?,
                },
                State::SizeLf => {
                    if c != b'\n' {
                        return Err(ChunkError::Syntax);
                    }
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = (input.len() - i).min(self.size.min(usize::MAX as u64) as usize);
                    data(&input[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if c != b'\r' {
                        return Err(ChunkError::Syntax);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if c != b'\n' {
                        return Err(ChunkError::Syntax);
                    }
                    self.state = State::Size { digits: 0 };
                    self.size = 0;
                }
                State::TrailerStart => match c {
                    b'\r' => self.state = State::EndLf,
                    b' ' | b'\t' | b':' | b'\n' => return Err(ChunkError::Syntax),
                    _ => {
                        self.colon = false;
                        self.line_len = 0;
                        self.state = State::Trailer;
                        continue;
                    }
                },
                State::Trailer => match c {
                    b'\r' => {
                        if !self.colon {
                            return Err(ChunkError::Syntax);
                        }
                        self.state = State::TrailerLf;
                    }
                    b'\n' | 0 => return Err(ChunkError::Syntax),
                    b':' => {
                        if self.line_len == 0 {
                            return Err(ChunkError::Syntax);
                        }
                        self.colon = true;
                        self.bump_meta()?;
                    }
                    b' ' | b'\t' if !self.colon => return Err(ChunkError::Syntax),
                    _ => {
                        self.line_len += 1;
                        self.bump_meta()?;
                    }
                },
                State::TrailerLf => {
                    if c != b'\n' {
                        return Err(ChunkError::Syntax);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if c != b'\n' {
                        return Err(ChunkError::Syntax);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn bump_meta(&mut self) -> Result<(), ChunkError> {
        self.meta += 1;
        if self.meta > MAX_META {
            return Err(ChunkError::TooLarge);
        }
        Ok(())
    }
}

fn hex(c: u8) -> Option<u64> {
    match c {
        b'0'..=b'9' => Some(u64::from(c - b'0')),
        b'a'..=b'f' => Some(u64::from(c - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(c - b'A' + 10)),
        _ => None,
    }
}

/// Writes the size line of a chunk of `n` bytes ("1a2b\r\n") into `out`.
pub(crate) fn size_line(n: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        tmp[i] = HEX[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let n = d.decode(input, |b| out.extend_from_slice(b))?;
        Ok((out, n, d.is_done()))
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0\r\nX-T: v\r\nY: w\r\n\r\nNEXT";
        let (out, n, done) = decode_all(body).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&body[n..], b"NEXT", "stops at the end of the body");
        let (out, _, done) = decode_all(b"A\r\n0123456789\r\n000\r\n\r\n").unwrap();
        assert_eq!((out.len(), done), (10, true));
    }

    #[test]
    fn split_at_every_byte() {
        let body = b"3\r\nabc\r\n10;x\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
        for cut in 0..body.len() {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            let n1 = d
                .decode(&body[..cut], |b| out.extend_from_slice(b))
                .unwrap();
            assert_eq!(n1, cut);
            let n2 = d
                .decode(&body[cut..], |b| out.extend_from_slice(b))
                .unwrap();
            assert_eq!(n1 + n2, body.len());
            assert!(d.is_done());
            assert_eq!(out, b"abc0123456789abcdef", "cut at {cut}");
        }
    }

    #[test]
    fn rejects_bad_framing() {
        let bad: &[&[u8]] = &[
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b" 5\r\nhello\r\n",
            b"5 5\r\n",
            b"g\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nName : x\r\n\r\n",
            b"5;a\nb\r\n",
        ];
        for b in bad {
            assert_eq!(
                decode_all(b).err(),
                Some(ChunkError::Syntax),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            decode_all(b"11111111111111111\r\n").err(),
            Some(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_all(b"ffffffffffffffff\r\n").map(|r| r.2),
            Ok(false),
            "max u64 is a size"
        );
        let ext = format!("1;{}\r\n", "a".repeat(20_000));
        assert_eq!(decode_all(ext.as_bytes()).err(), Some(ChunkError::TooLarge));
    }

    #[test]
    fn size_lines() {
        let mut v = Vec::new();
        size_line(0, &mut v);
        size_line(255, &mut v);
        size_line(65536, &mut v);
        assert_eq!(v, b"0\r\nff\r\n10000\r\n");
    }
}
