//! Handing freed heap memory back to the OS. glibc's allocator gives each busy thread an
//! arena and keeps what an arena once held: after a burst, such as a verification pass
//! over the whole audit log or a load peak, megabytes stay resident although free.
//! [`trim`] returns the free pages of every arena. The server's persist thread calls it
//! every second, so a burst's memory goes back within a second whichever thread freed it.
//! [`configure`], called once at start, keeps large buffers out of the arenas.
//!
//! The only `unsafe` in the crate: the declarations of two C functions that take
//! integers and no pointers.
#![allow(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    // SAFETY: the signatures are glibc's (<malloc.h>): `int malloc_trim(size_t pad)` and
    // `int mallopt(int param, int value)`. Neither takes a pointer; both are MT-Safe
    // (they take the arenas' locks).
    unsafe extern "C" {
        pub safe fn malloc_trim(pad: usize) -> c_int;
        pub safe fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// `M_MMAP_THRESHOLD` in <malloc.h>.
    pub const M_MMAP_THRESHOLD: c_int = -3;
}

/// Allocations of this size and more get pages of their own, returned when freed.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Gives allocations of [`MMAP_THRESHOLD`] bytes and more pages of their own, returned to
/// the OS when freed; `true` if the C library took the setting. Call it once, first.
///
/// glibc starts at 128 KiB but raises its threshold to the size of each such block freed,
/// so after sled freed its first 512 KiB log buffer (one per 512 KiB of log written),
/// every later one came from an arena and stayed there, free, until trimmed. A fixed
/// threshold also leaves glibc's trimming of an arena's top at its 128 KiB default.
/// Measured at 16 connections, batch audit, 8 alternating rounds: RSS after the point
/// 16.0 MB against 16.8 MB (medians; the peak within noise), and no more `mmap`,
/// `munmap` or `madvise` calls per request (strace).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn configure() -> bool {
    glibc::mallopt(glibc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as std::ffi::c_int) == 1
}

/// Does nothing where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() -> bool {
    false
}

/// Returns whole free pages of every heap arena to the OS; `true` if any went back.
/// Does nothing where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    glibc::malloc_trim(0) != 0
}

/// Returns whole free pages of every heap arena to the OS; `true` if any went back.
/// Does nothing where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    /// Resident set of this process in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Runs the test `name` again in a process of its own, with one test thread: other
    /// tests' threads would reuse freed space, and their allocations would move the
    /// figures. `true` in that process, where the test goes on; `false` in the parent,
    /// once the child passed.
    fn in_own_process(name: &str) -> bool {
        const CHILD: &str = "MEMORY_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        false
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_goes_back() {
        if !in_own_process("memory::tests::freed_memory_goes_back") {
            return;
        }
        // 32 MiB in 64 KiB blocks (below glibc's mmap threshold, so on the heap), with a
        // small block kept after each so the heap cannot shrink from its top: freeing the
        // big ones leaves them resident until trimmed.
        let mut big = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..512 {
            big.push(vec![1u8; 64 * 1024]);
            kept.push(vec![1u8; 16]);
        }
        drop(big);
        let before = rss_kib();
        assert!(super::trim());
        let after = rss_kib();
        assert!(after + 8 * 1024 < before, "{before} KiB -> {after} KiB");
        drop(kept);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn large_blocks_go_back_when_freed() {
        if !in_own_process("memory::tests::large_blocks_go_back_when_freed") {
            return;
        }
        assert!(super::configure());
        // A larger block freed first would raise glibc's own threshold to its size.
        drop(vec![1u8; 4 << 20]);
        // 38 MiB in 600 KiB blocks, a small block kept after each: without pages of
        // their own, freeing them would leave them resident until trimmed.
        let mut big = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..64 {
            big.push(vec![1u8; 600 * 1024]);
            kept.push(vec![1u8; 16]);
        }
        let before = rss_kib();
        drop(big);
        let after = rss_kib();
        assert!(after + 32 * 1024 < before, "{before} KiB -> {after} KiB");
        drop(kept);
    }
}
