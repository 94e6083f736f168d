//! Link-time settings for the server binaries: packed relocations and the order of
//! functions (below).
//!
//! On glibc 2.36 or newer, relative relocations are packed (`DT_RELR`): the table the
//! dynamic loader walks at start-up shrinks from ~190 KB to ~2 KB, which makes the
//! binary smaller and keeps those pages out of the resident set. Older glibc cannot
//! load such a binary, so the flag is only passed when the build machine's glibc (the
//! one the binary links against) supports it; a binary built here needs glibc 2.36 or
//! newer wherever it runs, as any binary needs the glibc it was built against.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    let native = env::var("HOST") == env::var("TARGET");
    if linux_gnu && native && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    symbol_order();
}

/// The functions a running server executes go first in the binary's code
/// (`link/mreg.order`, written by `scripts/symbol-order`), so the pages it touches are
/// few and contiguous: idle RSS measured 6.1 MiB without, 4.4 MiB with. Only on
/// x86_64 Linux, where rustc links with its own lld, and not when the build names
/// another linker (GNU ld has no such option). Names missing from the file, or
/// from the binary, only leave code where it was.
fn symbol_order() {
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/mreg.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let lld_by_default = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let other_linker = env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld");
    if lld_by_default && !other_linker && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the build machine's glibc is `major.minor` or newer (`getconf GNU_LIBC_VERSION`
/// prints e.g. "glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
