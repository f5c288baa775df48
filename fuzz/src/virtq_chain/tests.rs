//! Tests of `virtq_chain`: the seeds reach the chains, the input format round-trips, the corpus
//! is current, and mutations, pseudo-random inputs and regressions replay without a panic.

use crate::cursor::Cursor;

use super::input::{encode, Config, Op};
use super::{run, seeds, session, CORPUS_DIR};

fn corpus() -> Vec<(String, Vec<u8>)> {
    crate::replay::corpus_files(CORPUS_DIR)
}

/// Each seed builds a queue and pops the chains it was written for.
#[test]
fn seeds_reach_the_chains() {
    for (name, input) in seeds() {
        let stats = session(&input).unwrap_or_else(|| panic!("{name}: no queue"));
        if name.ends_with("malformed") {
            assert!(stats.bad_chains >= 2, "{name}: {stats:?}");
        } else if name != "segments_edges" {
            assert!(stats.chains >= 2, "{name}: {stats:?}");
            assert_eq!(stats.bad_chains, 0, "{name}: {stats:?}");
        }
    }
}

/// Decoding gives back what was encoded.
#[test]
fn input_format_round_trips() {
    for (name, input) in seeds() {
        let mut c = Cursor::new(&input);
        let config = Config::decode(&mut c).expect("config");
        let mut ops = Vec::new();
        while !c.is_empty() {
            ops.push(Op::decode(&mut c).unwrap_or_else(|| panic!("{name}: truncated op")));
        }
        assert_eq!(encode(&config, &ops), input, "{name}");
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
    crate::replay::mutations(seeds.iter().map(|(_, s)| s.as_slice()), Some(7), run);
}

/// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
#[test]
fn replays_pseudo_random_inputs() {
    crate::replay::pseudo_random(0x853c_49e6_748f_ea9b, 1500, 3, run);
}

/// Inputs that once crashed the target, kept in `regressions/virtq_chain/` (may be absent).
#[test]
fn replays_regressions() {
    crate::replay::regressions("virtq_chain", run);
}
