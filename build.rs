//! Link-time settings for the server binaries.
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
