//! Test-only replay of fuzz inputs without a fuzzer, shared by every target's tests: corpus and
//! regression files, deterministic pseudo-random inputs, and prefixes and bit flips of seeds.
//!
//! It only feeds inputs to a target's `run`; the invariants are the target's.

use std::path::Path;

/// The files of a directory relative to the crate's manifest, sorted by name; empty when the
/// directory does not exist.
fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("file reads"))
        })
        .collect();
    files.sort();
    files
}

/// The files of a corpus directory (relative to the crate's manifest), sorted by name. The
/// directory must exist.
pub(crate) fn corpus_files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    assert!(path.is_dir(), "corpus {} is missing", path.display());
    files(dir)
}

/// Replays every file of `regressions/<target>/` (which may be absent), each on its own, and
/// fails listing every input that panics.
pub(crate) fn regressions(target: &str, run: fn(&[u8])) {
    let failed: Vec<_> = files(&format!("regressions/{target}"))
        .into_iter()
        .filter(|(name, input)| {
            println!("replaying {target}/{name}");
            std::panic::catch_unwind(|| run(input)).is_err()
        })
        .map(|(name, _)| name)
        .collect();
    assert!(failed.is_empty(), "failing regressions of {target}: {failed:?}");
}

/// Runs inputs of lengths `0, step, 2·step, ... < max_len` drawn from a xorshift generator
/// started at `seed`, so the same inputs replay on every run.
pub(crate) fn pseudo_random(seed: u64, max_len: usize, step: usize, run: impl Fn(&[u8])) {
    let mut state = seed;
    for len in (0..max_len).step_by(step) {
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

/// Runs every prefix of each input and, when `flip_step` is given, the input with every
/// `flip_step`-th bit flipped in turn.
pub(crate) fn mutations<'a>(
    inputs: impl IntoIterator<Item = &'a [u8]>,
    flip_step: Option<usize>,
    run: impl Fn(&[u8]),
) {
    for input in inputs {
        for len in 0..=input.len() {
            run(&input[..len]);
        }
        let Some(step) = flip_step else { continue };
        for bit in (0..input.len() * 8).step_by(step) {
            let mut flipped = input.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            run(&flipped);
        }
    }
}
