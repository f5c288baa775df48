//! Tests of `fuse_request`: the seeds reach the file system, the input format round-trips, the
//! corpus is current, and mutations, pseudo-random inputs and regressions replay without a panic.

use crate::cursor::Cursor;

use super::input::Session;
use super::{run, seeds, session, CORPUS_DIR};

fn corpus() -> Vec<(String, Vec<u8>)> {
    crate::replay::corpus_files(CORPUS_DIR)
}

/// The seeds mostly succeed, so the corpus starts inside the file system.
#[test]
fn seeds_reach_the_file_system() {
    for (name, input) in seeds() {
        let stats = session(&input).unwrap_or_else(|| panic!("{name}: no session"));
        println!("{name}: {stats:?}");
        if name == "malformed" || name == "dax_refused" {
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
    let seeds = seeds();
    crate::replay::mutations(seeds.iter().map(|(_, s)| s.as_slice()), Some(5), run);
}

/// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
#[test]
fn replays_pseudo_random_inputs() {
    crate::replay::pseudo_random(0xda94_2042_e4dd_58b5, 2000, 4, run);
}

/// Inputs that once crashed the target, kept in `regressions/fuse_request/` (may be absent).
/// Each file is replayed on its own and every failing one is listed.
#[test]
fn replays_regressions() {
    crate::replay::regressions("fuse_request", run);
}
