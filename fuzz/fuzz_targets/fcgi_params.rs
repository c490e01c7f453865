//! FastCGI name-value pairs: pairs encoded (1- and 4-byte lengths, long and empty names
//! and values) parse back to themselves; lengths near 0x7fffffff (fcgi2 CVE-2025-23016)
//! or past the data are rejected cleanly, never an overflow or a huge allocation; raw
//! bytes never panic, and what parses re-encodes to something that parses the same.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myriad::fuzzing::{nv_pairs, put_pair};

#[derive(Arbitrary, Debug)]
enum Item {
    Pair {
        name: Vec<u8>,
        value: Vec<u8>,
        long_name: bool,
        long_value: bool,
        pad_to: u16,
    },
    /// A pair whose declared lengths are not the data's.
    Lie {
        name_len: u32,
        value_len: u32,
        data: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<Item>,
    raw: Option<Vec<u8>>,
}

fn len4(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&(n | 0x8000_0000).to_be_bytes());
}

fuzz_target!(|inp: Input| {
    if let Some(raw) = &inp.raw {
        if let Some(p) = nv_pairs(raw) {
            let total: usize = p.iter().map(|(n, v)| n.len() + v.len()).sum();
            assert!(total <= raw.len());
            let mut again = Vec::new();
            for (n, v) in &p {
                put_pair(&mut again, n, v);
            }
            assert_eq!(nv_pairs(&again), Some(p));
        }
        return;
    }
    let mut buf = Vec::new();
    let mut want = Vec::new();
    let mut lie = false;
    for it in &inp.items {
        match it {
            Item::Pair {
                name,
                value,
                long_name,
                long_value,
                pad_to,
            } => {
                // Lengths past 127 too: pad the value out to `pad_to % 300` bytes.
                let mut value = value.clone();
                let target = *pad_to as usize % 300;
                if value.len() < target {
                    value.resize(target, b'v');
                }
                for (b, long) in [(name, long_name), (&value, long_value)] {
                    if *long || b.len() > 127 {
                        len4(&mut buf, b.len() as u32);
                    } else {
                        buf.push(b.len() as u8);
                    }
                }
                buf.extend_from_slice(name);
                buf.extend_from_slice(&value);
                want.push((name.clone(), value));
            }
            Item::Lie {
                name_len,
                value_len,
                data,
            } => {
                // Near 2^31 - 1, or just past the data.
                let big = |x: u32| {
                    if x & 1 == 1 {
                        0x7fff_ffff - (x >> 16)
                    } else {
                        x >> 1
                    }
                };
                let (nl, vl) = (big(*name_len) & 0x7fff_ffff, big(*value_len) & 0x7fff_ffff);
                len4(&mut buf, nl);
                len4(&mut buf, vl);
                buf.extend_from_slice(data);
                if (nl as u64 + vl as u64) > data.len() as u64 {
                    lie = true;
                }
                break; // what follows would be read as its data
            }
        }
    }
    let got = nv_pairs(&buf);
    if lie {
        assert_eq!(got, None, "declared lengths past the data");
    } else if !inp.items.iter().any(|i| matches!(i, Item::Lie { .. })) {
        assert_eq!(got, Some(want));
    }
});
