//! Link the `perps-bot` binary with packed relative relocations (DT_RELR) when that is safe: the
//! binary is position-independent, and its ~32,000 relative relocations take 770 KB as RELA
//! entries that the loader reads in full at every start (and every bot pod keeps resident),
//! against 10 KB as RELR.
//!
//! A RELR binary needs glibc 2.36 or later at run time (the `GLIBC_ABI_DT_RELR` version), and
//! rust-lld adds that requirement without looking at the glibc it links against. So the flag is
//! given only for a native Linux/glibc build whose own glibc is 2.36 or later (the binary then
//! runs where it was built, and the images copy the build host's glibc), and not with gold,
//! which rejects the option. `PERPS_BOT_NO_RELR=1` turns it off, e.g. to build for an older
//! glibc than the build host's.
use std::process::Command;

/// The first glibc that applies DT_RELR.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PERPS_BOT_NO_RELR");
    if relr_is_safe() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

fn relr_is_safe() -> bool {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let native = env("TARGET") == env("HOST");
    let linux_gnu = env("CARGO_CFG_TARGET_OS") == "linux" && env("CARGO_CFG_TARGET_ENV") == "gnu";
    let gold = env("CARGO_ENCODED_RUSTFLAGS").contains("gold");
    let opted_out = std::env::var_os("PERPS_BOT_NO_RELR").is_some_and(|v| v != "0");
    native && linux_gnu && !gold && !opted_out && host_glibc().is_some_and(|v| v >= RELR_GLIBC)
}

/// The build host's glibc version, as `getconf GNU_LIBC_VERSION` prints it ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let output = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
