//! Replays of the pair target: deterministic pseudo-random sessions and the kept regressions.

use super::*;

/// Makes each call, lets everything move with fitting successes, and checks the two sides
/// agree after each.
fn in_sync_after_each(pair: &mut Pair, calls: impl IntoIterator<Item = Vmm>) {
    let mut none = Unstructured::new(&[]);
    for call in calls {
        let drained = call.apply(&mut pair.frontend, &mut pair.fe, None);
        pair.take(drained);
        pair.pump(&mut none);
        assert!(pair.in_sync && !pair.closed, "after a correct call the pair is in sync");
        pair.check_views();
    }
}

/// A correct session through the harness itself, every answer the fitting success: the
/// views are compared and agree.
#[test]
fn a_correct_session_keeps_the_views_in_sync() {
    let device = Device { queues: 1, toggle: 0, features: 0, config_size: 16, slots: 8 };
    // No device features, the default protocol features, bit 30 wanted.
    let bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let config = Config::arbitrary(&mut Unstructured::new(&bytes)).expect("config");
    let mut pair = Pair::new(device.spec(), config.build()).expect("valid spec");
    let calls = [
        Vmm::Connect(true),
        Vmm::SetMemTable(vec![(0, 4), (1, 4)]),
        Vmm::AddRegion(2, 4),
        Vmm::GetConfig(2, 8),
        Vmm::SetLogging(true),
        Vmm::StartVring(
            0,
            Ring { size: 8, raw_size: 0, base: 5, log: false, call: true, kick: true },
        ),
        Vmm::StopVring(0),
        Vmm::StartVring(
            0,
            Ring { size: 8, raw_size: 0, base: 9, log: true, call: true, kick: false },
        ),
        Vmm::SetDeviceStateFd(vhu_core::message::TransferDirection::Save),
        Vmm::GetStatus,
    ];
    in_sync_after_each(&mut pair, calls);
    assert_eq!(pair.backend.regions().len(), 3);
    assert!(pair.frontend.is_vring_started(VringIndex(0)));
    assert!(pair.backend.vring_state(VringIndex(0)).is_some_and(|s| s.started));
    assert!(pair.frontend.is_logging());
    pair.fe.finish(&mut pair.frontend);
    pair.be.assert_balanced();
}

/// Postcopy through the harness: the driver maps and registers a table at bases of its own when
/// the back-end waits for that, and both sides stay in step through the acknowledgement.
#[test]
fn a_postcopy_episode_keeps_the_views_in_sync() {
    let swap = ProtocolFeatures::PAGEFAULT | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
    let toggle = swap.bits() as u32;
    let device = Device { queues: 1, toggle, features: 0, config_size: 16, slots: 8 };
    let config = Config { device_features: 1 << 32, toggle, protocol_features: true };
    let mut pair = Pair::new(device.spec(), config.build()).expect("valid spec");
    let calls = [
        Vmm::Connect(true),
        Vmm::PostcopyAdvise,
        Vmm::PostcopyListen,
        Vmm::SetMemTable(vec![(0, 4), (1, 4)]),
        Vmm::GetStatus,
        Vmm::PostcopyEnd,
        Vmm::SetMemTable(vec![(2, 4)]),
    ];
    in_sync_after_each(&mut pair, calls);
    let acked = pair.frontend.negotiated().expect("connected").protocol_features;
    assert!(acked.contains(ProtocolFeatures::PAGEFAULT), "{acked:?}");
    assert_eq!(pair.backend.regions().len(), 1);
    pair.fe.finish(&mut pair.frontend);
    pair.be.assert_balanced();
}

/// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
#[test]
fn replays_pseudo_random_sessions() {
    crate::replay::pseudo_random(0xd1b5_4a32_d192_ed03, 1200, 5, run);
}

/// Inputs that once crashed the target, kept in `regressions/frontend_backend_pair/` (may be
/// absent).
#[test]
fn replays_regressions() {
    crate::replay::regressions("frontend_backend_pair", run);
}

/// Each seed decodes into its script and leaves both sides where the script leads, in sync.
#[test]
fn seeds_reach_their_states() {
    for (name, input) in seeds() {
        assert_eq!(input[0], SCRIPT);
        let (device, config, ops) = script::decode(&input[1..]).expect("seed decodes");
        let pair = script::play(&device, &config, ops).expect("valid device");
        assert!(pair.in_sync && !pair.closed, "{name}: out of sync or closed");
        assert!(pair.fe.connected, "{name}: not connected");
        let started = |i| {
            let index = VringIndex(i);
            let backend = pair.backend.vring_state(index).is_some_and(|s| s.started);
            assert_eq!(pair.frontend.is_vring_started(index), backend, "{name}: ring {i}");
            backend
        };
        match name {
            "qemu_rings_running" | "restore_reply_ack" | "setup_config_channel" => {
                assert!(started(0) && started(1), "{name}: rings not started");
                assert_eq!(pair.backend.regions().len(), 1, "{name}: regions");
            }
            "qemu_start_stop" | "device_state_save" => {
                assert!(!started(0) && !started(1), "{name}: rings not stopped");
            }
            "hotplug_add_mem_reg" => assert_eq!(pair.backend.regions().len(), 2, "{name}"),
            other => panic!("no expectation for seed {other}"),
        }
        if name == "restore_reply_ack" {
            let negotiated = pair.frontend.negotiated().expect("restored");
            assert!(negotiated.protocol_features.contains(ProtocolFeatures::REPLY_ACK));
            assert!(pair.restored);
        }
        if name == "setup_config_channel" {
            assert!(pair.frontend.is_logging(), "{name}: not logging");
        }
        pair.finish();
    }
}

/// Decoding an encoded script gives the script back.
#[test]
fn scripts_round_trip() {
    for (name, ops) in seeds::scripts() {
        let input = script::encode(&seeds::device(), &seeds::config(), &ops);
        let (_, _, again) = script::decode(&input[1..]).expect("decodes");
        assert_eq!(format!("{again:?}"), format!("{ops:?}"), "{name}");
    }
}

/// Every file of the seed corpus goes through the target without a fuzzer.
#[test]
fn replays_corpus() {
    let files = crate::replay::corpus_files(CORPUS_DIR);
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
    let files = crate::replay::corpus_files(CORPUS_DIR);
    assert_eq!(files, expected, "corpus is stale: run the write_corpus example");
}

/// Every prefix of every seed.
#[test]
fn replays_prefixes_of_seeds() {
    let seeds = seeds();
    crate::replay::mutations(seeds.iter().map(|(_, s)| s.as_slice()), None, run);
}

/// A front-end without REPLY_ACK sends each ring's whole set-up at once and a back-end refuses
/// the set-up of rings it does not have without a word: a long input leaves hundreds of
/// messages queued, and one pump moves them all (it used to count that as never settling).
#[test]
fn a_long_backlog_settles_in_one_pump() {
    let device = Device { queues: 1, toggle: 0, features: 0, config_size: 16, slots: 8 };
    let config = Config { device_features: 0, toggle: 0, protocol_features: false };
    let mut pair = Pair::new(device.spec(), config.build()).expect("valid spec");
    let mut none = Unstructured::new(&[]);
    let drained = Vmm::Connect(true).apply(&mut pair.frontend, &mut pair.fe, None);
    pair.take(drained);
    pair.pump(&mut none);
    let ring = Ring { size: 3, raw_size: 0, base: 0, log: false, call: true, kick: true };
    for index in 0..120 {
        let drained =
            Vmm::StartVring(index, ring.clone()).apply(&mut pair.frontend, &mut pair.fe, None);
        pair.take(drained);
    }
    assert!(pair.to_backend.len() > MAX_PUMP_STEPS, "{} queued", pair.to_backend.len());
    pair.settle(&mut none);
    assert!(pair.to_backend.is_empty() && pair.to_frontend.is_empty());
}
