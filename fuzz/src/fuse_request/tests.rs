//! Tests of `fuse_request`: the seeds reach the file system, the input format round-trips, the
//! corpus is current, and mutations, pseudo-random inputs and regressions replay without a panic.

use crate::cursor::Cursor;

use super::input::Session;
use super::{run, seeds, session, CORPUS_DIR};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CORPUS_DIR);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus file reads"))
        })
        .collect();
    files.sort();
    files
}

/// The seeds mostly succeed, so the corpus starts inside the file system.
#[test]
fn seeds_reach_the_file_system() {
    for (name, input) in seeds() {
        let stats = session(&input).unwrap_or_else(|| panic!("{name}: no session"));
        println!("{name}: {stats:?}");
        if name == "malformed" {
            assert!(stats.errors >= 5, "{name}: {stats:?}");
        } else {
            assert!(stats.ok >= 7 && stats.ok > 2 * stats.errors, "{name}: {stats:?}");
        }
    }
}

/// Decoding gives back what was encoded.
#[test]
fn input_format_round_trips() {
    for (name, input) in seeds() {
        let session = Session::decode(&mut Cursor::new(&input)).expect("decodes");
        assert_eq!(session.encode(), input, "{name}");
    }
}

/// The corpus holds exactly the current seeds; `cargo run -p vhu-fuzz --example write_corpus`
/// rewrites it.
#[test]
fn corpus_matches_seeds() {
    let mut expected: Vec<_> =
        seeds().into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
    expected.sort();
    assert_eq!(corpus(), expected, "corpus is stale: run the write_corpus example");
}

/// Every prefix and a few bit flips of every seed.
#[test]
fn replays_mutations_of_seeds() {
    for (_, input) in seeds() {
        for len in 0..=input.len() {
            run(&input[..len]);
        }
        for bit in (0..input.len() * 8).step_by(5) {
            let mut flipped = input.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            run(&flipped);
        }
    }
}

/// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
#[test]
fn replays_pseudo_random_inputs() {
    let mut state = 0xda94_2042_e4dd_58b5u64;
    for len in (0..2000).step_by(4) {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        run(&bytes);
    }
}

/// Inputs that once crashed the target, kept in `regressions/fuse_request/` (may be absent).
/// Each file is replayed on its own and every failing one is listed.
#[test]
fn replays_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/fuse_request");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.map(|e| e.expect("directory entry").path()).collect();
    paths.sort();
    let failed: Vec<_> = paths
        .iter()
        .filter(|path| {
            println!("replaying {}", path.display());
            let input = std::fs::read(path).expect("regression file reads");
            std::panic::catch_unwind(|| run(&input)).is_err()
        })
        .collect();
    assert!(failed.is_empty(), "failing regressions: {failed:?}");
}
