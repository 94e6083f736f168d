//! Replays the committed fuzz corpora and past findings (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the same invariant checks the cargo-fuzz
//! targets run, plus a short deterministic mutation pass over the seeds. Campaigns run
//! outside CI with cargo-fuzz (see the README); this keeps every finding fixed.

use std::path::PathBuf;

use mreg_wire::fuzzing;

/// A fuzz target: its corpus folder name and its invariant check.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("jsonrpc", fuzzing::jsonrpc),
    ("framing", fuzzing::framing),
    ("http_head", fuzzing::http_head),
    ("chunked", fuzzing::chunked),
    ("query", fuzzing::query_filter),
    ("query_eval", fuzzing::query_eval),
    ("jwt", fuzzing::jwt),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
}

#[test]
fn corpora_and_regressions_replay_cleanly() {
    for (target, check) in TARGETS {
        let seeds = fuzzing::replay_dir(&fuzz_dir().join("corpus").join(target), *check);
        assert!(seeds > 0, "no seed corpus for {target}");
        fuzzing::replay_dir(&fuzz_dir().join("regressions").join(target), *check);
    }
}

#[test]
fn mutated_seeds_keep_the_invariants() {
    // Deterministic, so a failure here reproduces exactly.
    let mut rng = fuzzing::Rng::new(0x9E37_79B9_7F4A_7C15);
    for (target, check) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let seed = std::fs::read(entry.path()).unwrap();
            for _ in 0..300 {
                let mut data = seed.clone();
                for _ in 0..1 + rng.next_u64() % 4 {
                    let r = rng.next_u64();
                    let pos = (r as usize) % (data.len() + 1);
                    match r % 4 {
                        0 if !data.is_empty() => {
                            data.remove(pos.min(data.len() - 1));
                        }
                        1 => data.insert(pos, (r >> 8) as u8),
                        2 if !data.is_empty() => {
                            let p = pos.min(data.len() - 1);
                            const BYTES: &[u8] = b"{}[]\",:\r\n 0aZ'()=\\\x00\xff";
                            data[p] = BYTES[(r >> 16) as usize % BYTES.len()];
                        }
                        _ => data.extend_from_within(..pos),
                    }
                }
                let name = format!("{target} mutation of {}", entry.path().display());
                let result = std::panic::catch_unwind(|| check(&data));
                assert!(
                    result.is_ok(),
                    "{name} broke an invariant on input {:?}",
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }
}
