//! The C ABI over the `myriad` crate (extern "C" functions only). The full API arrives with
//! the C ABI issue; this crate already builds the shared and static libraries.

use std::ffi::c_char;

/// The library version as a NUL-terminated static string, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn myriad_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
