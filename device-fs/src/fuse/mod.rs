//! A FUSE server for virtio-fs: the kernel ABI, the [`FileSystem`] trait and the [`Server`].
//!
//! - [`abi`]: zerocopy `#[repr(C)]` structs and constants of `fuse_kernel.h`.
//! - [`Opcode`]: the request opcodes.
//! - [`FileSystem`]: one method per operation, each defaulting to `ENOSYS`.
//! - [`Server`]: reads one request from a [`RequestReader`], writes one reply to a [`ReplyWriter`].
//!
//! Nothing here touches virtqueues or host files; both sides are traits.

pub mod abi;
mod dirent;
mod filesystem;
mod io;
mod lock;
mod opcode;
mod server;
mod types;
mod window;

pub use dirent::{AddError, DirBuffer, MAX_DIRENT_NAME};
pub use filesystem::FileSystem;
pub(crate) use io::until_done;
pub use io::{
    Partial, ReadTarget, ReplyWriter, RequestReader, TransportError, VecWriter, WriteSource,
};
pub use lock::{Cancel, Lock, LockRequest, LockStatus, LockType, LockWait, LOCK_TO_EOF};
pub use opcode::Opcode;
pub use server::{
    Defer, Handled, Server, ServerConfig, ServerError, SessionMismatch, SessionState,
    MAX_PAGES_LIMIT, PAGE_SIZE, QUEUE_HEADER_OVERHEAD,
};
pub use types::{
    AttrReply, Context, CopyRange, DirEntry, Entry, FsResult, Handle, NodeId, Opened,
    SecurityContext, SetAttr, SetTime, WriteFlags, XattrReply,
};
pub use window::{Placement, Window, WindowError};
