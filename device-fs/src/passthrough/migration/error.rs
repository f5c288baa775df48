//! Why saving or restoring what a guest holds fails: the one error type of migration, with the
//! node, handle or cause named. This module only describes failures; it must not decide them.

use rustix::io::Errno;

use super::FormatError;

/// Why a state cannot be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The guest holds locks, which do not migrate.
    #[error("the guest holds {0} file locks, which cannot be migrated")]
    LocksHeld(usize),
    /// An inode cannot be described in file-handles mode.
    #[error("node {node}: its file system gives no file handle (use --migration-mode find-paths)")]
    NoFileHandle {
        /// The node.
        node: u64,
    },
    /// The daemon's own credentials could not be taken back.
    #[error("cannot act as the daemon: {0}")]
    Credentials(Errno),
    /// What the guest wrote through an open file could not be made durable before the
    /// switch-over (the source keeps the guest; its next FSYNC of the file says so, here or,
    /// after a later save, on the destination).
    #[error(
        "handle {handle} of node {node}: syncing what the guest wrote failed: {errno} (the \
         guest's next FSYNC of the file reports a failure, here or after the next save)"
    )]
    Sync {
        /// The handle.
        handle: u64,
        /// Its node.
        node: u64,
        /// What `fdatasync` said.
        errno: Errno,
    },
    /// The share's root is not held (the file system was never set up).
    #[error("the share's root is not open: {0}")]
    Root(Errno),
    /// The bytes are not a state.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The destination already serves a guest.
    #[error(
        "the destination already serves a guest ({0} nodes); a state loads only before the guest \
         mounts"
    )]
    NotFresh(usize),
    /// The guest holds more open inodes and handles than this daemon may keep open.
    #[error(
        "the guest holds {needed} open inodes and handles, more than the {max} this daemon may \
         keep open (raise its open-file limit, --rlimit-nofile)"
    )]
    TooManyOpen {
        /// Host descriptors the state needs, the share's root included.
        needed: usize,
        /// The most the guest may hold here (`Config::max_open`).
        max: usize,
    },
    /// The state names files by handle and this daemon may not open one: every such node would
    /// be lost, whatever `--migration-on-error` says.
    #[error(
        "the state names files by file handle, and opening one needs CAP_DAC_READ_SEARCH in the \
         host's user namespace, which this daemon does not hold: start the destination as root \
         with --migration-mode file-handles (as the source) or --modcaps=+dac_read_search"
    )]
    HandlesNeedCapability,
    /// An inode could not be opened again and `--migration-on-error abort` is in force.
    #[error("node {node} ({what}) cannot be opened on the destination: {reason}")]
    Inode {
        /// The node.
        node: u64,
        /// Its path or handle, for the log.
        what: String,
        /// Why.
        reason: String,
    },
    /// A handle could not be opened again and `--migration-on-error abort` is in force.
    #[error("handle {handle} of node {node} cannot be reopened on the destination: {errno}")]
    Handle {
        /// The handle.
        handle: u64,
        /// Its node.
        node: u64,
        /// Why.
        errno: Errno,
    },
}
