//! The state format's tests: what reads back, what is refused and why.

use super::*;

fn sample() -> FsState {
    FsState {
        session: Some(SessionState { minor: 38, offered: 0x1234_5678_9abc, claimed: 0x1234 }),
        devices: vec![(0x803, 0), (0x30, 1)],
        next_node: 9,
        nodes: vec![
            NodeRecord {
                node: 2,
                lookups: 3,
                dev: 0x803,
                ino: 77,
                kind: 0o100000,
                path: Some(b"dir/file".to_vec()),
                handle: Some(FileHandle { kind: 1, bytes: vec![1, 2, 3, 4, 5, 6, 7, 8] }),
            },
            NodeRecord {
                node: 5,
                lookups: 1,
                dev: 0x30,
                ino: 2,
                kind: 0o040000,
                path: None,
                handle: None,
            },
        ],
        last_handle: 4,
        handles: vec![HandleRecord {
            handle: 4,
            node: 2,
            is_dir: false,
            flags: 2,
            lost: false,
            sync_failed: 5,
        }],
    }
}

#[test]
fn a_state_reads_back_as_written() {
    let state = sample();
    assert_eq!(FsState::decode(&state.encode()), Ok(state));
    assert_eq!(FsState::decode(&FsState::default().encode()), Ok(FsState::default()));
}

/// A state no handle of which keeps a sync failure is written as version 1; an errno a
/// guest could not be given is refused.
#[test]
fn version_1_unless_a_failure_is_kept_and_only_a_guests_errno_is_kept() {
    let mut state = sample();
    state.handles[0].sync_failed = 0;
    let bytes = state.encode();
    assert_eq!(bytes[8], 1);
    assert_eq!(FsState::decode(&bytes), Ok(state.clone()));
    state.handles[0].sync_failed = 5;
    let mut bytes = state.encode();
    assert_eq!(bytes[8], 2);
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&4096u32.to_le_bytes());
    let refused = FsState::decode(&bytes);
    assert!(matches!(refused, Err(FormatError::OutOfRange { value: 4096, .. })), "{refused:?}");
    // Nor is one written: a state that says so keeps nothing.
    state.handles[0].sync_failed = 4096;
    let bytes = state.encode();
    assert_eq!(bytes[8], 1);
    assert_eq!(FsState::decode(&bytes).map(|s| s.handles[0].sync_failed), Ok(0));
}

/// A version 1 state (a source from before handles carried a kept sync failure) reads as
/// one without any.
#[test]
fn a_version_1_state_reads_with_no_kept_sync_failure() {
    let state = sample();
    let bytes = state.encode();
    // The sample's one handle comes last: its kept failure is the last four bytes.
    let mut old = bytes[..bytes.len() - 4].to_vec();
    old[8] = 1;
    let mut expected = state;
    expected.handles[0].sync_failed = 0;
    assert_eq!(FsState::decode(&old), Ok(expected));
}

#[test]
fn every_cut_and_every_corruption_is_an_error_not_a_panic() {
    let bytes = sample().encode();
    for len in 0..bytes.len() {
        assert!(FsState::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(FsState::decode(&longer), Err(FormatError::Trailing(1)));
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0xff;
        let _ = FsState::decode(&bad);
    }
    let mut version = bytes.clone();
    version[8] = 3;
    assert_eq!(FsState::decode(&version), Err(FormatError::Version(3)));
    assert_eq!(FsState::decode(b"VHUFSMIX\x01\0\0\0"), Err(FormatError::Magic));
}

/// More nodes or handles than the destination could hold are refused from their count,
/// before any record is read into memory.
#[test]
fn more_records_than_asked_are_refused_from_their_count() {
    let state = sample();
    let (nodes, handles) = (state.nodes.len() as u64, state.handles.len() as u64);
    let bytes = state.encode();
    assert_eq!(FsState::decode_at_most(&bytes, nodes.max(handles)), Ok(state));
    let most = nodes.max(handles);
    let refused = FsState::decode_at_most(&bytes, most - 1);
    assert!(
        matches!(refused, Err(FormatError::TooMany { count, .. }) if count == most),
        "{refused:?}"
    );
}

/// A handle names the root or a node the state carries; one on any other node is a
/// damaged state, refused whole (a destination would otherwise take it for a lost file).
#[test]
fn a_handle_on_a_node_the_state_does_not_carry_is_refused() {
    let mut state = sample();
    state.handles[0].node = 1;
    assert_eq!(FsState::decode(&state.encode()), Ok(state.clone()), "the root");
    state.handles[0].node = 999;
    state.handles[0].lost = true;
    assert_eq!(FsState::decode(&state.encode()), Ok(state.clone()), "lost, node forgotten");
    state.handles[0].lost = false;
    for node in [0, 3, 999] {
        state.handles[0].node = node;
        let refused = FsState::decode(&state.encode());
        assert_eq!(
            refused,
            Err(FormatError::Invalid { what: "the node of handle", value: node }),
            "node {node}"
        );
    }
}

/// A device list longer than any host's is refused from its count, before it is read.
#[test]
fn more_devices_than_a_host_mounts_are_refused() {
    let devices = (0..=MAX_DEVICES as u64).map(|dev| (dev, MAX_DEVICE_INDEX)).collect();
    let mut state = FsState { devices, ..FsState::default() };
    let refused = FsState::decode(&state.encode());
    assert_eq!(refused, Err(FormatError::TooManyDevices(MAX_DEVICES + 1)));
    state.devices.pop();
    let decoded = FsState::decode(&state.encode()).expect("the limit itself");
    assert_eq!(decoded.devices.len(), MAX_DEVICES);
}

#[test]
fn ids_and_indexes_that_would_wrap_are_refused() {
    type Spoil = fn(&mut FsState);
    let cases: [(&str, Spoil); 5] = [
        ("the next node id", |s| s.next_node = u64::MAX),
        ("a node id", |s| s.nodes[0].node = MAX_ID + 1),
        ("the last handle id", |s| s.last_handle = u64::MAX),
        ("a handle id", |s| s.handles[0].handle = u64::MAX),
        ("a device index", |s| s.devices = vec![(9, 1 << 16)]),
    ];
    for (what, spoil) in cases {
        let mut state = sample();
        spoil(&mut state);
        match FsState::decode(&state.encode()) {
            Err(FormatError::OutOfRange { what: got, .. }) => assert_eq!(got, what),
            other => panic!("{what}: {other:?}"),
        }
    }
    let mut edge = sample();
    edge.next_node = MAX_ID;
    edge.devices = vec![(9, MAX_DEVICE_INDEX)];
    assert_eq!(FsState::decode(&edge.encode()), Ok(edge), "the limits themselves are accepted");
}

#[test]
fn lengths_beyond_their_limits_are_refused() {
    let mut state = sample();
    state.nodes[0].path = Some(vec![b'a'; PATH_MAX + 1]);
    let err = FsState::decode(&state.encode()).unwrap_err();
    assert!(matches!(err, FormatError::TooLong { len, .. } if len == PATH_MAX + 1), "{err}");
    // A count larger than the bytes that follow could hold is refused before allocating.
    let mut huge = FsState::default().encode();
    let at = huge.len() - 12 - 4;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(FsState::decode(&huge).is_err());
}
