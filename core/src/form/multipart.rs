//! `multipart/form-data` (RFC 7578 over RFC 2046 §5.1.1) as a streaming state machine.
//!
//! The body is `preamble CRLF? --B padding CRLF headers CRLF CRLF data (CRLF --B ...)*
//! CRLF --B-- epilogue`. The parser looks for the delimiter `CRLF--B` (at the very start
//! the CRLF is taken as already seen). Bytes that may begin a delimiter at the end of one
//! piece are held back, and since a boundary contains no CR, what is held back is always a
//! prefix of the delimiter itself: nothing is copied, and when the next piece shows it was
//! data, those bytes are reported from the delimiter. Part data is otherwise reported
//! straight from the input slices. Header blocks are held (up to a limit) and parsed whole.
//! A delimiter followed by anything but `--`, spaces and tabs, or CRLF is a malformed body
//! (RFC 2046 forbids the boundary inside the parts).

use super::params::{decode_ext_value, parse_params};
use super::{Error, Event, Limits, Part};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (discarded).
    Preamble,
    /// Just after `--B`: `--`, padding or CRLF next.
    After,
    /// After `--B` and spaces or tabs: more of them or CRLF.
    Pad,
    /// After the CR that ends a boundary line.
    Lf,
    /// After `--B-`: the second dash of the close delimiter.
    Dash,
    /// In a part's header block.
    Headers,
    /// In a part's data.
    Body,
    /// After the close delimiter (discarded).
    Epilogue,
}

/// The streaming multipart parser: see the module docs and [`super::Form`].
pub struct Multipart {
    /// `CRLF--boundary`.
    delim: Box<[u8]>,
    st: Cursor,
}

/// Everything but the delimiter (so that both can be borrowed at once).
struct Cursor {
    state: State,
    /// How many delimiter bytes are matched (held back) at the end of the last piece.
    matched: usize,
    head: Vec<u8>,
    part: Part,
    /// Bytes of the current part's data so far.
    part_len: u64,
    parts: usize,
    total: u64,
    limits: Limits,
    failed: Option<Error>,
}

impl Multipart {
    /// A parser for this boundary (checked by the caller: see [`super::content_kind`]).
    pub fn new(boundary: &[u8], limits: Limits) -> Result<Multipart, Error> {
        if boundary.is_empty() || boundary.len() > 70 || boundary.contains(&b'\r') {
            return Err(Error::NoBoundary);
        }
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary);
        Ok(Multipart {
            delim: delim.into_boxed_slice(),
            st: Cursor {
                state: State::Preamble,
                matched: 2, // the body may start with "--B": its CRLF is taken as seen
                head: Vec::new(),
                part: Part::default(),
                part_len: 0,
                parts: 0,
                total: 0,
                limits,
                failed: None,
            },
        })
    }

    /// Parses the next piece of the body. An error is final.
    pub fn feed(&mut self, input: &[u8], mut on: impl FnMut(Event<'_>)) -> Result<(), Error> {
        if let Some(e) = self.st.failed {
            return Err(e);
        }
        let r = self.st.run(&self.delim, input, &mut on);
        if let Err(e) = r {
            self.st.failed = Some(e);
        }
        r
    }

    /// The body is complete. Errors: [`Error::Truncated`] before the close delimiter.
    pub fn finish(&mut self, _on: impl FnMut(Event<'_>)) -> Result<(), Error> {
        if let Some(e) = self.st.failed {
            return Err(e);
        }
        if self.st.state != State::Epilogue {
            self.st.failed = Some(Error::Truncated);
            return Err(Error::Truncated);
        }
        Ok(())
    }
}

#[cfg(test)]
impl Multipart {
    /// The capacity of what the parser holds (the header block buffer).
    pub(crate) fn held_capacity(&self) -> usize {
        self.st.head.capacity()
    }
}

impl Cursor {
    fn run(
        &mut self,
        delim: &[u8],
        input: &[u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<(), Error> {
        self.total += input.len() as u64;
        if self.total > self.limits.total_bytes {
            return Err(Error::TooLarge);
        }
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.state {
                State::Preamble | State::Body => {
                    i = self.scan(delim, input, i, on)?;
                    continue;
                }
                State::Epilogue => return Ok(()),
                State::After | State::Pad => match c {
                    b'-' if self.state == State::After => self.state = State::Dash,
                    b' ' | b'\t' => self.state = State::Pad,
                    b'\r' => self.state = State::Lf,
                    _ => return Err(Error::Malformed("a boundary followed by other characters")),
                },
                State::Lf => {
                    if c != b'\n' {
                        return Err(Error::Malformed("a boundary line not ended by CRLF"));
                    }
                    self.head.clear();
                    self.state = State::Headers;
                }
                State::Dash => {
                    if c != b'-' {
                        return Err(Error::Malformed("a boundary followed by other characters"));
                    }
                    self.state = State::Epilogue;
                    on(Event::End);
                }
                State::Headers => {
                    i = self.headers(input, i, on)?;
                    continue;
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Takes header bytes from `input[i..]` until the blank line; returns where it stopped.
    fn headers(
        &mut self,
        input: &[u8],
        i: usize,
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, Error> {
        let max = self.limits.header_bytes;
        for (k, &c) in input[i..].iter().enumerate() {
            if self.head.len() >= max {
                return Err(Error::HeaderTooLarge);
            }
            self.head.push(c);
            if c == b'\n' && (self.head == b"\r\n" || self.head.ends_with(b"\r\n\r\n")) {
                self.parts += 1;
                if self.parts > self.limits.parts {
                    return Err(Error::TooManyParts);
                }
                parse_part_headers(&self.head, &mut self.part)?;
                self.part_len = 0;
                self.matched = 0;
                self.state = State::Body;
                on(Event::Part(&self.part));
                return Ok(i + k + 1);
            }
        }
        Ok(input.len())
    }

    /// Part data (or preamble, discarded): reports it up to the next delimiter or what may
    /// begin one at the end. Returns where it stopped.
    fn scan(
        &mut self,
        delim: &[u8],
        input: &[u8],
        mut i: usize,
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, Error> {
        if self.matched > 0 {
            while self.matched < delim.len() && i < input.len() {
                if input[i] != delim[self.matched] {
                    break;
                }
                self.matched += 1;
                i += 1;
            }
            if self.matched == delim.len() {
                self.matched = 0;
                self.delimiter(on);
                return Ok(i);
            }
            if i == input.len() {
                return Ok(i); // still maybe a delimiter
            }
            // Not a delimiter: what was held back is data, and input[i] is looked at anew.
            let held = std::mem::take(&mut self.matched);
            if self.state == State::Preamble {
                // (held may be the virtual CRLF of the start: nothing to report anyway)
            } else {
                self.data(&delim[..held], on)?;
            }
        }
        let start = i;
        let mut j = i;
        while let Some(k) = input[j..].iter().position(|&c| c == b'\r') {
            let at = j + k;
            let n = (input.len() - at).min(delim.len());
            if input[at..at + n] == delim[..n] {
                self.data(&input[start..at], on)?;
                if n == delim.len() {
                    self.delimiter(on);
                } else {
                    self.matched = n;
                }
                return Ok(at + n);
            }
            j = at + 1;
        }
        self.data(&input[start..], on)?;
        Ok(input.len())
    }

    fn data(&mut self, bytes: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<(), Error> {
        if bytes.is_empty() || self.state != State::Body {
            return Ok(());
        }
        self.part_len += bytes.len() as u64;
        if !self.part.is_file() && self.part_len > self.limits.field_bytes as u64 {
            return Err(Error::FieldTooLarge);
        }
        on(Event::Data(bytes));
        Ok(())
    }

    fn delimiter(&mut self, on: &mut impl FnMut(Event<'_>)) {
        if self.state == State::Body {
            on(Event::PartEnd);
        }
        self.state = State::After;
    }
}

/// Parses a part's header block (ending in the blank line) into `part`.
fn parse_part_headers(block: &[u8], part: &mut Part) -> Result<(), Error> {
    let text =
        std::str::from_utf8(block).map_err(|_| Error::Malformed("bad UTF-8 in part headers"))?;
    part.name.clear();
    part.filename = None;
    part.content_type = None;
    let mut disposition = false;
    let mut has_name = false;
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue; // the blank line (and the empty piece after the last CRLF)
        }
        if line.starts_with([' ', '\t']) {
            return Err(Error::Malformed("a folded part header line"));
        }
        if line.contains(['\r', '\n']) {
            return Err(Error::Malformed("a bare CR or LF in part headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(Error::Malformed("a part header line without a colon"))?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-disposition") {
            disposition = true;
            let (kind, rest) = value.split_once(';').unwrap_or((value, ""));
            if !kind
                .trim_matches([' ', '\t'])
                .eq_ignore_ascii_case("form-data")
            {
                return Err(Error::Malformed(
                    "a part whose disposition is not form-data",
                ));
            }
            let params = parse_params(rest).map_err(Error::Malformed)?;
            let mut name = None;
            let mut ext = None;
            for (k, v) in params {
                if k.eq_ignore_ascii_case("name") {
                    name = Some(v);
                } else if k.eq_ignore_ascii_case("filename") {
                    part.filename = Some(v);
                } else if k.eq_ignore_ascii_case("filename*") {
                    ext = decode_ext_value(&v);
                }
            }
            if ext.is_some() {
                part.filename = ext;
            }
            has_name |= name.is_some();
            part.name = name.unwrap_or_default();
        } else if name.eq_ignore_ascii_case("content-type") {
            part.content_type = Some(value.to_string());
        }
    }
    if !disposition {
        return Err(Error::Malformed("a part without Content-Disposition"));
    }
    if !has_name {
        return Err(Error::Malformed("a part without a name"));
    }
    Ok(())
}
