//! Link the `perps-bot` binary with packed relative relocations (DT_RELR) where the target is
//! Linux with glibc: the binary is position-independent, and its ~32,000 relative relocations
//! take 770 KB as RELA entries that the loader reads in full at every start (and every bot pod
//! keeps resident), against 10 KB as RELR. The linker emits RELR only when the glibc it links
//! against can apply it (2.36 and later, which then becomes the binary's floor, as the symbols
//! it links against already set one); an older linker ignores the option with a warning.
fn main() {
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let glibc = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && glibc {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
