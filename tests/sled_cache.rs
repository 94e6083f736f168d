//! sled's page cache (vendored and patched, see `vendor/sled/PATCHES.md` item 12) keeps
//! what it caches near its capacity when a tree is read from end to end, as mreg's
//! audit verification does. Before the patch a shard counted accesses only 64 at a time,
//! so a full pass left hundreds of pages cached, uncounted, until the next pass.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

/// Anonymous resident memory of this process in KiB (the test binary holds this test
/// alone, so no other test's allocations move it).
fn rss_anon_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn reading_a_whole_tree_keeps_the_cache_near_its_capacity() {
    let dir: PathBuf =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sled-cache-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    // 48 MiB in 6 KiB values under ascending keys, as the audit log stores its blocks.
    const VALUES: u64 = 8192;
    {
        let db = common::open_sled(&dir, Some(1 << 20));
        let tree = db.open_tree("log").unwrap();
        for i in 0..VALUES {
            tree.insert(i.to_be_bytes(), vec![(i % 251) as u8; 6 * 1024])
                .unwrap();
        }
        db.flush().unwrap();
    }
    // Reopened, nothing of the tree is cached.
    let db = common::open_sled(&dir, Some(1 << 20));
    let tree = db.open_tree("log").unwrap();
    let before = rss_anon_kib();
    let mut read = 0;
    for item in tree.iter() {
        let (k, v) = item.unwrap();
        let i = u64::from_be_bytes(k.as_ref().try_into().unwrap());
        assert_eq!(v.len(), 6 * 1024);
        assert_eq!(v[0], (i % 251) as u8);
        read += 1;
    }
    assert_eq!(read, VALUES);
    let grown_mib = rss_anon_kib().saturating_sub(before) / 1024;
    drop(tree);
    drop(db);
    let _ = fs::remove_dir_all(&dir);
    // Measured: 2 MiB (a 1 MiB cache, and freed memory the allocator still holds),
    // against 32 MiB before the patch.
    assert!(
        grown_mib < 16,
        "reading 48 MiB through a 1 MiB cache left {grown_mib} MiB more resident"
    );
}
