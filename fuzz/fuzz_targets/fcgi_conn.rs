//! The FastCGI connection state machine (core/src/fcgi/conn.rs) through a real server on
//! a loop: see myriad_fuzz::fcgi_conn for the invariants.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    myriad_fuzz::fcgi_conn::run(&myriad_fuzz::fcgi_conn::Input::from_fuzz(data));
});
