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
//!
//! An optimised build also places the functions a replay runs (bot/replay-code/functions.txt,
//! see generate.py there) first in the text, through a linker script that only adds one output
//! section before `.text` (`INSERT BEFORE`): the kernel maps code 64 KiB around each page that
//! runs, so code spread over the whole 14 MB text kept about 4.7 MB resident in a replay, packed
//! about 1.5 MB (the section, whose patterns also catch a generic's other instances, and the
//! pages start-up touches elsewhere). Names missing from the binary match nothing; the order never changes
//! behaviour. Not with gold or mold (no `INSERT` there); `PERPS_BOT_NO_CODE_ORDER=1` turns it
//! off.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first glibc that applies DT_RELR.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PERPS_BOT_NO_RELR");
    println!("cargo:rerun-if-env-changed=PERPS_BOT_NO_CODE_ORDER");
    println!("cargo:rerun-if-changed={REPLAY_FUNCTIONS}");
    if relr_is_safe() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if code_order_wanted() {
        match replay_code_script() {
            // Two arguments, not `-Wl,`: a comma in the target directory's path would split it.
            Ok(script) => {
                println!("cargo:rustc-link-arg-bins=-Xlinker");
                println!("cargo:rustc-link-arg-bins=--script={}", script.display());
            }
            Err(error) => println!(
                "cargo:warning=replay code order left out ({REPLAY_FUNCTIONS}: {error}); PERPS_BOT_NO_CODE_ORDER=1 silences this"
            ),
        }
    }
}

/// The functions a replay runs, one name pattern per line (generated; see generate.py).
const REPLAY_FUNCTIONS: &str = "replay-code/functions.txt";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn opted_out(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

/// Whether the link goes through `linker` (gold, mold): chosen by a rustflag (`-fuse-ld=gold`,
/// `--ld-path=/usr/bin/mold`, `-C linker=ld.gold`) or as the target's linker (`RUSTC_LINKER`,
/// which cargo sets from `[target.*].linker` or `CARGO_TARGET_*_LINKER`). Whole words only, so a
/// `-C target-cpu=goldmont` is not gold.
fn links_with(linker: &str) -> bool {
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    let rustc_linker = env("RUSTC_LINKER");
    flags.split('\x1f').chain([rustc_linker.as_str()]).any(|arg| {
        arg.split(['=', ',', '/', ' '])
            .any(|word| word == linker || word == format!("ld.{linker}") || word == format!("ld64.{linker}"))
    })
}

fn gold() -> bool {
    links_with("gold")
}

/// mold reads no linker scripts with `SECTIONS`.
fn mold() -> bool {
    links_with("mold")
}

fn code_order_wanted() -> bool {
    let linux = env("CARGO_CFG_TARGET_OS") == "linux";
    linux && env("OPT_LEVEL") != "0" && !gold() && !mold() && !opted_out("PERPS_BOT_NO_CODE_ORDER")
}

/// Write the linker script placing the listed functions' sections first; returns its path.
fn replay_code_script() -> std::io::Result<PathBuf> {
    let list = std::fs::read_to_string(REPLAY_FUNCTIONS)?;
    let script = Path::new(&env("OUT_DIR")).join("replay-code.ld");
    std::fs::write(&script, linker_script(&list))?;
    Ok(script)
}

/// One output section of the listed functions (their `.text.*<symbol>` input sections, as
/// `-ffunction-sections` and rustc name them), inserted before the default `.text`.
fn linker_script(list: &str) -> String {
    let mut script = String::from("SECTIONS\n{\n  .text.replay :\n  {\n");
    let patterns = list
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    for pattern in patterns {
        // Mangled names and `*`, nothing a linker script reads as syntax (`#`, `/*`, `,`, `[`).
        if !pattern.chars().all(|c| c.is_ascii_alphanumeric() || "_.$*".contains(c)) {
            println!("cargo:warning={REPLAY_FUNCTIONS}: skipped {pattern:?}: only letters, digits and _ . $ *");
            continue;
        }
        // LLVM names a cold function's section `.text.unlikely.<symbol>`, a start-up one's
        // `.text.startup.<symbol>`.
        let sections = ["", "unlikely.", "startup.", "hot."].map(|prefix| format!(".text.{prefix}{pattern}"));
        script.push_str(&format!("    *({})\n", sections.join(" ")));
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    script
}

fn relr_is_safe() -> bool {
    let native = env("TARGET") == env("HOST");
    let linux_gnu = env("CARGO_CFG_TARGET_OS") == "linux" && env("CARGO_CFG_TARGET_ENV") == "gnu";
    native && linux_gnu && !gold() && !opted_out("PERPS_BOT_NO_RELR") && host_glibc().is_some_and(|v| v >= RELR_GLIBC)
}

/// The build host's glibc version, as `getconf GNU_LIBC_VERSION` prints it ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let output = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
