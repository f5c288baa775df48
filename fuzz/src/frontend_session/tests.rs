use super::*;
use crate::frontend_model::Ev;

fn fit() -> Rep {
    Rep::Fit(Fit { status: 0, value: u64::MAX, small: 2, fd: true })
}

/// Answers every waiting request with a fitting success until the front-end settles.
fn answer_all(frontend: &mut Frontend, model: &mut Model) -> Vec<Ev> {
    let mut buf = vec![0u8; MAX_FRAME_SIZE];
    let mut events = Vec::new();
    for _ in 0..64 {
        if model.awaiting.is_none() {
            break;
        }
        let (len, fds) = encode_reply(fit(), model, &mut buf).expect("encodes");
        events.extend(model.reply(frontend, &buf[..len], fds).events);
    }
    events
}

/// A full handshake and a few calls through the harness itself, without a fuzzer: the
/// harness accepts a correct session.
#[test]
fn a_correct_session_passes_the_checks() {
    // No device features, the default protocol features, bit 30 wanted.
    let bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let config = Config::arbitrary(&mut Unstructured::new(&bytes)).expect("config");
    let mut frontend = Frontend::new(config.build());
    let mut model = Model::default();
    Vmm::Connect(true).apply(&mut frontend, &mut model, None);
    let events = answer_all(&mut frontend, &mut model);
    assert!(model.connected, "{events:?}");
    assert!(matches!(events.last(), Some(Ev::Connected(_))), "{events:?}");
    Vmm::SetMemTable(vec![(0, 4), (1, 4)]).apply(&mut frontend, &mut model, None);
    Vmm::GetStatus.apply(&mut frontend, &mut model, None);
    Vmm::GetConfig(4, 8).apply(&mut frontend, &mut model, None);
    let events = answer_all(&mut frontend, &mut model);
    assert!(events.iter().any(|e| matches!(e, Ev::ConfigRead { offset: 4, .. })));
    assert_eq!(frontend.regions().len(), 2);
    model.finish(&mut frontend);
}

/// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
#[test]
fn replays_pseudo_random_sessions() {
    crate::replay::pseudo_random(0x9e37_79b9_7f4a_7c15, 1200, 5, run);
}

/// Inputs that once crashed the target, kept in `regressions/frontend_session/` (may be absent).
#[test]
fn replays_regressions() {
    crate::replay::regressions("frontend_session", run);
}

/// Each seed decodes into its script and leaves the front-end where the script leads.
#[test]
fn seeds_reach_their_states() {
    for (name, input) in seeds() {
        assert_eq!(input[0], SCRIPT);
        let (config, steps) = script::decode(&input[1..]).expect("seed decodes");
        let mut s = Session::new(&config);
        for step in steps {
            s.step(step);
        }
        assert!(s.model.connected && !s.model.closed, "{name}: not connected");
        assert!(s.model.awaiting.is_none(), "{name}: a request still waits");
        let started = |s: &Session, i| s.frontend.is_vring_started(vhu_core::VringIndex(i));
        match name {
            "qemu_rings_running" | "restore_reply_ack" => {
                assert!(started(&s, 0) && started(&s, 1), "{name}: rings not started");
                assert_eq!(s.frontend.regions().len(), 1, "{name}: regions");
            }
            "qemu_start_stop" | "device_state_save" => {
                assert!(!started(&s, 0) && !started(&s, 1), "{name}: rings not stopped");
            }
            "hotplug_add_mem_reg" => assert_eq!(s.frontend.regions().len(), 2, "{name}"),
            "config_status_log" => assert!(s.frontend.is_logging(), "{name}: not logging"),
            "postcopy_crypto_iotlb" => {
                let acked = s.frontend.negotiated().expect("connected").protocol_features;
                assert!(acked.contains(ProtocolFeatures::PAGEFAULT), "{name}: {acked:?}");
                assert!(acked.contains(ProtocolFeatures::CRYPTO_SESSION), "{name}: {acked:?}");
                assert_eq!(s.frontend.regions().len(), 2, "{name}: the postcopy table");
                assert_eq!(s.model.postcopy_table.len(), 2, "{name}: sent in its postcopy form");
            }
            other => panic!("no expectation for seed {other}"),
        }
        if name == "restore_reply_ack" {
            let negotiated = s.frontend.negotiated().expect("restored");
            assert!(negotiated.protocol_features.contains(ProtocolFeatures::REPLY_ACK));
        }
        s.model.finish(&mut s.frontend);
    }
}

/// Decoding an encoded script gives the script back.
#[test]
fn scripts_round_trip() {
    for (name, steps) in seeds::scripts() {
        let input = script::encode(&seeds::config(), &steps);
        let (_, again) = script::decode(&input[1..]).expect("decodes");
        assert_eq!(format!("{again:?}"), format!("{steps:?}"), "{name}");
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
