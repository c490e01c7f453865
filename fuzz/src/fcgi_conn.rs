//! The FastCGI connection state machine, fuzzed as it is today (in the driver,
//! core/src/fcgi/conn.rs): a real server on a loop in this thread is sent generated
//! records (multiplexed ids, aborts, management records, params over the cap, bad
//! versions) and raw bytes, written in arbitrary pieces, and its output is checked:
//! - it never panics and closes once the client has half-closed; no connection is left;
//! - the output is whole, well-formed records (version 1, padded to 8);
//! - records only for ids begun in the input (or 0: GET_VALUES_RESULT, UNKNOWN_TYPE);
//! - END_REQUEST at most once per BEGIN_REQUEST of an id, nothing for an id after its
//!   END_REQUEST until it is begun again; STDOUT starts with a CGI `Status:` head;
//! - for a clean multiplexed input (KEEP_CONN, each id begun once, no aborts, params under
//!   the cap), every request whose input is complete gets exactly one END_REQUEST.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use arbitrary::Arbitrary;
use myriad::fuzzing::{self, RecordDecoder, RecordEvent};
use myriad::{Loop, Proto, Request, Response, Server, ServerOptions};

/// The params cap of the fuzzed server (small, so that inputs reach it).
pub const MAX_PARAMS: usize = 1024;

const BEGIN: u8 = 1;
const ABORT: u8 = 2;
const END: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const GET_VALUES: u8 = 9;
const GET_VALUES_RESULT: u8 = 10;
const UNKNOWN_TYPE: u8 = 11;

/// One generated record (or raw bytes).
#[derive(Arbitrary, Debug)]
pub enum Rec {
    /// BEGIN_REQUEST.
    Begin {
        /// Request id (small, so that ids collide).
        id: u8,
        /// Role 1 (responder) mostly; others are refused.
        role: u8,
        /// KEEP_CONN.
        keep: bool,
    },
    /// PARAMS with these pairs (empty: the end of the stream).
    Params {
        /// Request id.
        id: u8,
        /// Pairs: a name index and a value.
        pairs: Vec<(u8, Vec<u8>)>,
    },
    /// STDIN content (empty: the end).
    Stdin {
        /// Request id.
        id: u8,
        /// Content.
        data: Vec<u8>,
    },
    /// ABORT_REQUEST.
    Abort {
        /// Request id.
        id: u8,
    },
    /// GET_VALUES for some names.
    GetValues(Vec<u8>),
    /// A record of any type, version and padding.
    Any {
        /// Version (1 is the only valid one).
        version: u8,
        /// Type.
        kind: u8,
        /// Id.
        id: u16,
        /// Content.
        content: Vec<u8>,
        /// Padding.
        pad: u8,
    },
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// A fuzz input: the stream's pieces, and where the writes are cut.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// The records sent.
    pub recs: Vec<Rec>,
    /// Write boundaries.
    pub cuts: Vec<u16>,
}

impl Input {
    /// The input for fuzzer bytes: "=" then a raw stream (the seeds from the unit tests;
    /// written in thirds), else a structured input built by `arbitrary`.
    pub fn from_fuzz(data: &[u8]) -> Input {
        if let Some(raw) = data.strip_prefix(b"=") {
            let third = (raw.len() / 3).max(1) as u16;
            return Input {
                recs: vec![Rec::Raw(raw.to_vec())],
                cuts: vec![third - 1, third - 1],
            };
        }
        Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)).unwrap_or(Input {
            recs: Vec::new(),
            cuts: Vec::new(),
        })
    }
}

const NAMES: [&[u8]; 6] = [
    b"REQUEST_METHOD",
    b"REQUEST_URI",
    b"CONTENT_LENGTH",
    b"HTTP_HOST",
    b"QUERY_STRING",
    b"SERVER_PROTOCOL",
];
const URIS: [&[u8]; 4] = [b"/", b"/echo", b"/stream", b"/204"];

impl Input {
    /// The byte stream, and whether it is "clean" (see the module docs).
    pub fn stream(&self) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut clean = true;
        for r in &self.recs {
            match r {
                Rec::Begin { id, role, keep } => {
                    let role = if role % 8 == 7 { 3 } else { 1 };
                    clean &= role == 1 && *keep;
                    fuzzing::put_record(
                        &mut out,
                        BEGIN,
                        u16::from(*id % 8) + 1,
                        &[0, role, u8::from(*keep), 0, 0, 0, 0, 0],
                    );
                }
                Rec::Params { id, pairs } => {
                    let mut c = Vec::new();
                    for (n, v) in pairs {
                        let name = NAMES[*n as usize % NAMES.len()];
                        if name == b"REQUEST_URI" && !v.is_empty() {
                            fuzzing::put_pair(&mut c, name, URIS[v[0] as usize % URIS.len()]);
                        } else {
                            fuzzing::put_pair(&mut c, name, v);
                        }
                    }
                    // A pair is never split here, so the params of a request are whole.
                    for piece in c.chunks(65535) {
                        fuzzing::put_record(&mut out, PARAMS, u16::from(*id % 8) + 1, piece);
                    }
                    if c.is_empty() {
                        fuzzing::put_record(&mut out, PARAMS, u16::from(*id % 8) + 1, b"");
                    }
                }
                Rec::Stdin { id, data } => {
                    fuzzing::put_record(&mut out, STDIN, u16::from(*id % 8) + 1, data);
                }
                Rec::Abort { id } => {
                    clean = false;
                    fuzzing::put_record(&mut out, ABORT, u16::from(*id % 8) + 1, b"");
                }
                Rec::GetValues(names) => {
                    let mut c = Vec::new();
                    for n in names {
                        let name: &[u8] = match n % 4 {
                            0 => b"FCGI_MAX_CONNS",
                            1 => b"FCGI_MAX_REQS",
                            2 => b"FCGI_MPXS_CONNS",
                            _ => b"OTHER",
                        };
                        fuzzing::put_pair(&mut c, name, b"");
                    }
                    fuzzing::put_record(&mut out, GET_VALUES, 0, &c);
                }
                Rec::Any {
                    version,
                    kind,
                    id,
                    content,
                    pad,
                } => {
                    clean = false;
                    let len = content.len().min(65535);
                    let l = (len as u16).to_be_bytes();
                    let i = id.to_be_bytes();
                    out.extend_from_slice(&[*version, *kind, i[0], i[1], l[0], l[1], *pad, 0]);
                    out.extend_from_slice(&content[..len]);
                    out.extend(std::iter::repeat_n(0, *pad as usize));
                }
                Rec::Raw(b) => {
                    clean = false;
                    out.extend_from_slice(b);
                }
            }
        }
        (out, clean)
    }
}

fn handler(_lp: &mut Loop, req: &mut Request, mut res: Response) {
    match req.path() {
        "/echo" => req.read_body(move |b| match b {
            Some(b) => {
                let _ = res.send(200, "application/octet-stream", &b);
            }
            None => drop(res),
        }),
        "/stream" => {
            let _ = res.write(b"abc");
            let _ = res.flush();
            let _ = res.stderr(b"a warning");
            let _ = res.write(b"defgh");
            let _ = res.finish();
        }
        "/204" => {
            let _ = res.status(204);
            let _ = res.finish();
        }
        _ => {
            let _ = res.send(200, "text/plain", b"hello\n");
        }
    }
}

struct Harness {
    lp: Loop,
    srv: Server,
    path: PathBuf,
}

thread_local! {
    static H: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn with_harness<R>(f: impl FnOnce(&mut Harness) -> R) -> R {
    H.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| {
            let mut lp = Loop::new().expect("loop");
            let long = std::time::Duration::from_secs(600);
            let opts = ServerOptions {
                max_params: MAX_PARAMS,
                max_body: 4096,
                header_timeout: long,
                body_timeout: long,
                idle_timeout: long,
                write_timeout: long,
                ..Default::default()
            };
            let srv = lp.server(opts, handler);
            let path = crate::wire::socket_path("fcgi");
            srv.listen(&mut lp, crate::wire::bind(&path), Proto::Fcgi);
            Harness { lp, srv, path }
        });
        f(h)
    })
}

/// The input's events, up to the first decoding error.
fn input_events(stream: &[u8]) -> (Vec<RecordEvent>, bool) {
    let mut d = RecordDecoder::default();
    let mut evs = Vec::new();
    let mut i = 0;
    loop {
        match d.next(&stream[i..]) {
            Err(_) => return (evs, true),
            Ok((0, None)) => return (evs, false),
            Ok((n, ev)) => {
                i += n;
                evs.extend(ev);
            }
        }
    }
}

/// For a clean input: how many END_REQUESTs each id must get.
/// None when it cannot tell (params over the cap: the 431 ends the request when the
/// connection next collects output, so a BEGIN for the same id just after it may be ignored
/// or not depending on where the reads were cut).
fn clean_model(evs: &[RecordEvent]) -> Option<HashMap<u16, usize>> {
    #[derive(PartialEq)]
    enum St {
        Params(usize, Vec<u8>),
        Stdin,
    }
    let mut active: HashMap<u16, St> = HashMap::new();
    let mut ends: HashMap<u16, usize> = HashMap::new();
    let mut begun = std::collections::HashSet::new();
    for e in evs {
        match e {
            RecordEvent::Begin { id, .. } => {
                // A front end reuses an id only after its END_REQUEST, which this stream
                // cannot wait for: an id begun twice is not a clean input.
                if !begun.insert(*id) {
                    return None;
                }
                active.insert(*id, St::Params(0, Vec::new()));
            }
            RecordEvent::Stream {
                id,
                kind: PARAMS,
                data,
                end,
            } => {
                if let Some(St::Params(len, buf)) = active.get_mut(id) {
                    *len += data.len();
                    buf.extend_from_slice(data);
                    if *len > MAX_PARAMS {
                        return None;
                    } else if *end {
                        // The server reads the last REQUEST_URI.
                        let echo = fuzzing::nv_pairs(buf).is_some_and(|p| {
                            p.iter()
                                .rev()
                                .find(|(n, _)| n == b"REQUEST_URI")
                                .map(|x| &x.1[..])
                                == Some(b"/echo")
                        });
                        if echo {
                            active.insert(*id, St::Stdin);
                        } else {
                            active.remove(id);
                            *ends.entry(*id).or_default() += 1;
                        }
                    }
                }
            }
            RecordEvent::Stream {
                id,
                kind: STDIN,
                end: true,
                ..
            } if active.get(id) == Some(&St::Stdin) => {
                active.remove(id);
                *ends.entry(*id).or_default() += 1;
            }
            _ => {}
        }
    }
    Some(ends)
}

/// Runs `input` through a server; panics with a description on any broken invariant.
pub fn run(input: &Input) {
    let (stream, clean) = input.stream();
    let (evs, decode_error) = input_events(&stream);
    let pieces = crate::pieces(&stream, &input.cuts);
    let o = with_harness(|h| {
        let o = crate::wire::exchange(&mut h.lp, &h.path, &pieces);
        for _ in 0..10 {
            if h.srv.connection_count() == 0 {
                break;
            }
            h.lp.run_once_nowait().expect("loop");
        }
        assert_eq!(h.srv.connection_count(), 0, "a connection left open");
        o
    });
    let expect_ends = if clean && !decode_error {
        clean_model(&evs)
    } else {
        None
    };
    if let Err(e) = check(&evs, expect_ends, &o) {
        panic!("{e}\ninput events: {evs:?}\noutput: {:?}", o.output);
    }
}

fn check(
    evs: &[RecordEvent],
    expect_ends: Option<HashMap<u16, usize>>,
    o: &crate::wire::Outcome,
) -> Result<(), String> {
    if !o.closed {
        return Err("the server did not close after the client's EOF".into());
    }
    let mut begins: HashMap<u16, usize> = HashMap::new();
    let mut unknown = 0;
    let mut get_values = 0;
    for e in evs {
        match e {
            RecordEvent::Begin { id, .. } => *begins.entry(*id).or_default() += 1,
            RecordEvent::Other { id: 0, kind, .. } if *kind == GET_VALUES => get_values += 1,
            RecordEvent::Other { id: 0, .. } => unknown += 1,
            _ => {}
        }
    }
    let out = &o.output;
    let mut p = 0;
    let mut ends: HashMap<u16, usize> = HashMap::new();
    // Per id: whether STDOUT content has begun in the current exchange, and ended.
    let mut stdout: HashMap<u16, (bool, bool)> = HashMap::new();
    let (mut results, mut unknowns) = (0, 0);
    while p < out.len() {
        if out.len() - p < 8 {
            if o.reset {
                return Ok(());
            }
            return Err(format!("a record header cut short at {p}"));
        }
        let h = &out[p..p + 8];
        let (version, kind) = (h[0], h[1]);
        let id = u16::from_be_bytes([h[2], h[3]]);
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let pad = h[6] as usize;
        if version != 1 {
            return Err(format!("version {version} at {p}"));
        }
        if !(len + pad).is_multiple_of(8) || pad > 7 {
            return Err(format!("record at {p}: {len} bytes padded by {pad}"));
        }
        if out.len() - p < 8 + len + pad {
            if o.reset {
                return Ok(());
            }
            return Err(format!("record at {p} cut short"));
        }
        let content = &out[p + 8..p + 8 + len];
        p += 8 + len + pad;
        if id == 0 {
            match kind {
                GET_VALUES_RESULT => {
                    results += 1;
                    fuzzing::nv_pairs(content).ok_or("malformed GET_VALUES_RESULT")?;
                }
                UNKNOWN_TYPE => unknowns += 1,
                k => return Err(format!("record type {k} for id 0")),
            }
            continue;
        }
        let b = begins.get(&id).copied().unwrap_or(0);
        let e = ends.get(&id).copied().unwrap_or(0);
        if e >= b {
            return Err(format!(
                "type {kind} record for id {id}: begun {b} times, ended {e}"
            ));
        }
        let s = stdout.entry(id).or_insert((false, false));
        match kind {
            STDOUT if len == 0 => s.1 = true,
            STDOUT => {
                if s.1 {
                    return Err(format!("STDOUT for id {id} after its end"));
                }
                if !s.0 && !content.starts_with(b"Status: ") {
                    return Err(format!("id {id}: STDOUT without a Status head"));
                }
                s.0 = true;
            }
            STDERR => {}
            END => {
                if len != 8 {
                    return Err(format!("END_REQUEST of {len} bytes"));
                }
                if s.0 && !s.1 {
                    return Err(format!("id {id}: END_REQUEST before the end of STDOUT"));
                }
                *s = (false, false);
                *ends.entry(id).or_default() += 1;
            }
            k => return Err(format!("record type {k} for id {id}")),
        }
    }
    if results > get_values || unknowns > unknown {
        return Err(format!(
            "{results} GET_VALUES_RESULT for {get_values}, {unknowns} UNKNOWN_TYPE for {unknown}"
        ));
    }
    if let Some(want) = expect_ends {
        for (id, n) in &want {
            let got = ends.get(id).copied().unwrap_or(0);
            if got != *n {
                return Err(format!("id {id}: {got} END_REQUEST, {n} expected"));
            }
        }
        if let Some((id, _)) = ends.iter().find(|(id, _)| !want.contains_key(id)) {
            return Err(format!("id {id}: END_REQUEST for a request never complete"));
        }
    }
    Ok(())
}
