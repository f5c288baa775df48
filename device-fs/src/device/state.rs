//! The virtio-fs device's migration state (vhost-user DEVICE_STATE): the FUSE session the guest
//! negotiated and everything the passthrough file system holds for it, as one byte string.
//!
//! [`save`] runs on the source while the device is suspended, [`load`] on the destination before
//! the guest sends anything. A load that fails leaves the server as a fresh one (no session, only
//! the root): the front-end cancels the migration and the destination is discarded. This module
//! must not read or write the transfer pipe (the transport's) nor describe inodes (the file
//! system's).

use crate::fuse::{Server, SessionMismatch};
use crate::passthrough::migration::{FormatError, FsState, MigrationError};
use crate::passthrough::PassthroughFs;

/// Why a state cannot be saved or taken over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file system cannot describe what the guest holds, or cannot take it over.
    #[error(transparent)]
    FileSystem(#[from] MigrationError),
    /// The bytes are not a state this daemon reads.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The destination's options negotiate another FUSE session than the source's.
    #[error("the FUSE session cannot be resumed: {0}")]
    Session(#[from] SessionMismatch),
}

/// The state of `server` and its file system, as bytes.
pub fn save(server: &Server<PassthroughFs>) -> Result<Vec<u8>, StateError> {
    let mut state = server.fs().save_state()?;
    state.session = server.session_state();
    log::info!("migration: saving {} nodes and {} handles", state.nodes.len(), state.handles.len());
    Ok(state.encode())
}

/// Takes over the state `bytes` describe; on failure `server` is left fresh. A server that
/// already serves a guest (a session, nodes or handles) refuses the state and is left as it is.
pub fn load(server: &Server<PassthroughFs>, bytes: &[u8]) -> Result<(), StateError> {
    let state = FsState::decode_at_most(bytes, server.fs().state_records_at_most())?;
    let serving = server.session_state().is_some();
    server.fs().check_fresh(serving)?;
    let result = (|| {
        if let Some(session) = state.session {
            server.restore_session(session)?;
        }
        server.fs().load_state(&state)?;
        Ok(())
    })();
    match &result {
        Ok(()) => log::info!(
            "migration: took over {} nodes and {} handles",
            state.nodes.len(),
            state.handles.len()
        ),
        Err(_) => server.reset(),
    }
    result
}
