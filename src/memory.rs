//! Handing freed heap memory back to the OS. glibc's allocator gives each busy thread an
//! arena and keeps what an arena once held: after a burst, such as a verification pass
//! over the whole audit log or a load peak, megabytes stay resident although free.
//! [`trim`] returns the free pages of every arena. The server's persist thread calls it
//! every second, so a burst's memory goes back within a second whichever thread freed it.
//!
//! The only `unsafe` in the crate: the declaration of one C function that takes an
//! integer and no pointers.
#![allow(unsafe_code)]

/// Returns whole free pages of every heap arena to the OS; `true` if any went back.
/// Does nothing where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: the signature is glibc's (`int malloc_trim(size_t pad)`, <malloc.h>). It
    // takes no pointers and is MT-Safe: it takes each arena's lock in turn.
    unsafe extern "C" {
        safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    malloc_trim(0) != 0
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

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_goes_back() {
        // In a process of its own: other tests' threads would reuse the freed space, and
        // their allocations would move the figure.
        const CHILD: &str = "MEMORY_TRIM_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["memory::tests::freed_memory_goes_back", "--exact"])
                .args(["--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
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
}
