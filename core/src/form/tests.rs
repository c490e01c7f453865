//! Form parser tests over byte slices: every body is fed whole, split at every point, and
//! one byte at a time, and must give the same events each way.

use super::*;

/// Events as text, adjacent data pieces merged (how the body is split must not matter).
fn run(ct: &str, limits: Limits, pieces: &[&[u8]]) -> Result<Vec<String>, Error> {
    let mut form = Form::new(ct, limits)?;
    let mut out: Vec<String> = Vec::new();
    let mut data_open = false;
    let mut push = |ev: Event<'_>| match ev {
        Event::Data(d) => {
            assert!(!d.is_empty(), "an empty Data event");
            let s = String::from_utf8_lossy(d);
            if data_open {
                out.last_mut().unwrap().push_str(&s);
            } else {
                out.push(format!("data:{s}"));
                data_open = true;
            }
        }
        ev => {
            data_open = false;
            out.push(match ev {
                Event::Part(p) => format!(
                    "part:{}|{}|{}",
                    p.name,
                    p.filename.as_deref().unwrap_or("-"),
                    p.content_type.as_deref().unwrap_or("-")
                ),
                Event::PartEnd => "end".into(),
                Event::End => "END".into(),
                Event::Data(_) => unreachable!(),
            });
        }
    };
    for p in pieces {
        form.feed(p, &mut push)?;
    }
    form.finish(&mut push)?;
    Ok(out)
}

/// The events of `body` fed whole, checked equal for every split point and byte by byte.
fn every_split(ct: &str, limits: Limits, body: &[u8]) -> Result<Vec<String>, Error> {
    let whole = run(ct, limits, &[body]);
    for k in 0..=body.len() {
        let got = run(ct, limits, &[&body[..k], &body[k..]]);
        assert_eq!(
            got,
            whole,
            "split at {k} of {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(ct, limits, &bytes), whole, "byte by byte");
    whole
}

const CT: &str = "multipart/form-data; boundary=XyZ";

fn mp(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn multipart_fields_and_file() {
    let body = mp("preamble, ignored\n--XyZ\n\
        Content-Disposition: form-data; name=\"a\"\n\n\
        1\n--XyZ  \t\n\
        content-disposition: form-data; name=b; filename=\"x y.txt\"\n\
        Content-Type: text/plain\n\n\
        line1\nline2\n--X\n--XyQ\r\r\n-\n--\n--XyZ\n\
        Content-Disposition: form-data; name=\"empty\"\n\n\
        \n--XyZ--\nepilogue\n--XyZ\ngarbage");
    let got = every_split(CT, Limits::default(), &body).unwrap();
    assert_eq!(
        got,
        strs(&[
            "part:a|-|-",
            "data:1",
            "end",
            "part:b|x y.txt|text/plain",
            "data:line1\r\nline2\r\n--X\r\n--XyQ\r\r\r\n-\r\n--",
            "end",
            "part:empty|-|-",
            "end",
            "END",
        ])
    );
}

#[test]
fn multipart_starts_with_crlf_and_quoted_boundary() {
    let ct = "Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"";
    let body = mp("\n--a b:c\nContent-Disposition: form-data; name=\"f\"\n\nv\n--a b:c--");
    assert_eq!(
        every_split(ct, Limits::default(), &body).unwrap(),
        strs(&["part:f|-|-", "data:v", "end", "END"])
    );
}

#[test]
fn multipart_filenames() {
    let body = mp("--XyZ\n\
        Content-Disposition: form-data; name=\"f\"; filename=\"plain.txt\"; filename*=UTF-8''%E2%82%AC.txt\n\n\
        x\n--XyZ\n\
        Content-Disposition: form-data; name=\"g\"; filename=\"\"\n\
        Content-Type: application/octet-stream\n\n\
        \n--XyZ\n\
        Content-Disposition: form-data; name=\"h\"; filename=\"../../etc/passwd\"\n\n\
        \n--XyZ--");
    assert_eq!(
        every_split(CT, Limits::default(), &body).unwrap(),
        strs(&[
            "part:f|€.txt|-",
            "data:x",
            "end",
            "part:g||application/octet-stream",
            "end",
            "part:h|../../etc/passwd|-",
            "end",
            "END",
        ])
    );
}

#[test]
fn multipart_malformed() {
    let lim = Limits::default();
    let cases: &[(&str, Error)] = &[
        (
            "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\n1\n--XyZ\n",
            Error::Truncated,
        ),
        (
            "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\n1",
            Error::Truncated,
        ),
        ("no delimiter at all", Error::Truncated),
        ("", Error::Truncated),
        (
            "--XyZ\nContent-Disposition form-data\n\n1\n--XyZ--",
            Error::Malformed("a part header line without a colon"),
        ),
        (
            "--XyZ\nContent-Type: text/plain\n\n1\n--XyZ--",
            Error::Malformed("a part without Content-Disposition"),
        ),
        (
            "--XyZ\nContent-Disposition: form-data; filename=\"a\"\n\n1\n--XyZ--",
            Error::Malformed("a part without a name"),
        ),
        (
            "--XyZ\nContent-Disposition: attachment; name=\"a\"\n\n1\n--XyZ--",
            Error::Malformed("a part whose disposition is not form-data"),
        ),
        (
            "--XyZ\nContent-Disposition: form-data; name=\"a\n\n1\n--XyZ--",
            Error::Malformed("unterminated quoted string"),
        ),
        (
            "--XyZ\nContent-Disposition: form-data; name=a\n\n1\n--XyZmore\n",
            Error::Malformed("a boundary followed by other characters"),
        ),
        (
            "--XyZ-x",
            Error::Malformed("a boundary followed by other characters"),
        ),
        (
            "--XyZ\rx",
            Error::Malformed("a boundary line not ended by CRLF"),
        ),
        (
            "--XyZ\nContent-Disposition: form-data;\n name=a\n\n1\n--XyZ--",
            Error::Malformed("a folded part header line"),
        ),
    ];
    for (body, want) in cases {
        let body = if body.contains("\rx") {
            body.as_bytes().to_vec()
        } else {
            mp(body)
        };
        assert_eq!(every_split(CT, lim, &body), Err(*want), "{body:?}");
        assert_eq!(want.status(), 400);
    }
}

#[test]
fn content_types() {
    let lim = Limits::default();
    assert_eq!(
        Form::new("text/plain", lim).err(),
        Some(Error::UnsupportedType)
    );
    assert_eq!(
        Form::new("multipart/form-data", lim).err(),
        Some(Error::NoBoundary)
    );
    assert_eq!(
        Form::new("multipart/form-data; boundary=", lim).err(),
        Some(Error::NoBoundary)
    );
    assert_eq!(
        Form::new("multipart/form-data; boundary=\"ends with space \"", lim).err(),
        Some(Error::NoBoundary)
    );
    let long = format!("multipart/form-data; boundary={}", "a".repeat(71));
    assert_eq!(Form::new(&long, lim).err(), Some(Error::NoBoundary));
    assert_eq!(Error::UnsupportedType.status(), 415);
    assert_eq!(Error::NoBoundary.status(), 400);
    assert_eq!(
        Form::new("application/x-www-form-urlencoded; charset=UTF-8", lim)
            .unwrap()
            .kind(),
        Kind::Urlencoded
    );
    assert_eq!(Form::new(CT, lim).unwrap().kind(), Kind::Multipart);
}

#[test]
fn multipart_limits() {
    let part =
        |n: &str, v: &str| format!("--XyZ\nContent-Disposition: form-data; name=\"{n}\"\n\n{v}\n");
    let three = mp(&format!(
        "{}{}{}--XyZ--",
        part("a", "1"),
        part("b", "2"),
        part("c", "3")
    ));
    let lim = Limits {
        parts: 2,
        ..Limits::default()
    };
    assert_eq!(every_split(CT, lim, &three), Err(Error::TooManyParts));
    let lim = Limits {
        parts: 3,
        ..Limits::default()
    };
    assert!(every_split(CT, lim, &three).is_ok());

    let lim = Limits {
        header_bytes: 40,
        ..Limits::default()
    };
    let big_head = mp(&format!("{}--XyZ--", part(&"n".repeat(40), "1")));
    assert_eq!(every_split(CT, lim, &big_head), Err(Error::HeaderTooLarge));
    assert_eq!(Error::HeaderTooLarge.status(), 413);

    let lim = Limits {
        field_bytes: 4,
        ..Limits::default()
    };
    assert_eq!(
        every_split(CT, lim, &mp(&format!("{}--XyZ--", part("a", "12345")))),
        Err(Error::FieldTooLarge)
    );
    assert!(every_split(CT, lim, &mp(&format!("{}--XyZ--", part("a", "1234")))).is_ok());
    // Files are not limited by field_bytes.
    let file =
        mp("--XyZ\nContent-Disposition: form-data; name=f; filename=a\n\n123456789\n--XyZ--");
    assert!(every_split(CT, lim, &file).is_ok());

    let lim = Limits {
        total_bytes: three.len() as u64 - 1,
        ..Limits::default()
    };
    assert_eq!(every_split(CT, lim, &three), Err(Error::TooLarge));
    assert_eq!(Error::TooLarge.status(), 413);
}

#[test]
fn errors_are_final() {
    let mut f = Form::new(CT, Limits::default()).unwrap();
    let bad = mp("--XyZ\nno colon\n\n");
    assert!(f.feed(&bad, |_| {}).is_err());
    assert_eq!(
        f.feed(b"more", |_| panic!("no events after an error")),
        Err(Error::Malformed("a part header line without a colon"))
    );
    assert!(f.finish(|_| {}).is_err());
}

#[test]
fn big_file_is_streamed_from_the_input() {
    // 8 MiB of file data in 64 KiB pieces: every Data event borrows the input (none is
    // larger than the piece it came from), and the parser holds no copy.
    let mut f = Form::new(CT, Limits::default()).unwrap();
    let head = mp("--XyZ\nContent-Disposition: form-data; name=f; filename=big\n\n");
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut total = 0usize;
    f.feed(&head, |_| {}).unwrap();
    for _ in 0..128 {
        f.feed(&chunk, |ev| {
            if let Event::Data(d) = ev {
                assert!(d.len() <= chunk.len());
                total += d.len();
            }
        })
        .unwrap();
    }
    let mut ended = false;
    f.feed(&mp("\n--XyZ--\n"), |ev| ended |= ev == Event::End)
        .unwrap();
    f.finish(|_| {}).unwrap();
    assert!(ended);
    assert_eq!(total, 128 * 65536);
    if let Inner::Multi(m) = &f.inner {
        assert!(
            m.held_capacity() < 1024,
            "the parser kept a copy of the data"
        );
    }
}

const URL: &str = "application/x-www-form-urlencoded";

#[test]
fn urlencoded() {
    let body = b"a=1&b=x+y%21&a=2&&empty=&flag&%zz=100%&=v";
    assert_eq!(
        every_split(URL, Limits::default(), body).unwrap(),
        strs(&[
            "part:a|-|-",
            "data:1",
            "end",
            "part:b|-|-",
            "data:x y!",
            "end",
            "part:a|-|-",
            "data:2",
            "end",
            "part:empty|-|-",
            "end",
            "part:flag|-|-",
            "end",
            "part:%zz|-|-",
            "data:100%",
            "end",
            "part:|-|-",
            "data:v",
            "end",
            "END",
        ])
    );
    assert_eq!(
        every_split(URL, Limits::default(), b"").unwrap(),
        strs(&["END"])
    );
}

#[test]
fn urlencoded_limits() {
    let lim = Limits {
        field_bytes: 5,
        parts: 2,
        ..Limits::default()
    };
    assert!(every_split(URL, lim, b"a=123&b=4").is_ok());
    assert_eq!(
        every_split(URL, lim, b"a=1234&b=4"),
        Err(Error::FieldTooLarge)
    );
    assert_eq!(every_split(URL, lim, b"a&b&c"), Err(Error::TooManyParts));
    let lim = Limits {
        total_bytes: 3,
        ..Limits::default()
    };
    assert_eq!(every_split(URL, lim, b"a=12"), Err(Error::TooLarge));
}
