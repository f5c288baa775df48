//! INIT negotiation (FUSE protocol 7.38 offered, 7.27 the oldest accepted).
//!
//! Owns which flags are claimed: only the intersection of what the guest offered, what this server's
//! request decoding implements, and what the file system says it implements. It never claims a flag
//! whose semantics nothing here honours (per-inode DAX, idmap, ...).

use rustix::io::Errno;

use super::{OpResult, Reply, Request, Server, Session};
use crate::fuse::abi::{
    InitFlags, InitIn, InitOut, INIT_IN_COMPAT_SIZE, KERNEL_MINOR_VERSION, KERNEL_VERSION,
    MIN_KERNEL_MINOR_VERSION,
};
use crate::fuse::filesystem::FileSystem;

/// Flags the server itself implements, whatever the file system.
const SERVER_FLAGS: InitFlags = InitFlags::ASYNC_READ
    .union(InitFlags::BIG_WRITES)
    .union(InitFlags::MAX_PAGES)
    .union(InitFlags::INIT_EXT);

/// Flags a file system may ask for: their semantics live in the file system; the server only
/// decodes what they add to requests (the supplementary-group extension, the KILL_SUIDGID bits).
const FS_FLAGS: InitFlags = InitFlags::ATOMIC_O_TRUNC
    .union(InitFlags::PARALLEL_DIROPS)
    .union(InitFlags::AUTO_INVAL_DATA)
    .union(InitFlags::ASYNC_DIO)
    .union(InitFlags::DO_READDIRPLUS)
    .union(InitFlags::READDIRPLUS_AUTO)
    .union(InitFlags::WRITEBACK_CACHE)
    .union(InitFlags::CREATE_SUPP_GROUP)
    .union(InitFlags::HANDLE_KILLPRIV_V2)
    .union(InitFlags::SUBMOUNTS)
    .union(InitFlags::POSIX_LOCKS)
    .union(InitFlags::FLOCK_LOCKS)
    .union(InitFlags::POSIX_ACL)
    .union(InitFlags::DONT_MASK)
    .union(InitFlags::SETXATTR_EXT)
    .union(InitFlags::SECURITY_CTX)
    .union(InitFlags::DIRECT_IO_ALLOW_MMAP);

/// The minor that brought request extensions (`total_extlen`).
const EXTENSIONS_MINOR: u32 = 38;

/// The first protocol minor with security contexts on creations (Linux 5.17).
const SECURITY_CTX_MINOR: u32 = 36;

/// Background requests (readahead, write-back, asynchronous direct I/O) the guest may have in
/// flight: as many as it likes (virtiofsd's value). The queues bound what is in flight; a
/// smaller number would cap a guest's `iodepth` below its queue's size.
const MAX_BACKGROUND: u16 = u16::MAX;
/// Where the guest counts its file system congested: three quarters of `MAX_BACKGROUND`.
const CONGESTION_THRESHOLD: u16 = u16::MAX / 4 * 3;

impl<F: FileSystem> Server<F> {
    pub(super) fn do_init(&self, mut req: Request<'_>) -> OpResult {
        let init: InitIn = req.take_prefix(INIT_IN_COMPAT_SIZE)?;
        if init.major < KERNEL_VERSION {
            return Err(Errno::PROTO);
        }
        if init.major > KERNEL_VERSION {
            // Answer with our version only; the guest retries with 7.x or gives up.
            return Ok(Reply::of(&InitOut {
                major: KERNEL_VERSION,
                minor: KERNEL_MINOR_VERSION,
                ..InitOut::default()
            }));
        }
        if init.minor < MIN_KERNEL_MINOR_VERSION {
            return Err(Errno::PROTO);
        }
        // A second INIT ends the session (virtio-fs), and a first one after DESTROY drops
        // whatever a request that raced the DESTROY on another queue left: either way the
        // session starts from a clean state.
        self.end_session();
        self.unmap_all();
        let mut offered = InitFlags::from_bits_retain(u64::from(init.flags));
        if offered.contains(InitFlags::INIT_EXT) {
            offered |= InitFlags::from_bits_retain(u64::from(init.flags2) << 32);
        }
        let minor = init.minor.min(KERNEL_MINOR_VERSION);
        let claimed = self.negotiate(minor, offered)?;
        let bits = claimed.bits();
        let out = InitOut {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: init.max_readahead,
            // Split of a 64-bit set into its two 32-bit halves.
            flags: bits as u32,
            flags2: (bits >> 32) as u32,
            max_background: MAX_BACKGROUND,
            congestion_threshold: CONGESTION_THRESHOLD,
            max_write: self.config().max_write(),
            time_gran: 1,
            max_pages: self.config().max_pages,
            map_alignment: if claimed.contains(InitFlags::MAP_ALIGNMENT) {
                super::dax_ops::map_alignment_shift()
            } else {
                0
            },
            ..InitOut::default()
        };
        self.set_session(Session { initialized: true, minor, offered, flags: Some(claimed) });
        Ok(Reply::of(&out))
    }

    /// The flags claimed for a guest of protocol `minor` that offered `offered`; the file
    /// system takes its share of the decision (and may refuse the guest).
    fn negotiate(&self, minor: u32, mut offered: InitFlags) -> Result<InitFlags, Errno> {
        if minor < EXTENSIONS_MINOR {
            // Groups travel only as a 7.38 request extension.
            offered -= InitFlags::CREATE_SUPP_GROUP;
        }
        if minor < SECURITY_CTX_MINOR {
            // 7.36 and 7.37 send security contexts as a creation's last argument
            // (`Request::trailing_security`); before them there are none.
            offered -= InitFlags::SECURITY_CTX;
        }
        let wanted = self.fs.init(offered)?;
        let mut ours = SERVER_FLAGS;
        if self.window.is_some() {
            // SETUPMAPPING's offsets and lengths are checked against the page (`dax_ops`).
            ours |= InitFlags::MAP_ALIGNMENT;
        }
        Ok(offered & (ours | (wanted & FS_FLAGS)))
    }

    /// Takes the security context of a creation whose arguments `req` was read for, when this
    /// session's creations carry it as a last argument (SECURITY_CTX claimed for a guest older
    /// than 7.38) instead of as an extension.
    pub(super) fn creation_security(&self, req: &mut Request<'_>) -> Result<(), Errno> {
        let s = self.session();
        if s.minor < EXTENSIONS_MINOR
            && s.flags.is_some_and(|f| f.contains(InitFlags::SECURITY_CTX))
        {
            req.trailing_security()?;
        }
        Ok(())
    }

    /// What INIT negotiated, for a migration to carry; `None` before INIT.
    pub fn session_state(&self) -> Option<SessionState> {
        let s = self.session();
        let claimed = s.flags.filter(|_| s.initialized)?;
        Some(SessionState { minor: s.minor, offered: s.offered.bits(), claimed: claimed.bits() })
    }

    /// Resumes a session another server negotiated (a migration's destination: the guest does
    /// not send INIT again). The file system negotiates again from what the guest offered; if
    /// that does not claim exactly what the guest was told, the session is refused (this
    /// server's options differ from the source's) and nothing changes.
    pub fn restore_session(&self, state: SessionState) -> Result<(), SessionMismatch> {
        if !(MIN_KERNEL_MINOR_VERSION..=KERNEL_MINOR_VERSION).contains(&state.minor) {
            return Err(SessionMismatch::Minor(state.minor));
        }
        let offered = InitFlags::from_bits_retain(state.offered);
        let claimed = self.negotiate(state.minor, offered).map_err(SessionMismatch::Refused)?;
        if claimed.bits() != state.claimed {
            return Err(SessionMismatch::Flags { there: state.claimed, here: claimed.bits() });
        }
        self.set_session(Session {
            initialized: true,
            minor: state.minor,
            offered,
            flags: Some(claimed),
        });
        Ok(())
    }
}

/// A FUSE session as INIT left it: the protocol minor, the flags the guest offered and those it
/// was told are claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// Protocol minor in use.
    pub minor: u32,
    /// INIT flags the guest offered (both halves).
    pub offered: u64,
    /// INIT flags claimed in the reply.
    pub claimed: u64,
}

/// Why a session cannot be resumed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionMismatch {
    /// A protocol minor this server does not speak.
    #[error("FUSE protocol 7.{0} is not spoken here")]
    Minor(u32),
    /// The file system refuses the guest (a capability required here that it lacks).
    #[error("the file system refuses the guest's INIT flags: {0}")]
    Refused(Errno),
    /// These options claim other flags than the source did.
    #[error("the source claimed INIT flags {there:#x}, these options claim {here:#x}")]
    Flags {
        /// Claimed by the source.
        there: u64,
        /// Claimed here.
        here: u64,
    },
}
