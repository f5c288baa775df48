//! Postcopy from the front-end against the real back-end (spec "Migration", POSTCOPY_ADVISE /
//! POSTCOPY_LISTEN / POSTCOPY_END and the postcopy form of SET_MEM_TABLE).

mod common;

use common::pair::*;
use vhu_core::testing::pair::POSTCOPY_BASE;

/// A back-end offering PAGEFAULT (and no memory slots, which the spec forbids with it) and a
/// front-end wanting it.
fn postcopy_pair() -> Pair {
    let mut spec = spec();
    spec.protocol_features.remove(ProtocolFeatures::CONFIGURE_MEM_SLOTS);
    spec.protocol_features |= ProtocolFeatures::PAGEFAULT;
    let mut config = config();
    config.protocol_features.remove(ProtocolFeatures::CONFIGURE_MEM_SLOTS);
    config.protocol_features |= ProtocolFeatures::PAGEFAULT;
    let mut pair = Pair::new(spec, config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();
    let negotiated = pair.frontend.negotiated().expect("connected");
    assert!(negotiated.protocol_features.contains(ProtocolFeatures::PAGEFAULT));
    pair.clear_log();
    pair
}

#[test]
fn advise_listen_postcopy_table_with_its_ack_then_end() {
    let mut pair = postcopy_pair();
    use FrontendCode as C;
    // Precopy: the table takes its usual form, acked by REPLY_ACK.
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.frontend.postcopy_advise().unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(C::SetMemTable, true), (C::PostcopyAdvise, false)]);
    let [Ev::Done(C::SetMemTable), Ev::PostcopyAdvised { .. }] = pair.events[..] else {
        panic!("{:?}", pair.events)
    };
    pair.clear_log();

    pair.frontend.postcopy_listen().unwrap();
    let fds = [pair.vmm_fd(), pair.vmm_fd()];
    pair.frontend.set_mem_table(&[(region(0), fds[0]), (region(1), fds[1])]).unwrap();
    pair.frontend.get_status().unwrap();
    pair.pump();
    // LISTEN carries NEED_REPLY as QEMU sends it; the postcopy table does not, and its
    // acknowledgement (a SET_MEM_TABLE frame) goes before anything else queued.
    assert_eq!(
        pair.sent,
        [
            (C::PostcopyListen, true),
            (C::SetMemTable, false),
            (C::SetMemTable, false),
            (C::GetStatus, false),
        ]
    );
    let bases = vec![POSTCOPY_BASE, POSTCOPY_BASE + 0x1000_0000];
    assert_eq!(pair.events[..2], [Ev::Done(C::PostcopyListen), Ev::PostcopyBases(bases)]);
    assert!(matches!(pair.events[2], Ev::Status(_)), "{:?}", pair.events);
    assert!(pair.backend_errors.is_empty(), "the back-end took the ack: {:?}", pair.backend_errors);
    pair.clear_log();

    pair.frontend.postcopy_end().unwrap();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.pump();
    // After END the table is back to its usual form.
    assert_eq!(pair.sent, [(C::PostcopyEnd, true), (C::SetMemTable, true)]);
    assert_eq!(pair.events, [Ev::Done(C::PostcopyEnd), Ev::Done(C::SetMemTable)]);
    pair.assert_clean();
}

#[test]
fn steps_out_of_order_are_refused_before_anything_is_sent() {
    let mut pair = postcopy_pair();
    let out_of_order = |code, needs| FrontendError::PostcopyOutOfOrder { code, needs };
    assert_eq!(
        pair.frontend.postcopy_listen(),
        Err(out_of_order(FrontendCode::PostcopyListen, "POSTCOPY_ADVISE"))
    );
    assert_eq!(
        pair.frontend.postcopy_end(),
        Err(out_of_order(FrontendCode::PostcopyEnd, "POSTCOPY_ADVISE"))
    );
    pair.pump();
    assert!(pair.sent.is_empty());
    // ADVISE queued is enough for LISTEN to follow it; a second ADVISE while listening is not.
    pair.frontend.postcopy_advise().unwrap();
    pair.frontend.postcopy_listen().unwrap();
    // Nor while LISTEN is only on its way: its answer would be undone.
    assert_eq!(
        pair.frontend.postcopy_advise(),
        Err(out_of_order(FrontendCode::PostcopyAdvise, "POSTCOPY_END"))
    );
    pair.pump();
    assert_eq!(
        pair.frontend.postcopy_advise(),
        Err(out_of_order(FrontendCode::PostcopyAdvise, "POSTCOPY_END"))
    );
    pair.frontend.postcopy_end().unwrap();
    pair.pump();
    pair.assert_clean();
}

#[test]
fn pagefault_is_never_acked_with_memory_slots() {
    let mut spec = spec();
    spec.protocol_features |= ProtocolFeatures::PAGEFAULT;
    spec.protocol_features.remove(ProtocolFeatures::CONFIGURE_MEM_SLOTS);
    // The back-end offers PAGEFAULT only; the front-end wants both.
    let mut config = config();
    config.protocol_features |= ProtocolFeatures::PAGEFAULT;
    let mut pair = Pair::new(spec.clone(), config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();
    assert!(pair
        .frontend
        .negotiated()
        .unwrap()
        .protocol_features
        .contains(ProtocolFeatures::PAGEFAULT));

    // Both offered (a back-end predating the rule) and both wanted: PAGEFAULT goes.
    let mut frontend = Frontend::new(config);
    frontend.connect(None).unwrap();
    let mut buf = vec![0u8; 256];
    let mut answer = |frontend: &mut Frontend, reply: Reply<'_>| {
        while frontend.poll_output().is_some() {}
        let len = reply.encode_into(&mut buf).unwrap();
        frontend.handle_reply(&buf[..len], &[]).unwrap();
    };
    answer(&mut frontend, Reply::Features(spec.offered_features()));
    let offered = ProtocolFeatures::PAGEFAULT | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
    answer(&mut frontend, Reply::ProtocolFeatures(offered));
    let Some(Output::Request { request: Request::SetProtocolFeatures(acked), .. }) =
        frontend.poll_output()
    else {
        panic!("SET_PROTOCOL_FEATURES follows")
    };
    assert_eq!(acked, ProtocolFeatures::CONFIGURE_MEM_SLOTS);

    // A restore of saved features with the pair is refused outright.
    let mut saved = pair.frontend.negotiated().unwrap();
    saved.protocol_features |= ProtocolFeatures::CONFIGURE_MEM_SLOTS;
    let mut fresh = Frontend::new(config);
    assert!(matches!(fresh.restore(saved, None), Err(FrontendError::InconsistentFeatures(_))));
}

/// A pair listening, whose front-end sent a two-region postcopy table that the back-end
/// answered; the answer is left undelivered in `to_frontend`.
fn bases_waiting() -> Pair {
    let mut pair = postcopy_pair();
    pair.frontend.postcopy_advise().unwrap();
    pair.frontend.postcopy_listen().unwrap();
    pair.pump();
    let fds = [pair.vmm_fd(), pair.vmm_fd()];
    pair.frontend.set_mem_table(&[(region(0), fds[0]), (region(1), fds[1])]).unwrap();
    pair.drain_frontend();
    let (frame, fds) = pair.to_backend.pop_front().expect("the table was sent");
    let received = pair.receive(fds.len());
    pair.be_in.extend(&received);
    pair.backend.handle_frame(&frame, &received).unwrap();
    pair.drive_backend();
    assert_eq!(pair.to_frontend.len(), 1, "the back-end answered with its bases");
    pair
}

#[test]
fn bases_for_other_regions_close_the_connection() {
    for (field, what) in [(0, "guest address"), (8, "size"), (24, "mmap offset")] {
        let mut pair = bases_waiting();
        let (mut frame, _) = pair.to_frontend.pop_front().unwrap();
        // Header (12 bytes), region count and padding (8), then region 1 at 32 bytes each.
        let at = 12 + 8 + 32 + field;
        frame[at] ^= 0x10;
        assert_eq!(
            pair.frontend.handle_reply(&frame, &[]),
            Err(FrontendError::PostcopyBasesMismatch { index: 1 }),
            "{what}"
        );
        pair.drain_frontend();
        assert!(pair.frontend.is_closed(), "{what}");
        // No acknowledgement went out for bases that do not fit.
        assert!(pair.to_backend.is_empty(), "{what}");
    }

    // A reply with fewer regions than sent.
    let mut pair = bases_waiting();
    let (mut frame, _) = pair.to_frontend.pop_front().unwrap();
    frame[12..16].copy_from_slice(&1u32.to_ne_bytes());
    frame[8..12].copy_from_slice(&40u32.to_ne_bytes());
    frame.truncate(12 + 40);
    assert_eq!(
        pair.frontend.handle_reply(&frame, &[]),
        Err(FrontendError::PostcopyBasesMismatch { index: 1 })
    );
}

#[test]
fn steps_may_follow_a_step_still_on_its_way_but_a_table_waits_for_its_bases() {
    let mut pair = postcopy_pair();
    pair.frontend.postcopy_advise().unwrap();
    // ADVISE is sent and waits for its reply: LISTEN may be queued behind it.
    pair.drain_frontend();
    assert!(pair.frontend.is_awaiting_reply());
    pair.frontend.postcopy_listen().unwrap();
    pair.pump();
    assert!(pair.events.contains(&Ev::Done(FrontendCode::PostcopyListen)), "{:?}", pair.events);

    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.drain_frontend();
    // The table is out and its bases have not come: a second table would change what they are
    // checked against.
    let other = FdToken(99_999);
    assert_eq!(
        pair.frontend.set_mem_table(&[(region(1), other)]),
        Err(FrontendError::Busy(FrontendCode::SetMemTable))
    );
    pair.pump();
    assert!(matches!(pair.events.last(), Some(Ev::PostcopyBases(b)) if b.len() == 1));
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(1), fd)]).unwrap();
    pair.frontend.postcopy_end().unwrap();
    pair.pump();
    pair.assert_clean();
}

#[test]
fn bases_answering_a_table_sent_in_its_usual_form_close_the_connection() {
    // No postcopy: SET_MEM_TABLE waits for its REPLY_ACK, and region bases are no answer to it.
    let mut pair = Pair::connected();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.drain_frontend();
    let table = [region(0).to_wire()];
    let mut buf = vec![0u8; 256];
    let reply = Reply::MemTableBases(vhu_core::message::MemoryTable::Standard(&table));
    let len = reply.encode_into(&mut buf).unwrap();
    assert!(matches!(
        pair.frontend.handle_reply(&buf[..len], &[]),
        Err(FrontendError::UnexpectedPayload { code: FrontendCode::SetMemTable, .. })
    ));
    pair.drain_frontend();
    assert!(pair.frontend.is_closed());
    assert!(!pair.events.iter().any(|e| matches!(e, Ev::PostcopyBases(_))), "{:?}", pair.events);
}

#[test]
fn nothing_goes_out_until_the_vmm_registered_the_bases() {
    let mut pair = bases_waiting();
    let (frame, _) = pair.to_frontend.pop_front().unwrap();
    pair.frontend.handle_reply(&frame, &[]).unwrap();
    pair.frontend.get_status().unwrap();
    let Some(Output::Event(Event::PostcopyBases(bases))) = pair.frontend.poll_output() else {
        panic!("the bases are reported first")
    };
    assert_eq!(bases.len(), 2);
    // The back-end may fault once acknowledged: the acknowledgement and the requests behind it
    // wait for the VMM.
    assert_eq!(pair.frontend.poll_output(), None);
    assert!(pair.frontend.is_awaiting_registration() && !pair.frontend.is_idle());
    pair.frontend.postcopy_bases_registered().unwrap();
    assert!(!pair.frontend.is_awaiting_registration());
    let code = |o: Option<Output<'_>>| match o {
        Some(Output::Request { request, need_reply }) => (request.code(), need_reply),
        other => panic!("{other:?}"),
    };
    assert_eq!(code(pair.frontend.poll_output()), (FrontendCode::SetMemTable, false));
    assert_eq!(code(pair.frontend.poll_output()), (FrontendCode::GetStatus, false));
    assert_eq!(
        pair.frontend.postcopy_bases_registered(),
        Err(FrontendError::PostcopyOutOfOrder {
            code: FrontendCode::SetMemTable,
            needs: "postcopy bases"
        })
    );
}

#[test]
fn an_empty_table_is_refused_while_postcopy_listens() {
    let mut pair = postcopy_pair();
    pair.frontend.postcopy_advise().unwrap();
    pair.frontend.postcopy_listen().unwrap();
    let refused = FrontendError::PostcopyOutOfOrder {
        code: FrontendCode::SetMemTable,
        needs: "POSTCOPY_END",
    };
    // Refused as soon as LISTEN is on its way, and while it holds.
    assert_eq!(pair.frontend.set_mem_table(&[]), Err(refused));
    pair.pump();
    assert_eq!(pair.frontend.set_mem_table(&[]), Err(refused));
    pair.frontend.postcopy_end().unwrap();
    pair.pump();
    pair.frontend.set_mem_table(&[]).unwrap();
    pair.pump();
    pair.assert_clean();
}

#[test]
fn reset_owner_waits_for_the_end_of_postcopy() {
    let mut pair = postcopy_pair();
    pair.frontend.postcopy_advise().unwrap();
    let refused =
        FrontendError::PostcopyOutOfOrder { code: FrontendCode::ResetOwner, needs: "POSTCOPY_END" };
    // Back-ends differ on whether RESET_OWNER ends postcopy, so it is not sent during it.
    assert_eq!(pair.frontend.reset_owner(), Err(refused));
    pair.frontend.postcopy_end().unwrap();
    pair.pump();
    pair.frontend.reset_owner().unwrap();
    pair.pump();
    pair.assert_clean();
}
