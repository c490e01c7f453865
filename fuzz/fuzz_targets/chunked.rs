//! The chunked decoder: a body built from chunks (sizes, extensions, trailers, hex case,
//! leading zeros), possibly corrupted at one byte or replaced by raw bytes, decoded at
//! once and cut at arbitrary points: the same data, the same verdict, the same length
//! consumed; an uncorrupted body decodes to exactly its chunks and stops at its end.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myriad::fuzzing::ChunkedDecoder;

#[derive(Arbitrary, Debug)]
struct Chunk {
    data: Vec<u8>,
    ext: Option<u8>,
    upper: bool,
    zeros: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: Vec<Chunk>,
    trailers: Vec<(u8, u8)>,
    corrupt: Option<(u16, u8)>,
    raw: Option<Vec<u8>>,
    cuts: Vec<u16>,
}

fn decode(pieces: &[&[u8]]) -> (Vec<u8>, Result<usize, myriad::fuzzing::ChunkError>, bool) {
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut total = 0;
    for p in pieces {
        match d.decode(p, |b| out.extend_from_slice(b)) {
            Ok(n) => {
                assert!(n <= p.len());
                total += n;
                if d.is_done() {
                    break;
                }
                assert_eq!(n, p.len(), "an unfinished body takes all it is given");
            }
            Err(e) => return (out, Err(e), false),
        }
    }
    (out, Ok(total), d.is_done())
}

fuzz_target!(|data: &[u8]| {
    // "=" then raw bytes (the seeds from the unit tests): whole against cut in thirds.
    if let Some(raw) = data.strip_prefix(b"=") {
        let whole = decode(&[raw]);
        let (a, b) = raw.split_at(raw.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        let cut = decode(&[a, b, c]);
        assert_eq!(cut.0, whole.0, "same data cut as whole");
        assert_eq!(cut.1.err(), whole.1.err());
        if whole.1.is_ok() {
            assert_eq!((cut.1, cut.2), (whole.1, whole.2));
        }
        return;
    }
    let Ok(inp) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    let mut body = Vec::new();
    let mut want = Vec::new();
    // Extension and trailer bytes: the decoder refuses more than 16 KiB of them (413).
    let mut meta = 0;
    for c in inp.chunks.iter().filter(|c| !c.data.is_empty()) {
        let mut s = "0".repeat(c.zeros as usize % 4);
        s.push_str(&if c.upper {
            format!("{:X}", c.data.len())
        } else {
            format!("{:x}", c.data.len())
        });
        body.extend_from_slice(s.as_bytes());
        if let Some(e) = c.ext {
            let x = format!(" ; e{}=\"v\"", e % 10);
            meta += x.len();
            body.extend_from_slice(x.as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&c.data);
        body.extend_from_slice(b"\r\n");
        want.extend_from_slice(&c.data);
    }
    body.extend_from_slice(b"0\r\n");
    for (n, v) in &inp.trailers {
        let t = format!("T-{}: v{}\r\n", n % 8, v);
        meta += t.len();
        body.extend_from_slice(t.as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    let end = body.len();
    body.extend_from_slice(b"NEXT");
    let mut pristine = meta < 16 * 1024 - 64;
    if let Some(raw) = &inp.raw {
        body = raw.clone();
        pristine = false;
    } else if let Some((at, b)) = inp.corrupt {
        let at = at as usize % body.len();
        pristine &= body[at] == b || at >= end;
        body[at] = b;
    }
    let (data, verdict, done) = decode(&[&body]);
    if pristine {
        assert_eq!(verdict, Ok(end), "stops at the end of the body");
        assert!(done);
        assert_eq!(data, want);
    }
    let cut = myriad_fuzz::pieces(&body, &inp.cuts);
    let (data2, verdict2, done2) = decode(&cut);
    assert_eq!(
        verdict2.is_err(),
        verdict.is_err(),
        "same verdict cut as whole"
    );
    assert_eq!(verdict2.err(), verdict.err());
    if verdict.is_ok() {
        assert_eq!((verdict2, done2), (verdict, done));
    }
    assert_eq!(data2, data, "same data cut as whole");
});
