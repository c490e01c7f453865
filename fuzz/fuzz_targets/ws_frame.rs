//! The WebSocket frame codec and receiving rules (core/src/ws/frame.rs, reader.rs,
//! deflate.rs): see fuzz/src/ws_frame.rs for what is checked.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| myriad_fuzz::ws_frame::run(data));
