//! The FastCGI record decoder on records built with valid headers (types, ids, content,
//! padding; sometimes a bad version or a BEGIN_REQUEST of the wrong size, or raw bytes):
//! the events are exactly the records (padding skipped, stream content passed on whole),
//! and decoding the stream cut at arbitrary points gives the same events.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myriad::fuzzing::{RecordDecoder, RecordError, RecordEvent};

#[derive(Arbitrary, Debug)]
struct Rec {
    kind: u8,
    id: u16,
    content: Vec<u8>,
    pad: u8,
    bad_version: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    recs: Vec<Rec>,
    raw: Option<Vec<u8>>,
    cuts: Vec<u16>,
}

/// Decodes like a connection (unconsumed bytes carried over); stream pieces of one record
/// are merged so that cuts do not show.
fn decode(pieces: &[&[u8]]) -> (Vec<RecordEvent>, Option<RecordError>) {
    let mut d = RecordDecoder::default();
    let mut evs: Vec<RecordEvent> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    // Whether the last event is an unfinished stream record's content.
    let mut open = false;
    let mut left = 0usize;
    let _ = &mut left;
    for p in pieces {
        buf.extend_from_slice(p);
        let mut i = 0;
        loop {
            match d.next(&buf[i..]) {
                Err(e) => return (evs, Some(e)),
                Ok((0, None)) => break,
                Ok((n, ev)) => {
                    i += n;
                    match ev {
                        Some(RecordEvent::Stream {
                            id,
                            kind,
                            data,
                            end: false,
                        }) => {
                            if let (true, Some(RecordEvent::Stream { data: d0, .. })) =
                                (open, evs.last_mut())
                            {
                                d0.extend_from_slice(&data);
                            } else {
                                evs.push(RecordEvent::Stream {
                                    id,
                                    kind,
                                    data,
                                    end: false,
                                });
                            }
                            open = true;
                        }
                        Some(e) => {
                            open = false;
                            evs.push(e);
                        }
                        None => open = false,
                    }
                }
            }
        }
        buf.drain(..i);
    }
    (evs, None)
}

fuzz_target!(|data: &[u8]| {
    // "=" then raw bytes (the seeds): whole against cut in thirds.
    if let Some(raw) = data.strip_prefix(b"=") {
        let (a, b) = raw.split_at(raw.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        assert_eq!(
            decode(&[raw]),
            decode(&[a, b, c]),
            "raw stream cut differently"
        );
        return;
    }
    let Ok(inp) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    let mut stream = Vec::new();
    let mut want = Vec::new();
    let mut want_err = None;
    for r in &inp.recs {
        let len = r.content.len().min(65535);
        let content = &r.content[..len];
        let (version, kind) = (if r.bad_version { 2 } else { 1 }, r.kind % 12);
        let i = r.id.to_be_bytes();
        let l = (len as u16).to_be_bytes();
        stream.extend_from_slice(&[version, kind, i[0], i[1], l[0], l[1], r.pad, 0]);
        stream.extend_from_slice(content);
        stream.extend(std::iter::repeat_n(0xAA, r.pad as usize));
        if want_err.is_some() {
            continue;
        }
        if r.bad_version {
            want_err = Some(RecordError::Version);
            continue;
        }
        let id = r.id;
        let ev = match kind {
            4 | 5 | 8 if id != 0 => {
                if len == 0 {
                    Some(RecordEvent::Stream {
                        id,
                        kind,
                        data: vec![],
                        end: true,
                    })
                } else {
                    Some(RecordEvent::Stream {
                        id,
                        kind,
                        data: content.to_vec(),
                        end: false,
                    })
                }
            }
            1 if id != 0 => {
                if len != 8 {
                    want_err = Some(RecordError::BadBegin);
                    None
                } else {
                    Some(RecordEvent::Begin {
                        id,
                        role: u16::from_be_bytes([content[0], content[1]]),
                        flags: content[2],
                    })
                }
            }
            2 if id != 0 => Some(RecordEvent::Abort { id }),
            k => Some(RecordEvent::Other {
                id,
                kind: k,
                content: content.to_vec(),
            }),
        };
        want.extend(ev);
    }
    let whole = match &inp.raw {
        Some(raw) => {
            // Raw bytes: only consistency between whole and cut.
            let w = decode(&[raw]);
            let c = decode(&myriad_fuzz::pieces(raw, &inp.cuts));
            assert_eq!(w, c, "raw stream cut differently");
            return;
        }
        None => decode(&[&stream]),
    };
    assert_eq!(whole, (want, want_err), "events are the records");
    let cut = decode(&myriad_fuzz::pieces(&stream, &inp.cuts));
    assert_eq!(cut, whole, "same events cut as whole");
});
