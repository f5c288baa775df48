//! Tests of `backend_session`: the seeds reach the states they were written for, scripts
//! round-trip, the corpus is current, and pseudo-random inputs replay without a panic.

use vhu_core::VringIndex;

use super::script::{decode, encode};
use super::seeds::scripts;
use super::{play, run, seeds, Session, CORPUS_DIR};
use crate::cursor::SCRIPT;
use crate::replay::corpus_files;

fn started(s: &Session, index: u8) -> bool {
    s.backend.vring_state(VringIndex(index)).is_some_and(|r| r.started)
}

/// Each seed decodes into its script and leaves the back-end where the script leads.
#[test]
fn seeds_reach_their_states() {
    for (name, input) in seeds() {
        assert_eq!(input[0], SCRIPT);
        let s = play(decode(&input[1..]));
        assert!(!s.closed, "{name}: closed");
        // RESET_DEVICE drops the acked features; every other seed keeps them.
        let reset = name == "config_status_reset";
        assert_eq!(s.backend.acked_features().is_some(), !reset, "{name}: acked features");
        match name {
            "qemu_rings_running" | "restore_reply_ack" | "log_inflight_channel" => {
                assert!(started(&s, 0), "{name}: ring 0 not started");
                let second = name != "log_inflight_channel";
                assert_eq!(started(&s, 1), second, "{name}: ring 1");
                assert_eq!(s.backend.regions().len(), 1, "{name}: regions");
            }
            "qemu_start_stop" | "device_state_save" => {
                assert_eq!(s.started.get(&0), Some(&false), "{name}: ring 0 never stopped");
                assert_eq!(s.started.get(&1), Some(&false), "{name}: ring 1 never stopped");
            }
            "hotplug_add_mem_reg" => assert_eq!(s.backend.regions().len(), 2, "{name}"),
            "config_status_reset" => assert!(!started(&s, 0), "{name}"),
            other => panic!("no expectation for seed {other}"),
        }
    }
}

/// Decoding an encoded script gives the script back.
#[test]
fn scripts_round_trip() {
    for (name, ops) in scripts() {
        let again = decode(&encode(&ops)[1..]);
        assert_eq!(format!("{again:?}"), format!("{ops:?}"), "{name}");
    }
}

/// Inputs that once failed the target, kept in `regressions/backend_session/`.
#[test]
fn replays_regressions() {
    crate::replay::regressions("backend_session", run);
}

/// Every file of the seed corpus goes through the target without a fuzzer.
#[test]
fn replays_corpus() {
    let files = corpus_files(CORPUS_DIR);
    assert!(!files.is_empty(), "the seed corpus is empty");
    for (_, bytes) in files {
        run(&bytes);
    }
}

/// The corpus holds exactly the current seeds; `cargo run -p vhu-fuzz --example write_corpus`
/// rewrites it.
#[test]
fn corpus_matches_seeds() {
    let mut expected: Vec<_> =
        seeds().into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
    expected.sort();
    assert_eq!(corpus_files(CORPUS_DIR), expected, "corpus is stale: run the write_corpus example");
}

/// Every prefix of every seed.
#[test]
fn replays_prefixes_of_seeds() {
    let seeds = seeds();
    crate::replay::mutations(seeds.iter().map(|(_, s)| s.as_slice()), None, run);
}

/// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
#[test]
fn replays_pseudo_random_sessions() {
    crate::replay::pseudo_random(0x2545_f491_4f6c_dd1d, 600, 3, run);
}

/// An empty table while postcopy listens gets the postcopy form of the reply, whose bytes are
/// the `u64` ack's, and only that reply with NEED_REPLY set; the front-end's acknowledgement
/// then keeps the session going.
#[test]
fn an_empty_table_while_postcopy_listens_is_answered_once() {
    use super::{Comp, Op, Req};
    let pagefault = vhu_core::ProtocolFeatures::PAGEFAULT | vhu_core::ProtocolFeatures::REPLY_ACK;
    let pagefault = u32::try_from(pagefault.bits()).expect("fits 32 bits");
    for need_reply in [false, true] {
        let s = play(vec![
            Op::Request(Req::SetProtocolFeatures(pagefault), false),
            Op::Request(Req::PostcopyAdvise, false),
            Op::Complete(Comp::Userfaultfd(true)),
            Op::Request(Req::PostcopyListen, true),
            Op::Complete(Comp::Ok),
            Op::Request(Req::SetMemTable(Vec::new()), need_reply),
            Op::Request(Req::PostcopyAck, false),
            Op::Request(Req::PostcopyEnd, false),
            Op::Complete(Comp::Ok),
        ]);
        assert!(!s.closed, "NEED_REPLY {need_reply}: the session went on");
    }
}
