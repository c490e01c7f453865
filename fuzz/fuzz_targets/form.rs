//! The form parsers (core/src/form: multipart/form-data and urlencoded): bodies built from
//! parts (names, filenames, content types, arbitrary data) decode to exactly those parts;
//! any body, built, corrupted at one byte or raw, gives the same events and verdict fed
//! whole or cut at arbitrary points; an error is final; limits are reported, not
//! exceeded.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myriad::form::{Event, Form, Limits};

#[derive(Arbitrary, Debug)]
struct P {
    name: u8,
    filename: Option<u8>,
    ctype: Option<u8>,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    urlencoded: bool,
    boundary: u8,
    parts: Vec<P>,
    preamble: bool,
    corrupt: Option<(u16, u8)>,
    raw: Option<Vec<u8>>,
    small_limits: bool,
    cuts: Vec<u16>,
}

const BOUNDARIES: [&str; 4] = [
    "b",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "a'()+_,-./:=?z",
    "x y",
];
const NAMES: [&str; 5] = ["a", "field", "file", "n\u{e9}", "x-y"];
const FILES: [&str; 4] = ["", "a.txt", "r\u{e9}sum\u{e9}.pdf", "../../etc/passwd"];
const TYPES: [&str; 3] = ["text/plain", "application/octet-stream", "image/png"];

/// Parts (name, filename, type, data), whether End came, or the error.
type Outcome =
    Result<(Vec<(String, Option<String>, Option<String>, Vec<u8>)>, bool), myriad::form::Error>;

fn run(ct: &str, limits: Limits, pieces: &[&[u8]]) -> Outcome {
    let mut form = Form::new(ct, limits)?;
    let mut parts = Vec::new();
    let mut ended = false;
    let mut open = false;
    let mut on = |ev: Event<'_>| {
        assert!(!ended, "an event after End");
        match ev {
            Event::Part(p) => {
                assert!(!open, "a part inside a part");
                open = true;
                parts.push((
                    p.name.clone(),
                    p.filename.clone(),
                    p.content_type.clone(),
                    Vec::new(),
                ));
            }
            Event::Data(d) => {
                assert!(open && !d.is_empty(), "data outside a part, or empty");
                parts.last_mut().unwrap().3.extend_from_slice(d);
            }
            Event::PartEnd => {
                assert!(open);
                open = false;
            }
            Event::End => {
                assert!(!open, "End inside a part");
                ended = true;
            }
        }
    };
    for p in pieces {
        if let Err(e) = form.feed(p, &mut on) {
            // An error is final.
            assert_eq!(form.feed(b"x", |_| {}), Err(e));
            return Err(e);
        }
    }
    form.finish(&mut on)?;
    Ok((parts, ended))
}

fn pct(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if c == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
}

fuzz_target!(|inp: Input| {
    let limits = if inp.small_limits {
        Limits {
            parts: 3,
            header_bytes: 96,
            field_bytes: 64,
            total_bytes: 512,
        }
    } else {
        Limits::default()
    };
    let boundary = BOUNDARIES[inp.boundary as usize % BOUNDARIES.len()];
    let (ct, mut body) = if inp.urlencoded {
        let mut b = Vec::new();
        for (i, p) in inp.parts.iter().enumerate() {
            if i > 0 {
                b.push(b'&');
            }
            pct(&mut b, NAMES[p.name as usize % NAMES.len()].as_bytes());
            b.push(b'=');
            pct(&mut b, &p.data);
        }
        ("application/x-www-form-urlencoded".to_string(), b)
    } else {
        let q = if boundary.contains(' ') {
            format!("\"{boundary}\"")
        } else {
            boundary.to_string()
        };
        let mut b = Vec::new();
        if inp.preamble {
            b.extend_from_slice(b"preamble\r\n");
        }
        for p in &inp.parts {
            b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let name = NAMES[p.name as usize % NAMES.len()];
            b.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(f) = p.filename {
                b.extend_from_slice(
                    format!("; filename=\"{}\"", FILES[f as usize % FILES.len()]).as_bytes(),
                );
            }
            b.extend_from_slice(b"\r\n");
            if let Some(t) = p.ctype {
                b.extend_from_slice(
                    format!("Content-Type: {}\r\n", TYPES[t as usize % TYPES.len()]).as_bytes(),
                );
            }
            b.extend_from_slice(b"\r\n");
            b.extend_from_slice(&p.data);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("--{boundary}--\r\nepilogue").as_bytes());
        (format!("multipart/form-data; boundary={q}"), b)
    };
    let mut pristine = !inp.small_limits;
    if let Some(raw) = &inp.raw {
        body = raw.clone();
        pristine = false;
    } else if let Some((at, c)) = inp.corrupt {
        if !body.is_empty() {
            let at = at as usize % body.len();
            pristine &= body[at] == c;
            body[at] = c;
        }
    }
    let delim = format!("\r\n--{boundary}");
    if !inp.urlencoded
        && inp.parts.iter().any(|p| {
            let mut d = b"\r\n".to_vec();
            d.extend_from_slice(&p.data);
            d.extend_from_slice(b"\r\n");
            d.windows(delim.len()).any(|w| w == delim.as_bytes())
        })
    {
        pristine = false; // the data holds the delimiter
    }
    let whole = run(&ct, limits, &[&body]);
    if pristine && !inp.parts.is_empty() {
        let (parts, ended) = whole.as_ref().expect("a built form parses");
        assert!(ended);
        assert_eq!(parts.len(), inp.parts.len());
        for (got, p) in parts.iter().zip(&inp.parts) {
            assert_eq!(got.0, NAMES[p.name as usize % NAMES.len()]);
            assert_eq!(got.3, p.data, "the part's data");
            if !inp.urlencoded {
                assert_eq!(
                    got.1.as_deref(),
                    p.filename.map(|f| FILES[f as usize % FILES.len()])
                );
                assert_eq!(
                    got.2.as_deref(),
                    p.ctype.map(|t| TYPES[t as usize % TYPES.len()])
                );
            }
        }
    }
    let cut = run(&ct, limits, &myriad_fuzz::pieces(&body, &inp.cuts));
    match (&cut, &whole) {
        // Under limits, which error comes first may depend on the cut: the total is
        // checked as each piece arrives, before the piece is parsed (FUZZING.md).
        (Err(_), Err(_)) if inp.small_limits => {}
        _ => assert_eq!(cut, whole, "same events cut as whole"),
    }
});
