//! Postcopy transcripts: ADVISE, LISTEN, the postcopy form of SET_MEM_TABLE with the
//! front-end's acknowledgement, and END.

mod common;

use common::transcript::{Out, Transcript};
use vhu_core::backend::{Action, BackendSpec, Completion};
use vhu_core::message::{MemoryTable, Region};
use vhu_core::wire::{self, U64};
use vhu_core::{FrontendCode, ProtocolError, ProtocolFeatures, Reply, Request};

const RAM: u64 = 0x7f00_0000_0000;
static TABLE: [wire::MemoryRegion; 2] = [
    common::region(0, 0x1000_0000, RAM, 0),
    common::region(0x1_0000_0000, 0x1000, RAM + 0x1000_0000, 0),
];

/// A back-end offering postcopy, with `acked` protocol features set.
fn postcopy(acked: ProtocolFeatures) -> Transcript {
    let mut spec = BackendSpec::new(1, 256);
    // Postcopy is never offered together with memory slots.
    spec.protocol_features.remove(ProtocolFeatures::CONFIGURE_MEM_SLOTS);
    spec.protocol_features |= ProtocolFeatures::PAGEFAULT;
    let mut t = Transcript::backend(spec);
    t.send(Request::SetProtocolFeatures(acked));
    t
}

fn listening() -> Transcript {
    let mut t = postcopy(ProtocolFeatures::PAGEFAULT | ProtocolFeatures::REPLY_ACK);
    assert_eq!(t.send(Request::PostcopyAdvise), [Out::Action(Action::PostcopyAdvise)]);
    let uffd = t.fd();
    assert_eq!(
        t.complete(Completion::Userfaultfd(Ok(uffd))),
        [Out::Reply(Reply::PostcopyAdvise { userfaultfd: uffd })]
    );
    // QEMU sets NEED_REPLY on POSTCOPY_LISTEN (even without REPLY_ACK) and waits for the u64.
    assert_eq!(t.send_need_reply(Request::PostcopyListen), [Out::Action(Action::PostcopyListen)]);
    assert_eq!(
        t.complete(Completion::Done(Ok(()))),
        [Out::Reply(Reply::Ack { request: FrontendCode::PostcopyListen, status: 0 })]
    );
    t
}

/// POSTCOPY_LISTEN's `u64` is an acknowledgement: due when NEED_REPLY asks for it, and not
/// otherwise (vhost-user spec, message 29; only ADVISE and END always answer).
#[test]
fn postcopy_listen_is_answered_only_when_asked() {
    let mut t = postcopy(ProtocolFeatures::PAGEFAULT);
    assert_eq!(t.send(Request::PostcopyAdvise), [Out::Action(Action::PostcopyAdvise)]);
    let uffd = t.fd();
    t.complete(Completion::Userfaultfd(Ok(uffd)));
    assert_eq!(t.send(Request::PostcopyListen), [Out::Action(Action::PostcopyListen)]);
    assert_eq!(t.complete(Completion::Done(Ok(()))), [], "no reply was asked for");
    assert_eq!(
        t.send(Request::PostcopyEnd),
        [Out::Action(Action::PostcopyEnd)],
        "the session went on"
    );
    assert_eq!(
        t.complete(Completion::Done(Ok(()))),
        [Out::Reply(Reply::Ack { request: FrontendCode::PostcopyEnd, status: 0 })],
        "END always answers"
    );
}

fn ack_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&FrontendCode::SetMemTable.as_u32().to_ne_bytes());
    frame.extend_from_slice(&1u32.to_ne_bytes());
    frame.extend_from_slice(&8u32.to_ne_bytes());
    frame.extend_from_slice(&0u64.to_ne_bytes());
    frame
}

#[test]
fn set_mem_table_replies_with_backend_bases_and_waits_for_the_ack() {
    let mut t = listening();
    let fds = [t.fd(), t.fd()];
    let outs = t.send(Request::SetMemTable { table: MemoryTable::Standard(&TABLE), fds: &fds });
    assert_eq!(outs.len(), 3, "unmap all and two maps: {outs:?}");
    let bases = [0x7000_0000_0000u64, 0x7000_1000_0000];
    let outs = t.complete(Completion::PostcopyMapped(Ok(&bases)));
    let expected: Vec<_> = TABLE
        .iter()
        .zip(bases)
        .map(|(r, base)| wire::MemoryRegion { user_address: U64::new(base), ..*r })
        .collect();
    assert_eq!(outs, [Out::Reply(Reply::MemTableBases(MemoryTable::Standard(expected.leak())))]);
    // The core keeps the front-end's addresses for translation.
    assert_eq!(t.backend.regions().iter().next(), Some(&Region::from_wire(&TABLE[0])));
    // The front-end's acknowledgement produces nothing; then the session goes on.
    assert_eq!(t.send_raw(&ack_frame(), &[]), []);
    assert_eq!(t.send(Request::PostcopyEnd), [Out::Action(Action::PostcopyEnd)]);
    assert_eq!(
        t.complete(Completion::Done(Ok(()))),
        [Out::Reply(Reply::Ack { request: FrontendCode::PostcopyEnd, status: 0 })]
    );
    // After END, SET_MEM_TABLE is acked normally again.
    let fd = t.fd();
    t.send_need_reply(Request::SetMemTable {
        table: MemoryTable::Standard(&TABLE[..1]),
        fds: &[fd],
    });
    assert_eq!(
        t.complete(Completion::Done(Ok(()))),
        [Out::Reply(Reply::Ack { request: FrontendCode::SetMemTable, status: 0 })]
    );
    t.assert_fds_balanced();
}

/// An empty table while postcopy listens still takes the postcopy form: QEMU waits for the
/// reply (of no regions) and sends its acknowledgement.
#[test]
fn an_empty_table_while_listening_is_answered_with_no_bases() {
    let mut t = listening();
    let fd = t.fd();
    t.send(Request::SetMemTable { table: MemoryTable::Standard(&TABLE[..1]), fds: &[fd] });
    t.complete(Completion::PostcopyMapped(Ok(&[0x7000_0000_0000])));
    assert_eq!(t.send_raw(&ack_frame(), &[]), []);
    let outs = t.send(Request::SetMemTable { table: MemoryTable::Standard(&[]), fds: &[] });
    assert_eq!(
        outs,
        [
            Out::Action(Action::UnmapAll),
            Out::Reply(Reply::MemTableBases(MemoryTable::Standard(&[])))
        ]
    );
    assert_eq!(t.backend.regions().iter().next(), None, "the old table is gone");
    assert_eq!(t.send(Request::GetFeatures), [Out::Close(ProtocolError::PostcopyAckMissing)]);
    t.assert_fds_balanced();
}

/// NEED_REPLY on it (QEMU never sets it there) adds no ack: the table is the one reply.
#[test]
fn an_empty_table_while_listening_waits_for_its_ack() {
    let mut t = listening();
    let outs =
        t.send_need_reply(Request::SetMemTable { table: MemoryTable::Standard(&[]), fds: &[] });
    assert_eq!(
        outs,
        [
            Out::Action(Action::UnmapAll),
            Out::Reply(Reply::MemTableBases(MemoryTable::Standard(&[])))
        ]
    );
    assert_eq!(t.send_raw(&ack_frame(), &[]), []);
    assert_eq!(t.send(Request::PostcopyEnd), [Out::Action(Action::PostcopyEnd)]);
    t.assert_fds_balanced();
}

#[test]
fn a_missing_postcopy_ack_closes_the_session() {
    let mut t = listening();
    let fd = t.fd();
    t.send(Request::SetMemTable { table: MemoryTable::Standard(&TABLE[..1]), fds: &[fd] });
    t.complete(Completion::PostcopyMapped(Ok(&[0x7000_0000_0000])));
    assert_eq!(t.send(Request::GetFeatures), [Out::Close(ProtocolError::PostcopyAckMissing)]);
    t.assert_fds_balanced();
}

#[test]
fn failed_registration_closes_the_session() {
    let mut t = listening();
    let fd = t.fd();
    t.send(Request::SetMemTable { table: MemoryTable::Standard(&TABLE[..1]), fds: &[fd] });
    let outs = t.complete(Completion::PostcopyMapped(Err(12)));
    assert_eq!(
        outs,
        [
            Out::Action(Action::UnmapAll),
            Out::Close(ProtocolError::DeviceFailed { code: FrontendCode::SetMemTable, status: 12 })
        ]
    );
    // A wrong number of bases is a failure too.
    let mut t = listening();
    let fd = t.fd();
    t.send(Request::SetMemTable { table: MemoryTable::Standard(&TABLE[..1]), fds: &[fd] });
    assert!(matches!(t.complete(Completion::PostcopyMapped(Ok(&[1, 2])))[..], [_, Out::Close(_)]));
    assert!(t.backend.regions().is_empty());
}

#[test]
fn advise_failure_is_a_status() {
    let mut t = postcopy(ProtocolFeatures::PAGEFAULT);
    t.send(Request::PostcopyAdvise);
    assert_eq!(
        t.complete(Completion::Userfaultfd(Err(1))),
        [Out::Reply(Reply::Ack { request: FrontendCode::PostcopyAdvise, status: 1 })]
    );
}

/// A table refused while listening (overlapping regions here) cannot be answered: the postcopy
/// reply, which QEMU waits for without NEED_REPLY, has no failure form. The session closes
/// rather than leave the front-end waiting.
#[test]
fn a_table_refused_while_listening_closes_the_session() {
    let mut t = listening();
    static OVERLAPPING: [wire::MemoryRegion; 2] = [
        common::region(0, 0x1000_0000, RAM, 0),
        common::region(0x1000, 0x1000, RAM + 0x2000_0000, 0),
    ];
    let fds = [t.fd(), t.fd()];
    let outs =
        t.send(Request::SetMemTable { table: MemoryTable::Standard(&OVERLAPPING), fds: &fds });
    assert!(matches!(outs.last(), Some(Out::Close(_))), "{outs:?}");
}
