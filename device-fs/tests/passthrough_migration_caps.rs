//! A migration destination and the capability that opening file handles needs: a state of
//! handles alone is refused where they cannot be opened, one that names a node by handle only
//! where its path failed is loaded as ever.

mod support;

use support::Harness;
use vhu_device_fs::device::state;
use vhu_device_fs::passthrough::migration::{FsState, MigrationMode, OnError};

/// A destination that may not open file handles (it dropped CAP_DAC_READ_SEARCH, started
/// without --migration-mode file-handles) refuses a state of handles whatever
/// --migration-on-error says: it would otherwise lose every node, not one. A state that names
/// most nodes by path and one by handle (what a find-paths source could not describe) loses
/// that one only, as ever.
#[test]
fn a_destination_without_dac_read_search_refuses_a_state_of_handles() {
    if !support::needs_root() {
        return;
    }
    let mut src =
        Harness::with("handles-no-cap", |c| c.migration.mode = MigrationMode::FileHandles);
    std::fs::create_dir(src.share().join("dir")).expect("dir");
    std::fs::write(src.share().join("dir/f"), b"before").expect("file");
    src.init();
    let dir = src.lookup(1, "dir").entry().nodeid;
    src.lookup(dir, "f").entry();
    let bytes = state::save(&src.server).expect("saves");
    let mut mixed = FsState::decode(&bytes).expect("decodes");
    mixed.nodes.iter_mut().find(|n| n.node == dir).expect("dir").path = Some(b"dir".to_vec());
    let dst = |src: &Harness| src.another_server(|c| c.migration.on_error = OnError::GuestError);
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let mut caps = capabilities(None).expect("this thread's capabilities");
    caps.effective.remove(CapabilitySet::DAC_READ_SEARCH);
    set_capabilities(None, caps).expect("drops DAC_READ_SEARCH on this thread");
    let err = state::load(&dst(&src).server, &bytes).expect_err("refused");
    assert!(err.to_string().contains("CAP_DAC_READ_SEARCH"), "{err}");
    state::load(&dst(&src).server, &mixed.encode()).expect("a mixed state loads");
}
