//! Form bodies as a streaming, sans-IO parser: `application/x-www-form-urlencoded` and
//! `multipart/form-data` (RFC 7578) behind one [`Form`] that takes the body in pieces of any
//! size and reports [`Event`]s as they can be told.
//!
//! Every field is a part: [`Event::Part`] (its name, and for a file its filename and
//! Content-Type), [`Event::Data`] pieces of its value (a file's bytes are passed on as they
//! arrive, straight from the input slices: an upload is never held), [`Event::PartEnd`];
//! [`Event::End`] after the last. A urlencoded field is decoded whole (`+` a space, `%XX`
//! the byte, a bad escape left as it is, repeated names kept in order, empty values kept).
//! Limits ([`Limits`]) on the number of parts, the size of a part's header block, a
//! non-file field's value and the whole body give 413s; malformed bodies 400; a
//! Content-Type that is neither 415. The filename is reported as the client gave it: it is
//! not a path anyone should open.

mod multipart;
mod params;

pub use multipart::Multipart;
pub(crate) use params::parse_params;

use crate::percent;

/// Limits on one form body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most parts (fields and files); more is [`Error::TooManyParts`] (413).
    pub parts: usize,
    /// Largest header block of one multipart part, in bytes ([`Error::HeaderTooLarge`]).
    pub header_bytes: usize,
    /// Largest value of a non-file field in bytes (a urlencoded pair: name and value
    /// encoded), [`Error::FieldTooLarge`]. Files are not limited by this.
    pub field_bytes: usize,
    /// Largest body in bytes ([`Error::TooLarge`]).
    pub total_bytes: u64,
}

impl Default for Limits {
    /// 1,000 parts, 8 KiB of part headers, 1 MiB per field, no total limit (the
    /// server's body limit still applies).
    fn default() -> Self {
        Limits {
            parts: 1000,
            header_bytes: 8 << 10,
            field_bytes: 1 << 20,
            total_bytes: u64::MAX,
        }
    }
}

/// Why a form body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The Content-Type is neither form type (415).
    UnsupportedType,
    /// `multipart/form-data` without a valid `boundary` parameter (400).
    NoBoundary,
    /// The body is not well-formed; the text says how (400).
    Malformed(&'static str),
    /// The body ended before the closing delimiter (400).
    Truncated,
    /// More parts than [`Limits::parts`] (413).
    TooManyParts,
    /// A part's header block is larger than [`Limits::header_bytes`] (413).
    HeaderTooLarge,
    /// A non-file field is larger than [`Limits::field_bytes`] (413).
    FieldTooLarge,
    /// The body is larger than [`Limits::total_bytes`] (413).
    TooLarge,
}

impl Error {
    /// The HTTP status that answers it: 400, 413 or 415.
    pub fn status(&self) -> u16 {
        match self {
            Error::UnsupportedType => 415,
            Error::NoBoundary | Error::Malformed(_) | Error::Truncated => 400,
            Error::TooManyParts
            | Error::HeaderTooLarge
            | Error::FieldTooLarge
            | Error::TooLarge => 413,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::UnsupportedType => f.write_str("not a form content type"),
            Error::NoBoundary => f.write_str("multipart body without a valid boundary"),
            Error::Malformed(why) => write!(f, "malformed form body: {why}"),
            Error::Truncated => f.write_str("form body ended before its closing delimiter"),
            Error::TooManyParts => f.write_str("too many form parts"),
            Error::HeaderTooLarge => f.write_str("form part headers too large"),
            Error::FieldTooLarge => f.write_str("form field too large"),
            Error::TooLarge => f.write_str("form body too large"),
        }
    }
}

impl std::error::Error for Error {}

/// One part's description: a field, or a file when it has a filename.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// The field name (Content-Disposition `name`; decoded, for a urlencoded field).
    pub name: String,
    /// The filename as given (`filename*` if present and decodable, else `filename`);
    /// `Some("")` for a file input left empty. Never a safe path.
    pub filename: Option<String>,
    /// The part's Content-Type header, if any.
    pub content_type: Option<String>,
}

impl Part {
    /// Whether this part is a file (it has a filename).
    pub fn is_file(&self) -> bool {
        self.filename.is_some()
    }
}

/// What the parser tells, in body order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A part begins.
    Part(&'a Part),
    /// A piece of the current part's value (never empty).
    Data(&'a [u8]),
    /// The current part is complete.
    PartEnd,
    /// The form is complete (after the last part).
    End,
}

/// Which form type a Content-Type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `application/x-www-form-urlencoded`.
    Urlencoded,
    /// `multipart/form-data`.
    Multipart,
}

/// The form kind of a Content-Type value, and for multipart its boundary.
pub fn content_kind(content_type: &str) -> Result<(Kind, Option<String>), Error> {
    let (mt, rest) = content_type.split_once(';').unwrap_or((content_type, ""));
    let mt = mt.trim_matches([' ', '\t']);
    if mt.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Ok((Kind::Urlencoded, None));
    }
    if !mt.eq_ignore_ascii_case("multipart/form-data") {
        return Err(Error::UnsupportedType);
    }
    let params = parse_params(rest).map_err(|_| Error::NoBoundary)?;
    let b = params
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|p| p.1)
        .ok_or(Error::NoBoundary)?;
    // RFC 2046 §5.1.1: 1 to 70 bchars, the last not a space.
    let bchar = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    if b.is_empty() || b.len() > 70 || !b.bytes().all(bchar) || b.ends_with(' ') {
        return Err(Error::NoBoundary);
    }
    Ok((Kind::Multipart, Some(b)))
}

/// A form body parser (either kind), fed the body in pieces.
pub struct Form {
    inner: Inner,
}

enum Inner {
    Url(Urlencoded),
    Multi(Multipart),
}

impl Form {
    /// A parser for a body of this Content-Type. Errors: [`Error::UnsupportedType`],
    /// [`Error::NoBoundary`].
    pub fn new(content_type: &str, limits: Limits) -> Result<Form, Error> {
        let inner = match content_kind(content_type)? {
            (Kind::Multipart, Some(b)) => Inner::Multi(Multipart::new(b.as_bytes(), limits)?),
            _ => Inner::Url(Urlencoded::new(limits)),
        };
        Ok(Form { inner })
    }

    /// Which kind of form this is.
    pub fn kind(&self) -> Kind {
        match self.inner {
            Inner::Url(_) => Kind::Urlencoded,
            Inner::Multi(_) => Kind::Multipart,
        }
    }

    /// Parses the next piece of the body, reporting events to `on`. An error is final: the
    /// same error is returned by every later call.
    pub fn feed(&mut self, input: &[u8], on: impl FnMut(Event<'_>)) -> Result<(), Error> {
        match &mut self.inner {
            Inner::Url(u) => u.feed(input, on),
            Inner::Multi(m) => m.feed(input, on),
        }
    }

    /// The body is complete: reports what is left (a urlencoded body's last field, End).
    /// Errors: [`Error::Truncated`] for a multipart body without its closing delimiter.
    pub fn finish(&mut self, on: impl FnMut(Event<'_>)) -> Result<(), Error> {
        match &mut self.inner {
            Inner::Url(u) => u.finish(on),
            Inner::Multi(m) => m.finish(on),
        }
    }
}

/// The streaming `application/x-www-form-urlencoded` parser: a pair is held (encoded, up
/// to [`Limits::field_bytes`]) until its `&` or the end, then reported decoded.
pub struct Urlencoded {
    limits: Limits,
    pair: Vec<u8>,
    value: Vec<u8>,
    part: Part,
    parts: usize,
    total: u64,
    failed: Option<Error>,
    ended: bool,
}

impl Urlencoded {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Urlencoded {
        Urlencoded {
            limits,
            pair: Vec::new(),
            value: Vec::new(),
            part: Part::default(),
            parts: 0,
            total: 0,
            failed: None,
            ended: false,
        }
    }

    /// See [`Form::feed`].
    pub fn feed(&mut self, input: &[u8], mut on: impl FnMut(Event<'_>)) -> Result<(), Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let r = self.run(input, &mut on);
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }

    fn run(&mut self, input: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<(), Error> {
        if self.ended {
            return Err(Error::Malformed("data after the end of the body"));
        }
        self.total += input.len() as u64;
        if self.total > self.limits.total_bytes {
            return Err(Error::TooLarge);
        }
        let mut rest = input;
        while let Some(amp) = rest.iter().position(|&c| c == b'&') {
            self.take(&rest[..amp])?;
            self.pair_done(on)?;
            rest = &rest[amp + 1..];
        }
        self.take(rest)
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.pair.len() + bytes.len() > self.limits.field_bytes {
            return Err(Error::FieldTooLarge);
        }
        self.pair.extend_from_slice(bytes);
        Ok(())
    }

    fn pair_done(&mut self, on: &mut impl FnMut(Event<'_>)) -> Result<(), Error> {
        if self.pair.is_empty() {
            return Ok(());
        }
        self.parts += 1;
        if self.parts > self.limits.parts {
            return Err(Error::TooManyParts);
        }
        let (n, v) = percent::split_pair(&self.pair);
        self.part.name = String::from_utf8_lossy(&percent::decode_form(n)).into_owned();
        self.value.clear();
        percent::decode_form_into(v, &mut self.value);
        on(Event::Part(&self.part));
        if !self.value.is_empty() {
            on(Event::Data(&self.value));
        }
        on(Event::PartEnd);
        self.pair.clear();
        Ok(())
    }

    /// See [`Form::finish`].
    pub fn finish(&mut self, mut on: impl FnMut(Event<'_>)) -> Result<(), Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.ended {
            return Ok(());
        }
        if let Err(e) = self.pair_done(&mut on) {
            self.failed = Some(e);
            return Err(e);
        }
        self.ended = true;
        on(Event::End);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
