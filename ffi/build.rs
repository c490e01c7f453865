//! Generates the C header with cbindgen (into OUT_DIR; with MYRIAD_WRITE_HEADER=1 also
//! into include/myriad.h, which is committed and checked by tests/header.rs), and gives
//! the shared library a soname carrying the ABI major version.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let out = std::env::var("OUT_DIR").unwrap();
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=MYRIAD_WRITE_HEADER");
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmyriad.so.{major}");
    let cfg = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let h = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(cfg)
        .generate()
        .expect("generating myriad.h");
    h.write_to_file(format!("{out}/myriad.h"));
    if std::env::var("MYRIAD_WRITE_HEADER").is_ok_and(|v| v == "1") {
        h.write_to_file(format!("{dir}/../include/myriad.h"));
    }
}
