//! The HTTP connection state machine (core/src/http/conn.rs) through a real server on a
//! loop: see myriad_fuzz::http_conn for the invariants.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    myriad_fuzz::http_conn::run(&myriad_fuzz::http_conn::Input::from_fuzz(data));
});
